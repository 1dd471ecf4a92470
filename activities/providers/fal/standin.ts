import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp from 'sharp';
import {
  FaultScripts,
  listenOnLoopback,
  readBody,
  sendJson,
  sendStep,
  SlidingWindowLimiter,
  standinControls,
  type FaultStep,
  type Standin,
  type StandinOptions,
} from '../../../standins/server';

// A local stand-in for fal.ai's queue API, for the image-edit endpoints Atelier's table knows. It is
// a contract: it takes what fal takes and answers with fal's bodies. Rules and their sources:
// - Submit `POST /{model_id}` with `Authorization: Key <key>` and a JSON input; the answer is
//   `{status: "IN_QUEUE", request_id, response_url, status_url, cancel_url, queue_position}`, whose
//   URLs hold only the owner and app of the model id ("The status, result, and cancel URLs use only
//   the owner and the app. Do not build these URLs yourself": fal.ai/docs/api-reference/
//   inference-api; the submit answers quoted by docs.kkiai.com for fal-ai/nano-banana/edit).
// - `GET .../requests/{id}/status`: 202 while IN_QUEUE / IN_PROGRESS, 200 when COMPLETED (same page).
//   With `accountConcurrency`, requests past the account's limit stay IN_QUEUE (their
//   `queue_position` counting down) until a running one completes: fal queues them, never rejects
//   them (fal.ai/docs/documentation/model-apis/concurrency-limits).
// - `GET .../requests/{id}`: the model's output, `{images: [{url, content_type, width, height,
//   file_name, file_size}], seed, has_nsfw_concepts, prompt}` (model llms.txt output schemas); before
//   completion 400 (wording unverified).
// - Errors: `{detail: "..."}` for auth and routing; model errors as `{detail: [{loc, msg, type,
//   ...}]}` with `X-Fal-Retryable` (fal.ai/docs/documentation/model-apis/errors): input validation
//   422 (pydantic types `missing`, `less_than_equal`, `greater_than_equal`, `literal_error`, ...);
//   an unreadable image 422 `image_load_error`; a refusal 422 `content_policy_violation` (the
//   error reference as quoted by wavespeed.ai, checked 2026-11-22). Validation happens when the
//   request runs, so it is reported by the result, after a paid-for submit.
// - Input schemas (fields, ranges, enums): models.ts lists each endpoint's sources. Unknown fields
//   are ignored, as pydantic models do by default (unverified per endpoint).
// - Request (infrastructure) errors: a flat `{detail: "<text>", error_type}` with the same value in
//   `X-Fal-Error-Type` (fal.ai/docs/documentation/model-apis/request-errors): request_timeout and
//   startup_timeout 504; runner_scheduling_failure, runner_connection_timeout, runner_disconnected,
//   runner_connection_refused, runner_connection_error 503; runner_incomplete_response 502;
//   runner_server_error and internal_error 500; client_disconnected, client_cancelled 499;
//   bad_request 400. The queue retries 503/504/429/connection failures up to 10 times itself unless
//   the submit carried `x-fal-no-retry: 1` (…/serverless/reliability/retries); the stand-in records
//   that header on the submit call.
// - Without a key: 401; an unknown app: 404 (both wordings unverified).
// - Output files are served without auth, as fal's CDN serves them.

export type { FaultStep } from '../../../standins/server';

/** A request outcome instead of an HTTP fault at submit: the request is queued, then goes this way. */
export interface FalRequestStep {
  request: 'CONTENT_POLICY' | 'SERVER_ERROR' | 'SLOW' | 'REQUEST_ERROR';
  /** SLOW: status polls before it completes. */
  polls?: number;
  /** REQUEST_ERROR: the request error type (FAL_REQUEST_ERRORS). */
  errorType?: FalRequestErrorType;
}

