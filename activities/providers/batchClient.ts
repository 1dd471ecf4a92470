import type { BatchJobSpec, BatchStatus } from '../../lib/shared/batch';
import type { ClassifiedError } from '../../lib/shared/errors';
import { ErrorTypes } from '../../lib/shared/errorTypes';
import type { PlanRow } from '../../lib/run/plan';

// What activities/batch.ts needs from a provider's batch API; each provider with one implements it in
// its folder (<name>/batch.ts) and names it in its spec's `batch` capability.

/** Provider limits on one batch: requests per input file and its size, and the inline limit where requests may go inline. */
export interface BatchLimits {
  maxRequests: number;
  maxFileBytes: number;
  maxInlineBytes?: number;
}

export interface BatchClientDeps {
  apiKey: string;
  baseURL?: string | undefined;
}

export type LineOutcome =
  { ok: true; images: Buffer[]; requestId?: string; usage?: Record<string, number> } | { ok: false; errorType: string; error: string };

/** An input image as a line refers to it: the bytes, or a file the provider already holds. */
export type ImageRef = Buffer | { fileId: string };

export interface BatchClient {
  /**
   * Uploads an input image once per run's batch phase, content-addressed (rows and jobs sharing a
   * source image share the upload), so lines carry a file id instead of the image: absent where
   * lines carry the bytes. `label` names the upload (the run and phase), for whoever lists the files.
   */
  uploadImage?(png: Buffer, label: string): Promise<string>;
  /** Deletes uploaded input images (no job of their run still needs them); an unknown one is no error. */
  deleteFiles?(fileIds: string[]): Promise<void>;
  /** One request line (OpenAI) or request (Gemini) per call of the row. */
  requests(row: PlanRow, inputs: ImageRef[], mask: ImageRef | undefined, spec: BatchJobSpec): { key: string; body: unknown }[];
  /** The batch tagged with this job, looking back (newest first) no further than `since` (ms). */
  findTagged(spec: BatchJobSpec, since: number): Promise<string | undefined>;
  create(spec: BatchJobSpec, requests: { key: string; body: unknown }[], bytes: number): Promise<{ batchId: string; inputFileId?: string }>;
  status(batchId: string): Promise<BatchStatus>;
  /** Every answer the batch holds, keyed by request key. */
  results(batchId: string, each: (key: string, outcome: LineOutcome) => Promise<void>): Promise<void>;
  cancel(batchId: string): Promise<void>;
  classify(err: unknown): ClassifiedError;
}

/** A per-line error's class, from its HTTP status and the provider's error code. */
export function lineErrorType(status: number, code: string | undefined): string {
  if (code === 'moderation_blocked' || code === 'content_policy_violation') return ErrorTypes.blocked;
  if (status === 408 || status === 409 || status === 429 || status >= 500 || code === 'batch_expired') return ErrorTypes.retryable;
  return ErrorTypes.invalidRequest;
}
