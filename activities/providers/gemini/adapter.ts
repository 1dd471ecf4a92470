import { createHash } from 'node:crypto';
import { ApiError, GoogleGenAI, type Content, type GenerateContentConfig, type GenerateContentResponse, type Part } from '@google/genai';
import { ClassifiedError } from '../../../lib/shared/errors';
import { connectionErrorMessage } from '../../../lib/shared/unreachable';
import { capabilities, supportsParam, type Backend } from '../models';
import { checkEditInputs, checkInputCount, nextMidnight, sniffImageType } from '../shared';

export { nextMidnight };
import type {
  ChatTurnRequest,
  ChatTurnResult,
  EditRequest,
  ImageEditProvider,
  ImageRequest,
  ImageResult,
  JsonValue,
  ProviderImage,
} from '../provider';

// Gemini image models through @google/genai (`models.generateContent`). The SDK's retries stay off
// (no `retryOptions`): Temporal owns every retry, honouring RetryInfo's delay from the error body.
//
// Safety outcomes come back as HTTP 200 without an image (a finish reason or
// `promptFeedback.blockReason`): they are final ("blocked"). `IMAGE_OTHER` ("stopped for a reason not
// otherwise specified") and `NO_IMAGE` are not safety outcomes: asked again once here, then retryable
// (Temporal's attempt limit bounds them). An answer with text and no image is asked again once here,
// then fails as an invalid request. Models that allow it are asked for `responseModalities:
// ['IMAGE']` alone, so they do not chat instead of drawing. A request whose inline images would
// pass the model's request-size limit sends the largest input images through the Files API instead
// (`fileData`), uploaded once per image per adapter (files live 48 hours; kept here for 47).
// Images the model produced stay inline: Gemini 3 checks their thought signatures. Interim "thought" images
// (`part.thought`) are skipped. Multi-turn rows are a real conversation (`chatTurn`): the history is
// the `contents` array with every part (thought signatures included) kept verbatim; Gemini 3 models
// reject a later turn whose earlier model parts lost their signatures.

export const DEFAULT_BASE_URL = 'https://generativelanguage.googleapis.com';
const REQUEST_TIMEOUT_MS = 180_000;

export interface GeminiProviderOptions {
  apiKey: string;
  /** Host root without the API version (the SDK adds `/v1beta/models/{model}:generateContent`). */
  baseURL?: string | undefined;
  /** Per-attempt timeout (default 180 s). */
  timeoutMs?: number;
}

/** Finish reasons that mean the answer was withheld for safety or policy: final (direct and batch answers). */
export const BLOCKING_FINISH_REASONS = new Set([
  'SAFETY',
  'PROHIBITED_CONTENT',
  'BLOCKLIST',
  'SPII',
  'RECITATION',
  'IMAGE_SAFETY',
  'IMAGE_PROHIBITED_CONTENT',
  'IMAGE_RECITATION',
]);

/** No image for a reason that is not a refusal: worth another attempt (bounded). */
const RETRYABLE_NO_IMAGE = new Set(['IMAGE_OTHER', 'NO_IMAGE']);

/** "37s", "1.5s", "250ms" (google.protobuf.Duration in JSON) in ms. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s)$/.exec(value.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * (m[2] === 'ms' ? 1 : 1000));
}

interface GoogleErrorBody {
  code?: number;
  message?: string;
  status?: string;
  details?: { '@type'?: string; retryDelay?: string; violations?: { quotaId?: string; quotaMetric?: string }[] }[];
}

function parseErrorBody(message: string): GoogleErrorBody | undefined {
  try {
    const parsed = JSON.parse(message) as { error?: GoogleErrorBody } | GoogleErrorBody[];
    const body = Array.isArray(parsed) ? (parsed[0] as { error?: GoogleErrorBody } | undefined)?.error : parsed.error;
    return body && typeof body === 'object' ? body : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Sorts an SDK error (or fetch failure) into a row failure class. `endpoint`: the base URL the client
 * calls, named (host only) in a connection error.
 */
