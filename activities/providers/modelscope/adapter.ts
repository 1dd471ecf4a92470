import { setTimeout as sleep } from 'node:timers/promises';
import { ClassifiedError } from '../../../lib/shared/errors';
import { capabilities, supportsParam } from '../models';
import { checkEditInputs, nextMidnight, requestFingerprint, resultImage, retryAfterMs } from '../shared';
import type { EditRequest, ImageEditProvider, ImageRequest, ImageResult, JsonValue, ProviderImage } from '../provider';
import { connectionErrorMessage } from '../../../lib/shared/unreachable';

// ModelScope API-Inference (Qwen-Image-Edit and friends) with plain fetch: submit an async task
// (`POST /v1/images/generations` with `X-ModelScope-Async-Mode: true`), poll
// `GET /v1/tasks/{id}` (`X-ModelScope-Task-Type: image_generation`) until SUCCEED or FAILED within a
// wall-clock cap, then download `output_images[0]`.
//
// A submitted task is paid for (from the daily free quota), so the task id is heartbeated right after
// submit and on every poll: when the activity is retried after a crash or a timeout,
// `previousHeartbeat` brings the id back and the task is polled again instead of submitted twice.
// The heartbeat carries a fingerprint of the request, so a later call with another prompt or image
// (the next turn of a multi-turn row) never picks up an earlier call's task.

const DEFAULT_BASE_URL = 'https://api-inference.modelscope.cn';
const QUOTA_HEADERS = [
  'modelscope-ratelimit-requests-limit',
  'modelscope-ratelimit-requests-remaining',
  'modelscope-ratelimit-model-requests-limit',
  'modelscope-ratelimit-model-requests-remaining',
] as const;
/** Content-moderation wording in FAILED tasks and 4xx bodies (English and Chinese). */
const CONTENT_FILTER =
  /sensitive|inappropriate|unsafe|safety|nsfw|content (?:filter|policy|moderation|security)|data_inspection|违规|敏感|审核|不当/i;

export interface ModelScopeProviderOptions {
  apiKey: string;
  /** Default https://api-inference.modelscope.cn (a trailing /v1 is tolerated). */
  baseURL?: string | undefined;
  /** Time between polls (default 5 s; ModelScope suggests 3-5 s). */
  pollIntervalMs?: number;
  /** Longest one call waits for its task before failing as retryable (default 10 min). */
  maxWaitMs?: number;
  /** Timeout of each HTTP request (default 60 s). */
  requestTimeoutMs?: number;
}

/** What the adapter heartbeats: a request fingerprint and the task ids submitted for it, in order. */
interface ModelScopeProgress {
  modelscope: { key: string; taskIds: string[] };
}

function previousTaskIds(previous: JsonValue | undefined, key: string): string[] {
  const progress = (previous as unknown as Partial<ModelScopeProgress> | null | undefined)?.modelscope;
  if (!progress || progress.key !== key || !Array.isArray(progress.taskIds)) return [];
  return progress.taskIds.filter((id): id is string => typeof id === 'string' && id.length > 0);
}

interface ErrorLike {
  errors?: { message?: string; code?: string } | string;
  error?: { message?: string; code?: string } | string;
  message?: string;
}

function messageOf(body: unknown, fallback: string): string {
  const b = (body ?? {}) as ErrorLike;
  const pick = (v: ErrorLike['errors']) => (typeof v === 'string' ? v : v?.message);
  return pick(b.errors) ?? pick(b.error) ?? b.message ?? fallback;
}

async function readJson(response: Response): Promise<unknown> {
  const text = await response.text();
  try {
    return JSON.parse(text) as unknown;
  } catch {
    if (response.ok) throw new ClassifiedError('retryable', `malformed response from ModelScope: ${text.slice(0, 120)}`);
    return { message: text.slice(0, 300) };
  }
}

