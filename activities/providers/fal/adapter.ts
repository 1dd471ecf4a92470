import { setTimeout as sleep } from 'node:timers/promises';
import { ClassifiedError } from '../../../lib/shared/errors';
import { capabilities, supportsParam, type ModelCapabilities } from '../models';
import { checkEditInputs, requestFingerprint, resultImage, retryAfterMs } from '../shared';
import type { EditRequest, ImageEditProvider, ImageRequest, ImageResult, JsonValue, ProviderImage } from '../provider';
import { connectionErrorMessage } from '../../../lib/shared/unreachable';

// fal.ai through its queue API with plain fetch (fal.ai/docs/api-reference/inference-api,
// documentation/model-apis/inference/queue):
//   POST {queue}/{model_id} (Authorization: Key <FAL_KEY>, JSON input) -> {request_id, status_url,
//     response_url, cancel_url, status: IN_QUEUE}
//   GET status_url -> 202 IN_QUEUE / IN_PROGRESS, 200 COMPLETED
//   GET response_url -> the model's output ({images: [{url, content_type, width, height}], ...}),
//     or the request's error ({detail: [{loc, msg, type}]}, X-Fal-Retryable).
// The status and result URLs are taken from the submit answer, never built here: fal's docs say so,
// because they hold only the owner and app of the model id, not its endpoint path.
//
// Why not @fal-ai/client: it works on Node 20, but what it adds is upload-to-fal-storage (not wanted:
// inputs go as data URIs, which fal accepts) and `subscribe`, which hides the request id between
// submit and result; resuming a paid request after a crash needs that id, and three plain requests
// are easy to hold to the wire format in a stand-in. So: no new dependency.
//
// A submitted request is paid for, so its id and URLs are heartbeated right after submit and on every
// poll: when the activity is retried after a worker crash or a timeout, `previousHeartbeat` brings
// them back and the same request is polled instead of submitted (and paid) twice. The heartbeat
// carries a fingerprint of the request, so another call (the next turn of a multi-turn row) never
// picks up an earlier call's request. Output images are downloaded from their URLs without the key
// (fal's CDN needs none; the key is sent only to the queue).

const DEFAULT_BASE_URL = 'https://queue.fal.run';

export interface FalProviderOptions {
  apiKey: string;
  /** Default https://queue.fal.run. */
  baseURL?: string | undefined;
  /** Time between status polls (default 2 s). */
  pollIntervalMs?: number;
  /** Longest one attempt waits for its request before failing as retryable (default 10 min). */
  maxWaitMs?: number;
  /** Timeout of each HTTP request (default 60 s). */
  requestTimeoutMs?: number;
  /**
   * The account's concurrency limit (FAL_CONCURRENCY; default 2, what fal gives a new account, up
   * to 40 with credit purchases: fal.ai/docs/documentation/model-apis/concurrency-limits). Requests
   * past it wait IN_QUEUE at fal while their activities poll and their attempt clocks run (10
   * minutes each), so a worker runs no more rows than this at once.
   */
  concurrency?: number;
}

/** A new fal account's concurrency limit (fal.ai/docs/documentation/model-apis/concurrency-limits). */
export const FAL_DEFAULT_CONCURRENCY = 2;

interface FalRequestRef {
  id: string;
  statusUrl: string;
  responseUrl: string;
}

/** What the adapter heartbeats: a request fingerprint and the fal requests submitted for it, in order. */
interface FalProgress {
  fal: { key: string; requests: FalRequestRef[] };
}

function previousRequests(previous: JsonValue | undefined, key: string): FalRequestRef[] {
  const progress = (previous as unknown as Partial<FalProgress> | null | undefined)?.fal;
  if (!progress || progress.key !== key || !Array.isArray(progress.requests)) return [];
  return progress.requests.filter(
    (r): r is FalRequestRef => !!r && typeof r.id === 'string' && typeof r.statusUrl === 'string' && typeof r.responseUrl === 'string',
  );
}