export function classifyGeminiError(err: unknown, signal?: AbortSignal, endpoint?: string): ClassifiedError {
  if (err instanceof ClassifiedError) return err;
  if (err instanceof ApiError) {
    const status = err.status;
    const body = parseErrorBody(err.message);
    const message = body ? `${status} ${body.status ?? ''}: ${body.message ?? ''}`.replace(/ :/, ':') : `${status} ${err.message}`;
    const details = body?.details ?? [];
    const retryDelay = details.find((d) => d['@type']?.endsWith('google.rpc.RetryInfo'))?.retryDelay;
    const wait = parseDuration(retryDelay);
    const quotaIds = details
      .filter((d) => d['@type']?.endsWith('google.rpc.QuotaFailure'))
      .flatMap((d) => d.violations ?? [])
      .map((v) => `${v.quotaId ?? ''} ${v.quotaMetric ?? ''}`);
    if (status === 429 && quotaIds.some((id) => /per[_-]?day/i.test(id))) {
      // A daily quota: retrying before it resets (midnight Pacific) only burns attempts.
      return new ClassifiedError('quotaExhausted', message, { status, quotaResetAt: nextMidnight('America/Los_Angeles') });
    }
    if (status === 408 || status === 429 || status >= 500) {
      return new ClassifiedError('retryable', message, { status, ...(wait !== undefined ? { retryAfterMs: wait } : {}) });
    }
    return new ClassifiedError('invalidRequest', message, { status });
  }
  const e = err as Error | undefined;
  if (e?.name === 'AbortError' || e?.name === 'TimeoutError') {
    return new ClassifiedError('retryable', signal?.aborted ? 'request cancelled' : 'request timed out');
  }
  if (e instanceof SyntaxError) return new ClassifiedError('retryable', `malformed response: ${e.message}`);
  if (e instanceof TypeError && /fetch failed|network|socket/i.test(e.message)) {
    return new ClassifiedError('retryable', connectionErrorMessage(endpoint, e));
  }
  return new ClassifiedError('retryable', `unexpected error: ${e?.message ?? String(err)}`);
}

function usageOf(response: GenerateContentResponse): Record<string, number> | undefined {
  const m = response.usageMetadata;
  if (!m) return undefined;
  const byModality = (modality: string) =>
    m.candidatesTokensDetails?.filter((d) => String(d.modality) === modality).reduce((sum, d) => sum + (d.tokenCount ?? 0), 0);
  const usage: Record<string, number | undefined> = {
    inputTokens: m.promptTokenCount,
    outputTokens: m.candidatesTokenCount,
    totalTokens: m.totalTokenCount,
    thoughtsTokens: m.thoughtsTokenCount,
    ...(m.candidatesTokensDetails?.length ? { outputImageTokens: byModality('IMAGE'), outputTextTokens: byModality('TEXT') } : {}),
  };
  const defined = Object.entries(usage).filter((e): e is [string, number] => typeof e[1] === 'number');
  return defined.length ? Object.fromEntries(defined) : undefined;
}

function addUsage(total: Record<string, number>, usage: Record<string, number> | undefined): void {
  for (const [k, v] of Object.entries(usage ?? {})) total[k] = (total[k] ?? 0) + v;
}

/** JSON-safe copy (drops undefined fields the SDK leaves on its objects). */
function plain<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function imagePart(image: ProviderImage): Part {
  return { inlineData: { mimeType: image.mimeType, data: image.data.toString('base64') } };
}

interface Answer {
  images: ProviderImage[];
  /** The model turn as returned (for the conversation history). */
  content: Content;
  requestId?: string;
}

/** Reads one answer: images (thoughts skipped), or a blocked failure, or no image (and whether that is retryable). */
function readAnswer(response: GenerateContentResponse): Answer | { noImage: string; retryable: boolean } {
  const requestId = response.responseId;
  const details = requestId ? { requestId } : {};
  const blockReason = response.promptFeedback?.blockReason;
  if (blockReason && String(blockReason) !== 'BLOCKED_REASON_UNSPECIFIED') {
    const why = response.promptFeedback?.blockReasonMessage;
    throw new ClassifiedError('blocked', `the prompt was blocked: ${blockReason}${why ? ` (${why})` : ''}`, details);
  }
  const candidate = response.candidates?.[0];
  const finishReason = candidate?.finishReason ? String(candidate.finishReason) : undefined;
  if (finishReason && BLOCKING_FINISH_REASONS.has(finishReason)) {
    throw new ClassifiedError(
      'blocked',
      `the answer was withheld: ${finishReason}${candidate?.finishMessage ? ` (${candidate.finishMessage})` : ''}`,
      details,
    );
  }
  const parts = candidate?.content?.parts ?? [];
  const images: ProviderImage[] = [];
  for (const part of parts) {
    if (part.thought || !part.inlineData?.data) continue;
    const data = Buffer.from(part.inlineData.data, 'base64');
    images.push({ data, mimeType: sniffImageType(data, part.inlineData.mimeType ?? 'image/png') });
  }
  if (images.length === 0) {
    const text = parts
      .filter((p) => !p.thought && p.text)
      .map((p) => p.text)
      .join(' ')
      .trim();
    const why =
      finishReason && finishReason !== 'STOP'
        ? `finish reason ${finishReason}${candidate?.finishMessage ? ` (${candidate.finishMessage})` : ''}`
        : text
          ? `the model answered: "${text.slice(0, 200)}"`
          : 'empty answer';
    return { noImage: why, retryable: !!finishReason && RETRYABLE_NO_IMAGE.has(finishReason) };
  }
  return { images, content: plain({ role: 'model', ...candidate!.content, parts: plain(parts) }), ...(requestId ? { requestId } : {}) };
}