export function createModelScopeProvider(options: ModelScopeProviderOptions): ImageEditProvider {
  const base = (options.baseURL || DEFAULT_BASE_URL).replace(/\/+$/, '').replace(/\/v1$/, '');
  const pollIntervalMs = options.pollIntervalMs ?? 5000;
  const maxWaitMs = options.maxWaitMs ?? 600_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 60_000;

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

  function recordQuota(headers: Headers, info: Record<string, string | number>): void {
    for (const name of QUOTA_HEADERS) {
      const value = headers.get(name);
      if (value !== null && value !== '') info[name] = Number.isFinite(Number(value)) ? Number(value) : value;
    }
  }

  /** A non-2xx answer as a failure class. */
  function classifyHttp(response: Response, body: unknown, what: string): ClassifiedError {
    const status = response.status;
    const message = `${status} ${what}: ${messageOf(body, response.statusText)}`;
    // ModelScope puts the id inside `errors` (`{"errors":{"message","request_id"}}`); older answers at the top.
    const b = body as { request_id?: unknown; errors?: { request_id?: unknown } } | undefined;
    const inBody = [b?.errors?.request_id, b?.request_id].find((v): v is string => typeof v === 'string' && v !== '');
    const requestId = inBody ?? response.headers.get('x-request-id') ?? undefined;
    const details = { status, ...(requestId ? { requestId } : {}) };
    if (status === 429) {
      const remaining = [
        response.headers.get('modelscope-ratelimit-requests-remaining'),
        response.headers.get('modelscope-ratelimit-model-requests-remaining'),
      ];
      if (remaining.some((r) => r !== null && Number(r) <= 0)) {
        // The daily free quota is spent; it resets at midnight Beijing time.
        return new ClassifiedError('quotaExhausted', message, { ...details, quotaResetAt: nextMidnight('Asia/Shanghai') });
      }
      const wait = retryAfterMs(response.headers);
      return new ClassifiedError('retryable', message, { ...details, ...(wait !== undefined ? { retryAfterMs: wait } : {}) });
    }
    if (status === 408 || status >= 500) return new ClassifiedError('retryable', message, details);
    if (CONTENT_FILTER.test(message)) return new ClassifiedError('blocked', message, details);
    return new ClassifiedError('invalidRequest', message, details);
  }

  async function submit(request: ImageRequest, images: ProviderImage[], info: Record<string, string | number>): Promise<string> {
    const caps = capabilities('modelscope', request.model);
    const p = request.params;
    const body = {
      model: request.model,
      prompt: request.prompt,
      ...(images.length ? { image_url: images.map((image) => `data:${image.mimeType};base64,${image.data.toString('base64')}`) } : {}),
      ...(p.size && supportsParam(caps, 'size') ? { size: p.size } : {}),
      ...(p.seed !== undefined && supportsParam(caps, 'seed') ? { seed: p.seed } : {}),
    };
    const response = await http(
      `${base}/v1/images/generations`,
      {
        method: 'POST',
        headers: { authorization: `Bearer ${options.apiKey}`, 'content-type': 'application/json', 'x-modelscope-async-mode': 'true' },
        body: JSON.stringify(body),
      },
      request.signal,
    );
    recordQuota(response.headers, info);
    const json = await readJson(response);
    if (!response.ok) throw classifyHttp(response, json, 'submitting the task failed');
    const taskId = (json as { task_id?: unknown }).task_id;
    if (typeof taskId !== 'string' || !taskId) throw new ClassifiedError('retryable', 'malformed response from ModelScope: no task_id');
    return taskId;
  }

  /** Polls until the task ends. Returns the output URL, or null when a resumed task had failed. */
  async function poll(
    request: ImageRequest,
    taskId: string,
    beat: () => void,
    info: Record<string, string | number>,
    resumed: boolean,
  ): Promise<string | null> {
    const deadline = Date.now() + maxWaitMs;
    let transientFailures = 0;
    for (;;) {
      beat();
      const response = await http(
        `${base}/v1/tasks/${encodeURIComponent(taskId)}`,
        { headers: { authorization: `Bearer ${options.apiKey}`, 'x-modelscope-task-type': 'image_generation' } },
        request.signal,
      );
      recordQuota(response.headers, info);
      const json = await readJson(response).catch((err: unknown) => {
        if (++transientFailures > 5) throw err;
        return undefined;
      });
      if (json !== undefined) {
        if (!response.ok) {
          const failure = classifyHttp(response, json, `polling task ${taskId} failed`);
          if (resumed && response.status === 404) return null;
          // Polls cost nothing: ride out a few transient failures before giving up the attempt.
          if (failure.kind !== 'retryable' || ++transientFailures > 5) throw failure;
        } else {
          transientFailures = 0;
          const task = json as { task_status?: string; output_images?: unknown; errors?: unknown };
          if (task.task_status === 'SUCCEED') {
            const url = Array.isArray(task.output_images) ? task.output_images.find((u): u is string => typeof u === 'string') : undefined;
            if (!url) throw new ClassifiedError('retryable', `task ${taskId} succeeded without an output image`, { requestId: taskId });
            return url;
          }
          if (task.task_status === 'FAILED') {
            const why = messageOf(json, 'no reason given');
            if (CONTENT_FILTER.test(why)) throw new ClassifiedError('blocked', `task ${taskId} failed: ${why}`, { requestId: taskId });
            if (resumed) return null; // submit afresh rather than fail on an old task
            throw new ClassifiedError('retryable', `task ${taskId} failed: ${why}`, { requestId: taskId });
          }
        }
      }
      if (Date.now() + pollIntervalMs > deadline) {
        // The heartbeat keeps the task id: the next attempt polls this task instead of resubmitting.
        throw new ClassifiedError('retryable', `task ${taskId} still running after ${Math.round(maxWaitMs / 1000)} s`, {
          requestId: taskId,
        });
      }
      try {
        await sleep(pollIntervalMs, undefined, request.signal ? { signal: request.signal } : {});
      } catch {
        throw new ClassifiedError('retryable', 'request cancelled');
      }
    }
  }

  async function run(request: ImageRequest, images: ProviderImage[]): Promise<ImageResult> {
    const key = requestFingerprint(request, images);
    const previous = previousTaskIds(request.previousHeartbeat, key);
    const taskIds: string[] = [];
    const info: Record<string, string | number> = {};
    const out: ProviderImage[] = [];
    const beat = () =>
      request.heartbeat?.({ modelscope: { key, taskIds: [...taskIds] } } satisfies ModelScopeProgress as unknown as JsonValue);
    for (let k = 0; k < Math.max(1, request.numImages); k++) {
      let url: string | null = null;
      const earlier = previous[k];
      if (earlier) {
        taskIds[k] = earlier;
        url = await poll(request, earlier, beat, info, true);
        if (url) info.resumedTasks = (Number(info.resumedTasks) || 0) + 1;
      }
      if (!url) {
        const taskId = await submit(request, images, info);
        taskIds[k] = taskId;
        beat();
        url = await poll(request, taskId, beat, info, false);
      }
      out.push(await resultImage(url!, request.signal, (u, signal) => http(u, {}, signal)));
    }
    info.taskIds = taskIds.join(',');
    return { images: out, requestId: taskIds[taskIds.length - 1]!, info };
  }

  return {
    backend: 'modelscope',
    secrets: [options.apiKey],
    async edit(request: EditRequest): Promise<ImageResult> {
      checkEditInputs('modelscope', request);
      return run(request, request.images);
    },
    async generate(request: ImageRequest): Promise<ImageResult> {
      return run(request, []);
    },
  };
}