interface FalErrorItem {
  loc?: unknown[];
  msg?: string;
  type?: string;
}

/**
 * Request (infrastructure) error types that are the caller's request itself, not fal's machinery:
 * final. Every other type (timeouts, runner and connection failures, internal errors: the
 * request-errors reference) is transient: retried by the activity's policy.
 */
const FINAL_REQUEST_ERROR_TYPES = new Set(['bad_request']);

/**
 * `detail` is a string (auth, routing, request errors, which add `error_type`) or a list of typed
 * model errors (fal.ai/docs/documentation/model-apis/errors, …/request-errors).
 */
function describeError(body: unknown, fallback: string): { message: string; types: string[] } {
  const detail = (body as { detail?: unknown } | undefined)?.detail;
  if (typeof detail === 'string') return { message: detail, types: [] };
  if (Array.isArray(detail)) {
    const items = detail as FalErrorItem[];
    const message = items
      .map((e) => `${e.msg ?? e.type ?? 'error'}${Array.isArray(e.loc) && e.loc.length ? ` (${e.loc.join('.')})` : ''}`)
      .join('; ');
    return { message: message || fallback, types: items.map((e) => String(e.type ?? '')) };
  }
  return { message: fallback, types: [] };
}

async function readJson(response: Response): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text) as unknown;
  } catch {
    if (response.ok) throw new ClassifiedError('retryable', `malformed response from fal.ai: ${text.slice(0, 120)}`);
    return { detail: text.slice(0, 300) };
  }
}

/** The model's input fields for this row (names from each model's fal.ai schema; see models.ts). */
export function falInput(request: ImageRequest, images: ProviderImage[], caps: ModelCapabilities): Record<string, unknown> {
  const p = request.params;
  const has = (name: Parameters<typeof supportsParam>[1]) => p[name] !== undefined && p[name] !== '' && supportsParam(caps, name);
  const uris = images.map((image) => `data:${image.mimeType};base64,${image.data.toString('base64')}`);
  return {
    prompt: request.prompt,
    // One-image models take `image_url`, multi-image ones `image_urls` (their schemas).
    ...(uris.length ? (caps.maxInputImages > 1 ? { image_urls: uris } : { image_url: uris[0] }) : {}),
    ...(request.numImages > 1 ? { num_images: Math.min(request.numImages, caps.maxImagesPerCall) } : {}),
    ...(has('aspectRatio') ? { aspect_ratio: p.aspectRatio } : {}),
    ...(has('outputFormat') ? { output_format: p.outputFormat } : {}),
    ...(has('seed') ? { seed: p.seed } : {}),
    ...(has('guidanceScale') ? { guidance_scale: p.guidanceScale } : {}),
    ...(has('numInferenceSteps') ? { num_inference_steps: p.numInferenceSteps } : {}),
    ...(has('negativePrompt') ? { negative_prompt: p.negativePrompt } : {}),
  };
}