/** fal's request error types, each with its typical status and text (the request-errors reference). */
export const FAL_REQUEST_ERRORS = {
  request_timeout: [504, 'Request timed out'],
  startup_timeout: [504, 'Runner startup timed out'],
  runner_scheduling_failure: [503, 'No runner could be allocated to handle the request'],
  runner_connection_timeout: [503, 'The connection to the runner timed out'],
  runner_disconnected: [503, 'The runner disconnected unexpectedly during processing'],
  runner_connection_refused: [503, 'The runner refused the connection'],
  runner_connection_error: [503, 'A connection error occurred with the runner'],
  runner_incomplete_response: [502, 'The runner sent an incomplete response payload'],
  runner_server_error: [500, 'Internal Server Error'],
  internal_error: [500, 'An unexpected internal error occurred'],
  client_disconnected: [499, 'The client closed the connection before the response was sent'],
  client_cancelled: [499, 'The request was cancelled by the client'],
  bad_request: [400, 'The request was malformed'],
} as const satisfies Record<string, readonly [number, string]>;
export type FalRequestErrorType = keyof typeof FAL_REQUEST_ERRORS;

export type FalStep = FaultStep | FalRequestStep;

export const falFaults = {
  rateLimited: (retryAfterSeconds = 1): FaultStep => ({
    status: 429,
    headers: { 'retry-after': String(retryAfterSeconds) },
    body: { detail: 'Rate limit exceeded.' },
  }),
  serverError: (): FaultStep => ({ status: 500, body: { detail: 'Internal Server Error' } }),
  exhaustedBalance: (): FaultStep => ({
    status: 403,
    body: { detail: 'User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.' },
  }),
  malformed: (): FaultStep => ({ status: 200, raw: '{"request_id": ' }),
  contentPolicy: (): FalRequestStep => ({ request: 'CONTENT_POLICY' }),
  failedRun: (): FalRequestStep => ({ request: 'SERVER_ERROR' }),
  slowRequest: (polls: number): FalRequestStep => ({ request: 'SLOW', polls }),
  /** The request is queued, then fails with this request error type (its status, body and header). */
  requestError: (errorType: FalRequestErrorType): FalRequestStep => ({ request: 'REQUEST_ERROR', errorType }),
};

interface FalModelSpec {
  /** Image input: one URL (`image_url`), a list (`image_urls`), or none (text-to-image). */
  image: 'image_url' | 'image_urls' | 'none';
  outputFormats: string[];
  aspectRatios?: string[];
  guidanceScale?: [number, number];
  inferenceSteps?: [number, number];
}

const KONTEXT_RATIOS = ['21:9', '16:9', '4:3', '3:2', '1:1', '2:3', '3:4', '9:16', '9:21'];
const NANO_BANANA_RATIOS = ['auto', '21:9', '16:9', '3:2', '4:3', '5:4', '1:1', '4:5', '3:4', '2:3', '9:16'];
export const FAL_MODELS: Record<string, FalModelSpec> = {
  'fal-ai/flux-pro/kontext': { image: 'image_url', outputFormats: ['jpeg', 'png'], aspectRatios: KONTEXT_RATIOS, guidanceScale: [1, 20] },
  'fal-ai/flux-pro/kontext/text-to-image': {
    image: 'none',
    outputFormats: ['jpeg', 'png'],
    aspectRatios: KONTEXT_RATIOS,
    guidanceScale: [1, 20],
  },
  'fal-ai/qwen-image-edit': { image: 'image_url', outputFormats: ['jpeg', 'png'], guidanceScale: [0, 20], inferenceSteps: [2, 50] },
  'fal-ai/nano-banana/edit': {
    image: 'image_urls',
    outputFormats: ['jpeg', 'png', 'webp'],
    aspectRatios: NANO_BANANA_RATIOS,
  },
  // Sources in activities/providers/models.ts (fal section).
  'fal-ai/nano-banana-2/edit': { image: 'image_urls', outputFormats: ['jpeg', 'png', 'webp'], aspectRatios: NANO_BANANA_RATIOS },
  'google/nano-banana-2.1/edit': {
    image: 'image_urls',
    outputFormats: ['jpeg', 'png', 'webp'],
    aspectRatios: [...NANO_BANANA_RATIOS, '1:4', '4:1', '1:8', '8:1'],
  },
};

export interface FalStandinCall {
  kind: 'submit' | 'status' | 'result' | 'download';
  requestId?: string;
  model: string;
  prompt: string;
  imageCount: number;
  /** Input fields other than prompt and images, as sent. */
  fields: Record<string, unknown>;
  authorization: string;
  /** Submit: the `x-fal-no-retry` header, when sent (fal's own queue retries are then off). */
  noRetry?: string;
  status: number;
  at: number;
}