/** The JSON body's size, roughly: inline data is base64 (4/3 of the bytes), text as is. */
export function requestBytes(contents: Content[]): number {
  return contents.reduce(
    (sum, c) =>
      sum +
      (c.parts ?? []).reduce(
        (n, p) => n + (p.inlineData?.data?.length ?? 0) + (p.text?.length ?? 0) + (p.thoughtSignature?.length ?? 0) + 64,
        0,
      ),
    0,
  );
}

/** A request over the model's inline limit fails the row before any call (the API answers 400). */
function checkRequestSize(backend: GoogleBackend, model: string, contents: Content[]): void {
  const limit = capabilities(backend, model).maxRequestBytes;
  const size = requestBytes(contents);
  if (limit !== undefined && size > limit) {
    throw new ClassifiedError(
      'inputError',
      `the request would be ${(size / 1048576).toFixed(1)} MB with its images inline; ${model} takes at most ${limit / 1048576} MB per request (use fewer or smaller input images)`,
    );
  }
}

export function createGeminiProvider(options: GeminiProviderOptions): ImageEditProvider {
  const endpoint = options.baseURL || DEFAULT_BASE_URL;
  const ai = new GoogleGenAI({
    apiKey: options.apiKey,
    vertexai: false,
    // Always given, so the SDK never falls back to GOOGLE_GEMINI_BASE_URL from the environment.
    httpOptions: { baseUrl: endpoint, timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS },
  });
  return googleGenAIProvider('gemini', ai, { secrets: [options.apiKey], filesApi: true, endpoint });
}

/** The backends served through @google/genai: the Gemini API and Vertex AI (vertex/adapter.ts). */
export type GoogleBackend = Extract<Backend, 'gemini' | 'vertex'>;

/**
 * The adapter for a @google/genai client, Gemini API or Vertex AI: the same generateContent body,
 * answers, finish reasons and errors. `filesApi`: inputs over the inline limit go through the Files
 * API (Gemini API only; the SDK refuses files.upload on Vertex, so there such rows fail as input
 * errors).
 */
