import type { IncomingMessage, ServerResponse } from 'node:http';
import { readBody, sendJson } from '../../../standins/server';

// The Gemini stand-in's Batch Mode, mounted by activities/providers/gemini/standin.ts. Rules and their sources
// (ai.google.dev/gemini-api/docs/batch-mode; @google/genai 2.32.0 src/batches.ts and its converters
// batchJobFromMldev, batchJobSourceToMldev, inlinedResponseFromMldev, tJobState):
// - `POST /v1beta/models/{model}:batchGenerateContent` with `{batch: {displayName, inputConfig:
//   {requests: {requests: [{request, metadata}]}} | {fileName: 'files/…'}}}`. Inline requests must
//   total under 20 MB ("Request payload size exceeds the limit: 20971520 bytes."); a file holds one
//   `{key, request}` JSON line per request, uploaded through the Files API first. An unknown model is
//   404 NOT_FOUND, an unknown file 404, both sources or neither 400 INVALID_ARGUMENT.
// - The answer and `GET /v1beta/batches/{id}`: `{name: 'batches/…', metadata: {'@type', name, model,
//   displayName, state, createTime, updateTime, endTime, batchStats, output}, done}`; the SDK reads
//   the job from `metadata` and maps `BATCH_STATE_*` to `JOB_STATE_*`. States: PENDING → RUNNING →
//   SUCCEEDED, or FAILED, CANCELLED, EXPIRED (no results).
// - Results: `output.inlinedResponses.inlinedResponses[]` (`{response | error, metadata}`, in input
//   order) for inline jobs, `output.responsesFile` (`{key, response | error}` lines, read with
//   `GET /v1beta/files/{id}:download?alt=media`) for file jobs.
// - `POST /v1beta/batches/{id}:cancel`, `GET /v1beta/batches` (`{operations, nextPageToken}`).
// Each request runs as a real generateContent call on this stand-in (header `x-standin-batch`), so
// it meets exactly the direct path's rules and scripted faults; those calls carry `viaBatch`.
// Unverified: batchStats' exact field names in every state, and the error wording for a missing
// file or both sources.

const MAX_INLINE_BYTES = 20 * 1024 * 1024;

export interface GeminiBatchOptions {
  /** Time in PENDING (default 50 ms). */
  pendingMs?: number;
  /** Least time in RUNNING (default 100 ms). */
  runningMs?: number;
  concurrency?: number;
  /** Expires after running this many requests (no results, as an expired job has none). */
  expireAfterRequests?: number;
}

type State =
  | 'BATCH_STATE_PENDING'
  | 'BATCH_STATE_RUNNING'
  | 'BATCH_STATE_SUCCEEDED'
  | 'BATCH_STATE_FAILED'
  | 'BATCH_STATE_CANCELLED'
  | 'BATCH_STATE_EXPIRED';

export interface GeminiBatch {
  name: string;
  model: string;
  displayName: string;
  state: State;
  createTime: string;
  updateTime: string;
  endTime?: string;
  requestCount: number;
  succeeded: number;
  failed: number;
  /** The source: inline, or the input file's name. */
  source: 'inline' | string;
  output?: { inlinedResponses: { inlinedResponses: unknown[] } } | { responsesFile: string };
}

export interface GeminiBatchApi {
  route(req: IncomingMessage, res: ServerResponse, url: URL): boolean;
  readonly all: GeminiBatch[];
  cancelCalls(): number;
  configure(options: GeminiBatchOptions): void;
  stop(): void;
}

export interface GeminiFiles {
  get(name: string): { mimeType: string; data: Buffer } | undefined;
  put(mimeType: string, data: Buffer): string;
}

function googleError(code: number, status: string, message: string) {
  return { error: { code, message, status } };
}

const unregistered = googleError(
  403,
  'PERMISSION_DENIED',
  "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
);