/** Base URL is the queue root (https://queue.fal.run); `callsFor` gives the calls of requests whose prompt contains `match`. */
export interface FalStandin extends Standin<FalStandinCall, FalStep> {
  /** Requests submitted in all (each one is paid for at fal). */
  submitted(): number;
  /** The most requests submitted and not yet completed at one time (what a client holds open). */
  maxOutstanding(): number;
}

export interface FalStandinOptions extends StandinOptions {
  /** Status polls a request answers IN_QUEUE / IN_PROGRESS before COMPLETED (default 2). */
  pollsUntilDone?: number;
  /**
   * The account's concurrency limit: at most this many requests run at once; the rest wait
   * IN_QUEUE (with their `queue_position`) until one finishes, never rejected. fal gives a new
   * account 2, rising to 40 with credit purchases (fal.ai/docs/documentation/model-apis/
   * concurrency-limits; providers-audit-2026-12 §1). Default: no limit.
   */
  accountConcurrency?: number;
}

interface QueuedRequest {
  id: string;
  app: string;
  model: string;
  prompt: string;
  polls: number;
  pollsUntilDone: number;
  /** Holds one of the account's running slots (polls count toward completion only then). */
  started: boolean;
  done: boolean;
  seq: number;
  /** The result: 200 with the output, or the request's error. */
  outcome?: { status: number; body: unknown; headers?: Record<string, string> };
  input: Record<string, unknown>;
  outputs: Buffer[];
}

type Detail = { loc: (string | number)[]; msg: string; type: string; input?: unknown; ctx?: Record<string, unknown>; url?: string };

function validationError(loc: (string | number)[], msg: string, type: string, input?: unknown, ctx?: Record<string, unknown>): Detail {
  return { loc: ['body', ...loc], msg, type, ...(input !== undefined ? { input } : {}), ...(ctx ? { ctx } : {}) };
}

