import type { ApiBackend, ModelParams } from '../../lib/shared/types';

// One interface for every model backend. An adapter turns a request into the provider's wire format,
// and every failure into a ClassifiedError (lib/shared/errors.ts) so retry decisions are made the same way
// for all providers. Adapters never read the environment: keys and base URLs are given to their
// factory by the worker (workers/index.ts), and must never appear in what they return or throw.

export interface ProviderImage {
  data: Buffer;
  mimeType: string;
}

/** JSON-serialisable value (provider state persisted between turns or attempts). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export interface ImageRequest {
  model: string;
  prompt: string;
  params: ModelParams;
  /** Images wanted from this one call. */
  numImages: number;
  signal?: AbortSignal;
  /**
   * Records progress for a long call (ModelScope's submit-then-poll): the details survive a worker
   * crash and come back as `previousHeartbeat` on the next attempt, so a submitted task is polled
   * again instead of being submitted (and billed) twice.
   */
  heartbeat?: (details: JsonValue) => void;
  previousHeartbeat?: JsonValue;
}

export interface EditRequest extends ImageRequest {
  /** Normalised PNG inputs, in dataset order. */
  images: ProviderImage[];
  /** PNG mask for the first image (transparent = area to edit), when the dataset gives one. */
  mask?: ProviderImage;
}

export interface ImageResult {
  images: ProviderImage[];
  requestId?: string;
  /** Token counts as the provider reports them: inputTokens, outputTokens, totalTokens, ... */
  usage?: Record<string, number>;
  /** Other facts worth recording per row (e.g. ModelScope's remaining-quota headers). */
  info?: Record<string, string | number>;
}

export interface ChatTurnRequest extends ImageRequest {
  /** Images sent with this turn: the row's inputs on the first turn, none afterwards. */
  images: ProviderImage[];
  /** The conversation so far as the adapter returned it last turn (undefined on the first turn). */
  history?: JsonValue[];
}

export interface ChatTurnResult extends ImageResult {
  /** The conversation including this turn, thought signatures verbatim; persisted by the caller. */
  history: JsonValue[];
}

/**
 * An adapter. What a model takes (input limits, most input images) is not asked of it: the table
 * answers that for every backend (`capabilities` in models.ts), so no adapter re-implements it.
 */
export interface ImageEditProvider {
  readonly backend: ApiBackend;
  /** Values that must never appear in anything recorded (keys). */
  readonly secrets: readonly string[];
  /**
   * Most calls the account runs at once, where the provider caps it (fal: 2 for a new account): the
   * worker serves its queue with no more activity slots than this, so rows beyond it wait in
   * Temporal's queue (no attempt clock running) instead of holding slots while the provider queues them.
   */
  readonly maxConcurrentCalls?: number;
  edit(request: EditRequest): Promise<ImageResult>;
  /** Text-to-image, for rows without input images. */
  generate(request: ImageRequest): Promise<ImageResult>;
  /** Multi-turn rows as a real conversation (Gemini). Absent: each turn is an edit of the last output. */
  chatTurn?(request: ChatTurnRequest): Promise<ChatTurnResult>;
}