export function createGeminiBatchApi(
  selfBaseURL: () => string,
  files: GeminiFiles,
  knownModel: (model: string) => boolean,
  initial: GeminiBatchOptions,
): GeminiBatchApi {
  let options = { ...initial };
  const batches: GeminiBatch[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let counter = 0;
  let cancels = 0;
  let stopped = false;

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      if (!stopped) fn();
    }, ms);
    timers.add(t);
  };

  function view(b: GeminiBatch) {
    const done = !['BATCH_STATE_PENDING', 'BATCH_STATE_RUNNING'].includes(b.state);
    const metadata = {
      '@type': 'type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch',
      name: b.name,
      model: `models/${b.model}`,
      displayName: b.displayName,
      state: b.state,
      createTime: b.createTime,
      updateTime: b.updateTime,
      ...(b.endTime ? { endTime: b.endTime } : {}),
      // int64 fields travel as strings in Google's JSON.
      batchStats: {
        requestCount: String(b.requestCount),
        ...(done
          ? { successfulRequestCount: String(b.succeeded), failedRequestCount: String(b.failed) }
          : { pendingRequestCount: String(b.requestCount - b.succeeded - b.failed) }),
      },
      ...(b.output ? { output: b.output } : {}),
    };
    return { name: b.name, metadata, ...(done ? { done: true } : {}) };
  }

  const touch = (b: GeminiBatch, state?: State) => {
    if (state) b.state = state;
    b.updateTime = new Date().toISOString();
    if (state && !['BATCH_STATE_PENDING', 'BATCH_STATE_RUNNING'].includes(state)) b.endTime = b.updateTime;
  };

  async function runOne(apiKey: string, model: string, request: unknown): Promise<{ response?: unknown; error?: unknown }> {
    const response = await fetch(`${selfBaseURL()}/v1beta/models/${encodeURIComponent(model)}:generateContent`, {
      method: 'POST',
      headers: { 'x-goog-api-key': apiKey, 'content-type': 'application/json', 'x-standin-batch': '1' },
      body: JSON.stringify(request),
    });
    const text = await response.text();
    let body: { error?: unknown } | undefined;
    try {
      body = JSON.parse(text) as { error?: unknown };
    } catch {
      body = undefined;
    }
    if (response.ok && body) return { response: body };
    return { error: body?.error ?? { code: 500, message: 'An internal error has occurred.', status: 'INTERNAL' } };
  }

  async function run(
    batch: GeminiBatch,
    apiKey: string,
    requests: { key: string; request: unknown; metadata?: unknown }[],
    settings: GeminiBatchOptions,
  ): Promise<void> {
    const started = Date.now();
    const results: ({ response?: unknown; error?: unknown } | undefined)[] = Array(requests.length);
    const limit = settings.expireAfterRequests ?? Infinity;
    let next = 0;
    let expired = false;
    const worker = async () => {
      while (next < requests.length && !stopped && batch.state === 'BATCH_STATE_RUNNING') {
        if (next >= limit) {
          expired = true;
          return;
        }
        const k = next++;
        const result = await runOne(apiKey, batch.model, requests[k]!.request).catch((err: unknown) => ({
          error: { code: 500, message: `stand-in failure: ${(err as Error).message}`, status: 'INTERNAL' },
        }));
        results[k] = result;
        if (result.error) batch.failed += 1;
        else batch.succeeded += 1;
      }
    };
    await Promise.all(Array.from({ length: settings.concurrency ?? 4 }, worker));
    if (stopped || batch.state !== 'BATCH_STATE_RUNNING') return;
    if (expired) return touch(batch, 'BATCH_STATE_EXPIRED');
    later(Math.max(0, (settings.runningMs ?? 100) - (Date.now() - started)), () => {
      if (batch.state !== 'BATCH_STATE_RUNNING') return;
      if (batch.source === 'inline') {
        batch.output = {
          inlinedResponses: {
            inlinedResponses: requests.map((r, k) => ({ ...results[k], ...(r.metadata ? { metadata: r.metadata } : {}) })),
          },
        };
      } else {
        const lines = requests.map((r, k) => JSON.stringify({ key: r.key, ...results[k] }));
        batch.output = { responsesFile: files.put('application/jsonl', Buffer.from(`${lines.join('\n')}\n`)) };
      }
      touch(batch, 'BATCH_STATE_SUCCEEDED');
    });
  }

  async function create(req: IncomingMessage, res: ServerResponse, model: string, apiKey: string): Promise<void> {
    const raw = await readBody(req);
    if (!apiKey) return sendJson(res, 403, unregistered);
    if (!knownModel(model)) {
      return sendJson(
        res,
        404,
        googleError(
          404,
          'NOT_FOUND',
          `models/${model} is not found for API version v1beta, or is not supported for batchGenerateContent. Call ListModels to see the list of available models and their supported methods.`,
        ),
      );
    }
    if (raw.length > MAX_INLINE_BYTES)
      return sendJson(res, 400, googleError(400, 'INVALID_ARGUMENT', `Request payload size exceeds the limit: ${MAX_INLINE_BYTES} bytes.`));
    let body: {
      batch?: {
        displayName?: string;
        inputConfig?: { requests?: { requests?: { request?: unknown; metadata?: { key?: string } }[] }; fileName?: string };
      };
    };
    try {
      body = JSON.parse(raw.toString('utf8')) as typeof body;
    } catch {
      return sendJson(res, 400, googleError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received. Unexpected token.'));
    }
    const input = body.batch?.inputConfig;
    const inline = input?.requests?.requests;
    if ((inline === undefined) === (input?.fileName === undefined)) {
      return sendJson(
        res,
        400,
        googleError(
          400,
          'INVALID_ARGUMENT',
          '* BatchGenerateContentRequest.batch.input_config: exactly one of requests or file_name must be set',
        ),
      );
    }
    let requests: { key: string; request: unknown; metadata?: unknown }[];
    if (inline) {
      if (inline.length === 0)
        return sendJson(
          res,
          400,
          googleError(400, 'INVALID_ARGUMENT', '* BatchGenerateContentRequest.batch.input_config.requests: requests is empty'),
        );
      requests = inline.map((r, k) => ({
        key: r.metadata?.key ?? String(k),
        request: r.request,
        ...(r.metadata ? { metadata: r.metadata } : {}),
      }));
    } else {
      const file = files.get(input!.fileName!);
      if (!file) return sendJson(res, 404, googleError(404, 'NOT_FOUND', 'Requested entity was not found.'));
      requests = [];
      for (const [i, line] of file.data.toString('utf8').split('\n').entries()) {
        if (!line.trim()) continue;
        try {
          const parsed = JSON.parse(line) as { key?: string; request?: unknown };
          requests.push({ key: parsed.key ?? String(i), request: parsed.request });
        } catch {
          return sendJson(res, 400, googleError(400, 'INVALID_ARGUMENT', `Invalid JSON on line ${i + 1} of ${input!.fileName}.`));
        }
      }
    }
    const now = new Date().toISOString();
    const batch: GeminiBatch = {
      name: `batches/standin${String(++counter).padStart(6, '0')}`,
      model,
      displayName: body.batch?.displayName ?? '',
      state: 'BATCH_STATE_PENDING',
      createTime: now,
      updateTime: now,
      requestCount: requests.length,
      succeeded: 0,
      failed: 0,
      source: inline ? 'inline' : input!.fileName!,
    };
    batches.push(batch);
    const settings = { ...options };
    later(settings.pendingMs ?? 50, () => {
      if (batch.state !== 'BATCH_STATE_PENDING') return;
      touch(batch, 'BATCH_STATE_RUNNING');
      void run(batch, apiKey, requests, settings);
    });
    sendJson(res, 200, view(batch));
  }

  function route(req: IncomingMessage, res: ServerResponse, url: URL): boolean {
    const apiKey = String(req.headers['x-goog-api-key'] ?? url.searchParams.get('key') ?? '');
    const fail = (err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, googleError(500, 'INTERNAL', `stand-in failure: ${(err as Error).message}`));
    };
    let m = /^\/v1beta\/models\/([^:/]+):batchGenerateContent$/.exec(url.pathname);
    if (m && req.method === 'POST') return (void create(req, res, decodeURIComponent(m[1]!), apiKey).catch(fail), true);
    m = /^\/v1beta\/(files\/[^:/]+):download$/.exec(url.pathname);
    if (m && req.method === 'GET') {
      if (!apiKey) return (sendJson(res, 403, unregistered), true);
      const file = files.get(m[1]!);
      if (!file) return (sendJson(res, 404, googleError(404, 'NOT_FOUND', 'Requested entity was not found.')), true);
      res.writeHead(200, { 'content-type': file.mimeType, 'content-length': String(file.data.length) });
      res.end(file.data);
      return true;
    }
    if (url.pathname === '/v1beta/batches' && req.method === 'GET') {
      if (!apiKey) return (sendJson(res, 403, unregistered), true);
      const size = Math.max(1, Math.min(100, Number(url.searchParams.get('pageSize') ?? 50) || 50));
      const start = Number(url.searchParams.get('pageToken') ?? 0) || 0;
      const newestFirst = [...batches].reverse();
      const page = newestFirst.slice(start, start + size).map(view);
      return (
        sendJson(res, 200, { operations: page, ...(start + size < newestFirst.length ? { nextPageToken: String(start + size) } : {}) }),
        true
      );
    }
    m = /^\/v1beta\/(batches\/[^:/]+)(:cancel)?$/.exec(url.pathname);
    if (m) {
      if (!apiKey) return (sendJson(res, 403, unregistered), true);
      const batch = batches.find((b) => b.name === m![1]);
      if (!batch) return (sendJson(res, 404, googleError(404, 'NOT_FOUND', 'Requested entity was not found.')), true);
      if (m[2] && req.method === 'POST') {
        if (['BATCH_STATE_PENDING', 'BATCH_STATE_RUNNING'].includes(batch.state)) {
          cancels += 1;
          touch(batch, 'BATCH_STATE_CANCELLED');
          return (sendJson(res, 200, {}), true);
        }
        return (
          sendJson(
            res,
            400,
            googleError(400, 'FAILED_PRECONDITION', `Batch ${batch.name} is already in a terminal state: ${batch.state}.`),
          ),
          true
        );
      }
      if (!m[2] && req.method === 'GET') return (sendJson(res, 200, view(batch)), true);
    }
    return false;
  }

  return {
    route,
    all: batches,
    cancelCalls: () => cancels,
    configure(next) {
      options = { ...options, ...next };
    },
    stop() {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
    },
  };
}