export async function startFalStandin(options: FalStandinOptions = {}): Promise<FalStandin> {
  const calls: FalStandinCall[] = [];
  const scripts = new FaultScripts<FalStep>();
  const limiter = options.rateLimitPerSecond ? new SlidingWindowLimiter(options.rateLimitPerSecond) : undefined;
  const requests = new Map<string, QueuedRequest>();
  let counter = 0;
  let outstanding = 0;
  let maxOutstanding = 0;
  let baseURL = '';

  function record(req: IncomingMessage, partial: Partial<FalStandinCall> & Pick<FalStandinCall, 'kind'>): FalStandinCall {
    const call: FalStandinCall = {
      model: '',
      prompt: '',
      imageCount: 0,
      fields: {},
      authorization: String(req.headers.authorization ?? ''),
      status: 200,
      at: Date.now(),
      ...partial,
    };
    calls.push(call);
    return call;
  }

  const authorized = (call: FalStandinCall) => /^Key \S+/.test(call.authorization);
  const unauthorized = { detail: 'Missing or invalid Authorization header: use "Authorization: Key <FAL_KEY>".' };

  /** Runs the model on a request's input the way its schema would: the output, or the 422 it answers. */
  async function runModel(
    spec: FalModelSpec,
    input: Record<string, unknown>,
    outputs: Buffer[],
  ): Promise<{ status: number; body: unknown; headers?: Record<string, string> }> {
    const errors: Detail[] = [];
    if (typeof input.prompt !== 'string' || input.prompt === '') errors.push(validationError(['prompt'], 'Field required', 'missing'));
    const urls: unknown[] =
      spec.image === 'image_url'
        ? input.image_url === undefined
          ? []
          : [input.image_url]
        : spec.image === 'image_urls'
          ? Array.isArray(input.image_urls)
            ? input.image_urls
            : []
          : [];
    if (spec.image === 'image_url' && input.image_url === undefined)
      errors.push(validationError(['image_url'], 'Field required', 'missing'));
    if (spec.image === 'image_urls' && !Array.isArray(input.image_urls))
      errors.push(
        validationError(
          ['image_urls'],
          input.image_urls === undefined ? 'Field required' : 'Input should be a valid list',
          input.image_urls === undefined ? 'missing' : 'list_type',
        ),
      );
    const n = input.num_images ?? 1;
    if (!Number.isInteger(n) || (n as number) < 1)
      errors.push(validationError(['num_images'], 'Input should be greater than or equal to 1', 'greater_than_equal', n, { ge: 1 }));
    else if ((n as number) > 4)
      errors.push(validationError(['num_images'], 'Input should be less than or equal to 4', 'less_than_equal', n, { le: 4 }));
    const enumCheck = (field: string, allowed: string[] | undefined) => {
      if (input[field] === undefined || !allowed) return;
      if (!allowed.includes(String(input[field])))
        errors.push(
          validationError([field], `Input should be ${allowed.map((a) => `'${a}'`).join(', ')}`, 'literal_error', input[field], {
            expected: allowed.join(', '),
          }),
        );
    };
    enumCheck('output_format', spec.outputFormats);
    enumCheck('aspect_ratio', spec.aspectRatios);
    const rangeCheck = (field: string, range: [number, number] | undefined) => {
      const v = input[field];
      if (v === undefined || !range) return;
      if (typeof v !== 'number') errors.push(validationError([field], 'Input should be a valid number', 'float_parsing', v));
      else if (v < range[0])
        errors.push(
          validationError([field], `Input should be greater than or equal to ${range[0]}`, 'greater_than_equal', v, { ge: range[0] }),
        );
      else if (v > range[1])
        errors.push(validationError([field], `Input should be less than or equal to ${range[1]}`, 'less_than_equal', v, { le: range[1] }));
    };
    rangeCheck('guidance_scale', spec.guidanceScale);
    rangeCheck('num_inference_steps', spec.inferenceSteps);
    if (errors.length) return { status: 422, body: { detail: errors }, headers: { 'x-fal-retryable': 'false' } };

    // Images: data URIs (fal accepts them for any file input) or URLs it can fetch.
    const buffers: Buffer[] = [];
    for (const [i, url] of urls.entries()) {
      const m = typeof url === 'string' ? /^data:([^;,]+);base64,(.*)$/s.exec(url) : null;
      const data = m
        ? Buffer.from(m[2]!, 'base64')
        : typeof url === 'string' && /^https?:\/\//.test(url)
          ? await fetch(url)
              .then(async (r) => (r.ok ? Buffer.from(await r.arrayBuffer()) : undefined))
              .catch(() => undefined)
          : undefined;
      const ok = data
        ? await sharp(data)
            .metadata()
            .then(
              () => true,
              () => false,
            )
        : false;
      if (!ok) {
        const loc = spec.image === 'image_urls' ? ['image_urls', i] : ['image_url'];
        return {
          status: 422,
          body: {
            detail: [
              {
                ...validationError(
                  loc,
                  'Failed to load the image. Please ensure the image file is not corrupted and is in a supported format.',
                  'image_load_error',
                ),
                url: 'https://docs.fal.ai/errors#image_load_error',
              },
            ],
          },
          headers: { 'x-fal-retryable': 'false' },
        };
      }
      buffers.push(data!);
    }
    const prompt = String(input.prompt);
    const format = String(input.output_format ?? 'png') === 'jpeg' ? 'jpeg' : 'png';
    let image;
    if (buffers[0]) image = sharp(buffers[0]).negate({ alpha: false });
    else {
      const hue = [...prompt].reduce((a, c) => (a * 31 + c.charCodeAt(0)) % 360, 7);
      image = sharp({ create: { width: 64, height: 64, channels: 3, background: `hsl(${hue}, 70%, 50%)` } });
    }
    const encoded = format === 'jpeg' ? await image.jpeg().toBuffer() : await image.png().toBuffer();
    const meta = await sharp(encoded).metadata();
    for (let k = 0; k < (n as number); k++) outputs.push(encoded);
    return {
      status: 200,
      body: {
        images: outputs.map((o, k) => ({
          url: '',
          content_type: `image/${format}`,
          file_name: `${k}.${format === 'jpeg' ? 'jpg' : 'png'}`,
          file_size: o.length,
          width: meta.width,
          height: meta.height,
        })),
        seed: typeof input.seed === 'number' ? input.seed : 42,
        has_nsfw_concepts: outputs.map(() => false),
        prompt,
      },
    };
  }

  async function handleSubmit(req: IncomingMessage, res: ServerResponse, model: string): Promise<void> {
    const raw = (await readBody(req)).toString('utf8');
    let input: Record<string, unknown> = {};
    let parsed = true;
    try {
      const value = JSON.parse(raw) as unknown;
      if (value && typeof value === 'object' && !Array.isArray(value)) input = value as Record<string, unknown>;
      else parsed = false;
    } catch {
      parsed = false;
    }
    const { prompt, image_url, image_urls, ...fields } = input;
    const imageCount = Array.isArray(image_urls) ? image_urls.length : image_url !== undefined ? 1 : 0;
    const noRetry = req.headers['x-fal-no-retry'];
    const call = record(req, {
      kind: 'submit',
      model,
      prompt: String(prompt ?? ''),
      imageCount,
      fields,
      ...(noRetry !== undefined ? { noRetry: String(noRetry) } : {}),
    });
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      call.status = status;
      sendJson(res, status, body, headers);
    };
    if (!authorized(call)) return reply(401, unauthorized);
    if (limiter && !limiter.admit()) return reply(429, { detail: 'Rate limit exceeded (stand-in).' }, { 'retry-after': '1' });
    const spec = FAL_MODELS[model];
    if (!spec) return reply(404, { detail: `Application '${model.split('/').slice(0, 2).join('/')}' not found` });
    if (!parsed)
      return reply(422, {
        detail: [validationError([], 'Input should be a valid dictionary or object to extract fields from', 'model_attributes_type')],
      });
    const step = scripts.next(call.prompt);
    if (options.latencyMs) await sleep(options.latencyMs);
    if (step && 'status' in step) {
      call.status = step.status;
      return sendStep(res, step, { detail: `scripted ${step.status}` });
    }
    const id = `standin-${String(++counter).padStart(4, '0')}-${Math.random().toString(16).slice(2, 10)}`;
    // The owner and app only (the endpoint path is dropped), as fal's answers show.
    const app = model.split('/').slice(0, 2).join('/');
    const queued: QueuedRequest = {
      id,
      app,
      model,
      prompt: call.prompt,
      polls: 0,
      pollsUntilDone: options.pollsUntilDone ?? 2,
      started: false,
      done: false,
      seq: counter,
      input,
      outputs: [],
    };
    if (step && step.request === 'SLOW') queued.pollsUntilDone = step.polls ?? 10;
    if (step && step.request === 'CONTENT_POLICY') {
      queued.outcome = {
        status: 422,
        body: {
          detail: [
            {
              loc: ['body', 'prompt'],
              msg: 'The content was flagged by a content checker.',
              type: 'content_policy_violation',
              url: 'https://docs.fal.ai/errors#content_policy_violation',
              input: call.prompt,
              categories: ['violence'],
            },
          ],
        },
        headers: { 'x-fal-retryable': 'false' },
      };
    } else if (step && step.request === 'SERVER_ERROR') {
      queued.outcome = {
        status: 500,
        body: { detail: 'Internal Server Error', error_type: 'runner_server_error' },
        headers: { 'x-fal-retryable': 'true', 'x-fal-error-type': 'runner_server_error' },
      };
    } else if (step && step.request === 'REQUEST_ERROR') {
      const type = step.errorType ?? 'internal_error';
      const [status, detail] = FAL_REQUEST_ERRORS[type];
      queued.outcome = { status, body: { detail, error_type: type }, headers: { 'x-fal-error-type': type } };
    } else {
      queued.outcome = await runModel(spec, input, queued.outputs);
      const body = queued.outcome.body as { images?: { url: string }[] };
      body.images?.forEach((image, k) => (image.url = `${baseURL}/files/${id}/${k}`));
    }
    requests.set(id, queued);
    outstanding += 1;
    maxOutstanding = Math.max(maxOutstanding, outstanding);
    call.requestId = id;
    const urls = `${baseURL}/${app}/requests/${id}`;
    reply(200, {
      status: 'IN_QUEUE',
      request_id: id,
      response_url: urls,
      status_url: `${urls}/status`,
      cancel_url: `${urls}/cancel`,
      logs: null,
      metrics: {},
      queue_position: 0,
    });
  }

  function handleRequest(req: IncomingMessage, res: ServerResponse, app: string, id: string, kind: 'status' | 'result'): void {
    const queued = requests.get(id);
    const call = record(req, { kind, requestId: id, model: queued?.model ?? app, prompt: queued?.prompt ?? '' });
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      call.status = status;
      sendJson(res, status, body, headers);
    };
    if (!authorized(call)) return reply(401, unauthorized);
    if (!queued || queued.app !== app) return reply(404, { detail: `Request ${id} not found` });
    const responseUrl = `${baseURL}/${app}/requests/${id}`;
    // A status answer as fal's queue gives it; `extra` sets the queue position or the metrics.
    const statusBody = (status: string, extra: Record<string, unknown>) => ({
      status,
      request_id: id,
      response_url: responseUrl,
      status_url: `${responseUrl}/status`,
      cancel_url: `${responseUrl}/cancel`,
      logs: null,
      metrics: {},
      ...extra,
    });
    if (kind === 'status') {
      if (!queued.started && !queued.done) {
        const running = [...requests.values()].filter((r) => r.started && !r.done).length;
        if (options.accountConcurrency !== undefined && running >= options.accountConcurrency) {
          // Over the account's limit: it waits its turn (never rejected).
          const ahead = [...requests.values()].filter((r) => !r.started && !r.done && r.seq < queued.seq).length;
          return reply(202, statusBody('IN_QUEUE', { queue_position: ahead }));
        }
        queued.started = true;
      }
      queued.polls++;
      if (queued.polls <= queued.pollsUntilDone) {
        return reply(
          202,
          statusBody(queued.polls === 1 ? 'IN_QUEUE' : 'IN_PROGRESS', { queue_position: queued.polls === 1 ? 0 : undefined }),
        );
      }
      if (!queued.done) {
        queued.done = true;
        outstanding -= 1;
      }
      return reply(200, statusBody('COMPLETED', { metrics: { inference_time: 1.2 } }));
    }
    if (queued.polls <= queued.pollsUntilDone) return reply(400, { detail: 'Request is still in progress' });
    reply(queued.outcome!.status, queued.outcome!.body, queued.outcome!.headers ?? {});
  }

  function handleDownload(req: IncomingMessage, res: ServerResponse, id: string, index: number): void {
    const queued = requests.get(id);
    const call = record(req, { kind: 'download', requestId: id, model: queued?.model ?? '', prompt: queued?.prompt ?? '' });
    const data = queued?.outputs[index];
    if (!data) {
      call.status = 404;
      return sendJson(res, 404, { detail: 'Not Found' });
    }
    res.writeHead(200, { 'content-type': (queued!.outcome!.body as { images: { content_type: string }[] }).images[index]!.content_type });
    res.end(data);
  }

  const { server, port } = await listenOnLoopback((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    const file = /^\/files\/([^/]+)\/(\d+)$/.exec(path);
    if (req.method === 'GET' && file) return handleDownload(req, res, decodeURIComponent(file[1]!), Number(file[2]));
    const request = /^\/([^/]+\/[^/]+)\/requests\/([^/]+)(\/status)?$/.exec(path);
    if (req.method === 'GET' && request)
      return handleRequest(req, res, decodeURIComponent(request[1]!), decodeURIComponent(request[2]!), request[3] ? 'status' : 'result');
    if (req.method === 'POST' && /^\/[^/]+\/[^/]+(\/[^/]+)*$/.test(path)) {
      const model = path.slice(1).split('/').map(decodeURIComponent).join('/');
      handleSubmit(req, res, model).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, { detail: `stand-in failure: ${(err as Error).message}` });
      });
      return;
    }
    sendJson(res, 404, { detail: 'Not Found' });
  }, options.port);
  const controls = standinControls(calls, scripts, server);
  baseURL = `http://127.0.0.1:${port}`;

  return {
    baseURL,
    submitted: () => calls.filter((c) => c.kind === 'submit' && c.status === 200).length,
    maxOutstanding: () => maxOutstanding,
    ...controls,
  };
}