export function createFalProvider(options: FalProviderOptions): ImageEditProvider {
  const base = (options.baseURL || DEFAULT_BASE_URL).replace(/\/+$/, '');
  const pollIntervalMs = options.pollIntervalMs ?? 2000;
  const maxWaitMs = options.maxWaitMs ?? 600_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 60_000;
  const auth = { authorization: `Key ${options.apiKey}` };

  async function http(url: string, init: RequestInit, signal: AbortSignal | undefined): Promise<Response> {
    const timeout = AbortSignal.timeout(requestTimeoutMs);
    try {
      return await fetch(url, { ...init, signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
    } catch (err) {
      if (signal?.aborted) throw new ClassifiedError('retryable', 'request cancelled');
      if (timeout.aborted) throw new ClassifiedError('retryable', `request timed out after ${requestTimeoutMs} ms`);
      throw new ClassifiedError('retryable', connectionErrorMessage(url, err));
    }
  }

  /** A non-2xx answer (or a failed request's result) as a failure class. */
  function classifyHttp(response: Response, body: unknown, what: string, requestId?: string): ClassifiedError {
    const status = response.status;
    const { message: why, types } = describeError(body, response.statusText);
    // A request error names its class in the header and the body (`error_type`).
    const errorType = response.headers.get('x-fal-error-type') ?? (body as { error_type?: unknown } | undefined)?.error_type;
    const typed = typeof errorType === 'string' && errorType ? errorType : undefined;
    const message = `${status} ${what}: ${why}${typed ? ` (${typed})` : ''}`;
    const details = { status, ...(requestId ? { requestId } : {}) };
    if (types.includes('content_policy_violation')) return new ClassifiedError('blocked', message, details);
    // An account out of credit: retrying before a top-up only burns attempts.
    if (/exhausted balance|top up your balance|insufficient (?:balance|credits)/i.test(why))
      return new ClassifiedError('quotaExhausted', message, details);
    if (typed && FINAL_REQUEST_ERROR_TYPES.has(typed)) return new ClassifiedError('invalidRequest', message, details);
    const retryable = response.headers.get('x-fal-retryable');
    // fal says the request cannot succeed by being sent again (a model error of this input).
    if (retryable === 'false' && status !== 429 && !typed) return new ClassifiedError('invalidRequest', message, details);
    if (status === 429 || status === 408 || status === 499 || status >= 500 || retryable === 'true' || typed) {
      const wait = retryAfterMs(response.headers);
      return new ClassifiedError('retryable', message, { ...details, ...(wait !== undefined ? { retryAfterMs: wait } : {}) });
    }
    return new ClassifiedError('invalidRequest', message, details);
  }

  async function submit(request: ImageRequest, images: ProviderImage[]): Promise<FalRequestRef> {
    const caps = capabilities('fal', request.model);
    // The model id is a path (owner/app[/endpoint]); each segment is escaped on its own.
    const path = request.model.split('/').map(encodeURIComponent).join('/');
    const response = await http(
      `${base}/${path}`,
      {
        method: 'POST',
        // Retries live in the activity's policy alone: fal's queue would otherwise retry a failing
        // request up to 10 times itself, and each of Atelier's attempts would multiply those.
        headers: { ...auth, 'content-type': 'application/json', 'x-fal-no-retry': '1' },
        body: JSON.stringify(falInput(request, images, caps)),
      },
      request.signal,
    );
    const json = await readJson(response);
    if (!response.ok) throw classifyHttp(response, json, 'submitting the request failed');
    const answer = json as { request_id?: unknown; status_url?: unknown; response_url?: unknown };
    if (typeof answer.request_id !== 'string' || typeof answer.status_url !== 'string' || typeof answer.response_url !== 'string') {
      throw new ClassifiedError('retryable', 'malformed response from fal.ai: no request_id, status_url or response_url');
    }
    return { id: answer.request_id, statusUrl: answer.status_url, responseUrl: answer.response_url };
  }

  /**
   * Polls until the request completes, then reads its result: the output image URLs, or null when a
   * resumed request is gone or failed in a way a new request may not (submit afresh then).
   */
  async function waitFor(request: ImageRequest, ref: FalRequestRef, beat: () => void, resumed: boolean): Promise<string[] | null> {
    const deadline = Date.now() + maxWaitMs;
    let transientFailures = 0;
    for (;;) {
      beat();
      const response = await http(ref.statusUrl, { headers: auth }, request.signal);
      const json = await readJson(response).catch((err: unknown) => {
        if (++transientFailures > 5) throw err;
        return undefined;
      });
      if (json !== undefined) {
        if (!response.ok) {
          if (resumed && response.status === 404) return null;
          const failure = classifyHttp(response, json, `polling request ${ref.id} failed`, ref.id);
          // Polls cost nothing: ride out a few transient failures before giving up the attempt.
          if (failure.kind !== 'retryable' || ++transientFailures > 5) throw failure;
        } else {
          transientFailures = 0;
          if ((json as { status?: string }).status === 'COMPLETED') return result(request, ref, resumed);
        }
      }
      if (Date.now() + pollIntervalMs > deadline) {
        // The heartbeat keeps the request: the next attempt polls it instead of resubmitting.
        throw new ClassifiedError('retryable', `request ${ref.id} still running after ${Math.round(maxWaitMs / 1000)} s`, {
          requestId: ref.id,
        });
      }
      try {
        await sleep(pollIntervalMs, undefined, request.signal ? { signal: request.signal } : {});
      } catch {
        throw new ClassifiedError('retryable', 'request cancelled');
      }
    }
  }

  async function result(request: ImageRequest, ref: FalRequestRef, resumed: boolean): Promise<string[] | null> {
    const response = await http(ref.responseUrl, { headers: auth }, request.signal);
    const json = await readJson(response);
    if (!response.ok) {
      const failure = classifyHttp(response, json, `request ${ref.id} failed`, ref.id);
      // A resumed request that failed for a passing reason: a new request may succeed.
      if (resumed && failure.kind === 'retryable') return null;
      throw failure;
    }
    const images = (json as { images?: { url?: unknown }[] }).images;
    const urls = Array.isArray(images) ? images.map((i) => i?.url).filter((u): u is string => typeof u === 'string' && u.length > 0) : [];
    if (urls.length === 0) {
      // Safety-checked models answer with no image (or a black one) and has_nsfw_concepts.
      const nsfw = (json as { has_nsfw_concepts?: unknown }).has_nsfw_concepts;
      if (Array.isArray(nsfw) && nsfw.some(Boolean))
        throw new ClassifiedError('blocked', `request ${ref.id}: the output was withheld by the safety checker`, { requestId: ref.id });
      throw new ClassifiedError('retryable', `request ${ref.id} completed without an output image`, { requestId: ref.id });
    }
    return urls;
  }

  async function run(request: ImageRequest, images: ProviderImage[]): Promise<ImageResult> {
    const caps = capabilities('fal', request.model);
    const key = requestFingerprint(request, images);
    const previous = previousRequests(request.previousHeartbeat, key);
    const refs: FalRequestRef[] = [];
    const info: Record<string, string | number> = {};
    const out: ProviderImage[] = [];
    const beat = () =>
      request.heartbeat?.({ fal: { key, requests: refs.map((r) => ({ ...r })) } } satisfies FalProgress as unknown as JsonValue);
    const wanted = Math.max(1, request.numImages);
    // Up to maxImagesPerCall images per fal request (`num_images`); several requests above it.
    for (let k = 0; out.length < wanted; k++) {
      const perCall: ImageRequest = { ...request, numImages: Math.min(wanted - out.length, caps.maxImagesPerCall) };
      let urls: string[] | null = null;
      const earlier = previous[k];
      if (earlier) {
        refs[k] = earlier;
        urls = await waitFor(perCall, earlier, beat, true);
        if (urls) info.resumedRequests = (Number(info.resumedRequests) || 0) + 1;
      }
      if (!urls) {
        refs[k] = await submit(perCall, images);
        beat();
        urls = await waitFor(perCall, refs[k]!, beat, false);
      }
      for (const url of urls!.slice(0, wanted - out.length))
        out.push(await resultImage(url, request.signal, (u, signal) => http(u, {}, signal)));
      if (k > wanted) throw new ClassifiedError('retryable', 'fal.ai returned fewer images than asked for');
    }
    info.requestIds = refs.map((r) => r.id).join(',');
    return { images: out, requestId: refs[refs.length - 1]!.id, info };
  }

  return {
    backend: 'fal',
    secrets: [options.apiKey],
    maxConcurrentCalls: options.concurrency ?? FAL_DEFAULT_CONCURRENCY,
    async edit(request: EditRequest): Promise<ImageResult> {
      checkEditInputs('fal', request);
      return run(request, request.images);
    },
    async generate(request: ImageRequest): Promise<ImageResult> {
      return run(request, []);
    },
  };
}