export function googleGenAIProvider(
  backend: GoogleBackend,
  ai: GoogleGenAI,
  options: { secrets: readonly string[]; filesApi: boolean; /** The base URL the client calls (for messages). */ endpoint: string },
): ImageEditProvider {
  // Files API uploads by image content (sha256), reused while they live.
  const uploaded = new Map<string, { uri: string; mimeType: string; at: number }>();
  const FILE_TTL_MS = 47 * 3600_000;

  async function uploadImage(data: string, mimeType: string, signal?: AbortSignal): Promise<{ fileUri: string; mimeType: string }> {
    const key = createHash('sha256').update(data).digest('hex');
    const hit = uploaded.get(key);
    if (hit && Date.now() - hit.at < FILE_TTL_MS) return { fileUri: hit.uri, mimeType: hit.mimeType };
    let file;
    try {
      file = await ai.files.upload({
        file: new Blob([Buffer.from(data, 'base64')], { type: mimeType }),
        config: { mimeType, ...(signal ? { abortSignal: signal } : {}) },
      });
    } catch (err) {
      throw classifyGeminiError(err, signal, options.endpoint);
    }
    if (!file.uri) throw new ClassifiedError('retryable', 'the Files API answered without a file uri');
    uploaded.set(key, { uri: file.uri, mimeType: file.mimeType ?? mimeType, at: Date.now() });
    return { fileUri: file.uri, mimeType: file.mimeType ?? mimeType };
  }

  /**
   * The contents to send: as given when they fit the model's inline limit, else with the largest
   * user images moved to the Files API until they fit (a row that still does not fit fails).
   */
  async function fitRequest(request: ImageRequest, contents: Content[]): Promise<Content[]> {
    const limit = capabilities(backend, request.model).maxRequestBytes;
    if (!options.filesApi || limit === undefined || requestBytes(contents) <= limit) return contents;
    const fitted = plain(contents);
    const inline = fitted
      .filter((c) => c.role === 'user')
      .flatMap((c) => c.parts ?? [])
      .filter((p) => p.inlineData?.data && !p.thought)
      .sort((a, b) => b.inlineData!.data!.length - a.inlineData!.data!.length);
    for (const part of inline) {
      if (requestBytes(fitted) <= limit) break;
      const { data, mimeType } = part.inlineData!;
      part.fileData = await uploadImage(data!, mimeType ?? 'image/png', request.signal);
      delete part.inlineData;
    }
    return fitted;
  }

  function configFor(request: ImageRequest): GenerateContentConfig {
    const caps = capabilities(backend, request.model);
    const p = request.params;
    const imageConfig = {
      ...(p.aspectRatio && supportsParam(caps, 'aspectRatio') ? { aspectRatio: p.aspectRatio } : {}),
      ...(p.imageSize && supportsParam(caps, 'imageSize') ? { imageSize: p.imageSize } : {}),
    };
    return {
      responseModalities: caps.imageOnlyResponse ? ['IMAGE'] : ['TEXT', 'IMAGE'],
      ...(Object.keys(imageConfig).length ? { imageConfig } : {}),
      ...(request.signal ? { abortSignal: request.signal } : {}),
    };
  }

  /** One generateContent call, asked once more when the answer holds text but no image. */
  async function ask(request: ImageRequest, contents: Content[]): Promise<Answer & { usage: Record<string, number> }> {
    const usage: Record<string, number> = {};
    let lastWhy = '';
    let retryable = false;
    checkRequestSize(backend, request.model, contents);
    for (let attempt = 0; attempt < 2; attempt++) {
      let response: GenerateContentResponse;
      try {
        response = await ai.models.generateContent({ model: request.model, contents, config: configFor(request) });
      } catch (err) {
        throw classifyGeminiError(err, request.signal, options.endpoint);
      }
      addUsage(usage, usageOf(response));
      const answer = readAnswer(response);
      if ('images' in answer) return { ...answer, usage };
      lastWhy = answer.noImage;
      retryable = answer.retryable;
    }
    throw new ClassifiedError(retryable ? 'retryable' : 'invalidRequest', `no image in the answer (asked twice): ${lastWhy}`);
  }

  /** `numImages` answers (one image each), results in order, usage summed. */
  async function images(request: ImageRequest, parts: Part[]): Promise<ImageResult> {
    const contents = await fitRequest(request, [{ role: 'user', parts }]);
    const out: ProviderImage[] = [];
    const usage: Record<string, number> = {};
    let requestId: string | undefined;
    for (let k = 0; k < Math.max(1, request.numImages); k++) {
      const answer = await ask(request, contents);
      out.push(...answer.images.slice(0, request.numImages > 1 ? 1 : undefined));
      addUsage(usage, answer.usage);
      requestId ??= answer.requestId;
    }
    return { images: out, ...(requestId ? { requestId } : {}), ...(Object.keys(usage).length ? { usage } : {}) };
  }

  return {
    backend,
    secrets: options.secrets,
    async edit(request: EditRequest): Promise<ImageResult> {
      checkEditInputs(backend, request);
      return images(request, [{ text: request.prompt }, ...request.images.map(imagePart)]);
    },
    async generate(request: ImageRequest): Promise<ImageResult> {
      return images(request, [{ text: request.prompt }]);
    },
    async chatTurn(request: ChatTurnRequest): Promise<ChatTurnResult> {
      checkInputCount(backend, request);
      const history = (request.history ?? []) as unknown as Content[];
      const userTurn: Content = { role: 'user', parts: [{ text: request.prompt }, ...request.images.map(imagePart)] };
      // The history keeps what was sent: images moved to the Files API are not sent (or uploaded) again.
      const sent = await fitRequest(request, [...history, userTurn]);
      const answer = await ask(request, sent);
      return {
        images: answer.images,
        history: [...sent, answer.content] as unknown as JsonValue[],
        ...(answer.requestId ? { requestId: answer.requestId } : {}),
        ...(Object.keys(answer.usage).length ? { usage: answer.usage } : {}),
      };
    },
  };
}
