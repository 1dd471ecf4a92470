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

// A local stand-in for ModelScope API-Inference's async image tasks: `POST /v1/images/generations`
// (needs `X-ModelScope-Async-Mode: true`) returns a task id; `GET /v1/tasks/{id}` (needs
// `X-ModelScope-Task-Type: image_generation`) reports PENDING, RUNNING, then SUCCEED with
// `output_images` URLs served here (the first input image colour-inverted, or a solid colour), or
// FAILED. Every response carries the remaining-quota headers; with `dailyQuota` set, submits past it
// get a 429 with the remaining count at 0. Scripted steps per prompt substring: an HTTP fault at
// submit (429 with Retry-After, 5xx, 400, malformed bodies, delays), or a task outcome (a FAILED
// task, a content-filter failure, a task that takes many polls).

export type { FaultStep } from '../../../standins/server';

/** A task outcome instead of an HTTP fault: the submit succeeds, then the task goes this way. */
export interface TaskStep {
  task: 'FAILED' | 'SLOW';
  /** FAILED: the error message. */
  message?: string;
  /** SLOW: polls before the task finishes. */
  polls?: number;
}

export type ModelScopeStep = FaultStep | TaskStep;

/** ModelScope's error body: the request id inside `errors` (providers-audit.md §4, kept open in providers-audit-2026-12 §1). */
function msError(message: string, code = 'InvalidParameter') {
  return { errors: { code, message, request_id: `standin-${Math.random().toString(36).slice(2, 10)}` } };
}

export const modelscopeFaults = {
  rateLimited: (retryAfterSeconds = 1): FaultStep => ({
    status: 429,
    headers: { 'retry-after': String(retryAfterSeconds) },
    body: msError('Request rate increased too quickly. Please retry later.', 'Throttling'),
  }),
  serverError: (): FaultStep => ({ status: 500, body: msError('Internal server error.', 'InternalError') }),
  badRequest: (message = 'Invalid parameter: size must be like 1024x1024.'): FaultStep => ({ status: 400, body: msError(message) }),
  malformed: (): FaultStep => ({ status: 200, raw: '{"task_id": ' }),
  slow: (delayMs: number): FaultStep => ({ status: 500, delayMs, body: msError('slow', 'InternalError') }),
  taskFailed: (message = 'Internal error during inference.'): TaskStep => ({ task: 'FAILED', message }),
  contentFiltered: (): TaskStep => ({ task: 'FAILED', message: 'Output data may contain inappropriate content (data_inspection_failed).' }),
  slowTask: (polls: number): TaskStep => ({ task: 'SLOW', polls }),
};

export interface ModelScopeStandinCall {
  kind: 'submit' | 'poll' | 'download';
  taskId?: string;
  model: string;
  prompt: string;
  imageCount: number;
  imageTypes: string[];
  imageSizes: { width: number; height: number }[];
  /** Other body fields (size, seed, ...). */
  fields: Record<string, unknown>;
  asyncMode?: string;
  taskType?: string;
  authorization: string;
  status: number;
  at: number;
}

/**
 * Base URL is the host root (the adapter adds /v1/...); `callsFor` gives the submits whose prompt
 * contains `match`, and the polls and downloads of their tasks.
 */
export type ModelScopeStandin = Standin<ModelScopeStandinCall, ModelScopeStep>;

export interface ModelScopeStandinOptions extends StandinOptions {
  /** Polls a task answers PENDING/RUNNING before SUCCEED (default 2). */
  pollsUntilDone?: number;
  /** Submits allowed in all (the "daily" quota); default unlimited (reported as 2000). */
  dailyQuota?: number;
}

interface Task {
  id: string;
  prompt: string;
  polls: number;
  pollsUntilDone: number;
  output?: Buffer;
  failure?: string;
}

export async function startModelScopeStandin(options: ModelScopeStandinOptions = {}): Promise<ModelScopeStandin> {
  const calls: ModelScopeStandinCall[] = [];
  const scripts = new FaultScripts<ModelScopeStep>();
  const limiter = options.rateLimitPerSecond ? new SlidingWindowLimiter(options.rateLimitPerSecond) : undefined;
  const tasks = new Map<string, Task>();
  const quota = options.dailyQuota ?? 2000;
  let used = 0;
  let counter = 0;
  let baseURL = '';

  const quotaHeaders = (): Record<string, string> => ({
    'modelscope-ratelimit-requests-limit': String(quota),
    'modelscope-ratelimit-requests-remaining': String(Math.max(0, quota - used)),
    'modelscope-ratelimit-model-requests-limit': String(Math.min(quota, 500)),
    'modelscope-ratelimit-model-requests-remaining': String(Math.max(0, Math.min(quota, 500) - used)),
  });

  function record(
    req: IncomingMessage,
    partial: Partial<ModelScopeStandinCall> & Pick<ModelScopeStandinCall, 'kind'>,
  ): ModelScopeStandinCall {
    const call: ModelScopeStandinCall = {
      model: '',
      prompt: '',
      imageCount: 0,
      imageTypes: [],
      imageSizes: [],
      fields: {},
      authorization: String(req.headers.authorization ?? ''),
      status: 200,
      at: Date.now(),
      ...partial,
    };
    calls.push(call);
    return call;
  }

  async function handleSubmit(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: Record<string, unknown>;
    try {
      body = JSON.parse((await readBody(req)).toString('utf8')) as Record<string, unknown>;
    } catch {
      return sendJson(res, 400, msError('Request body is not valid JSON.'));
    }
    const urls = (Array.isArray(body.image_url) ? body.image_url : body.image_url ? [body.image_url] : []).map(String);
    const decoded = await Promise.all(
      urls.map(async (url) => {
        const m = /^data:([^;,]+);base64,(.*)$/s.exec(url);
        if (m) return { type: m[1]!, data: Buffer.from(m[2]!, 'base64') };
        const fetched = await fetch(url)
          .then(async (r) => (r.ok ? Buffer.from(await r.arrayBuffer()) : undefined))
          .catch(() => undefined);
        return { type: 'url', data: fetched };
      }),
    );
    const metas = await Promise.all(
      decoded.map((d) =>
        d.data
          ? sharp(d.data)
              .metadata()
              .catch(() => undefined)
          : undefined,
      ),
    );
    const { model, prompt, image_url: _images, ...fields } = body;
    const call = record(req, {
      kind: 'submit',
      model: String(model ?? ''),
      prompt: String(prompt ?? ''),
      imageCount: urls.length,
      imageTypes: decoded.map((d) => d.type),
      imageSizes: metas.map((m) => ({ width: m?.width ?? 0, height: m?.height ?? 0 })),
      fields,
      asyncMode: String(req.headers['x-modelscope-async-mode'] ?? ''),
    });
    const reply = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      call.status = status;
      sendJson(res, status, payload, { ...quotaHeaders(), ...headers });
    };
    if (!/^Bearer \S+/.test(call.authorization))
      return reply(401, msError('Authentication failed: missing or invalid token.', 'Unauthorized'));
    if (limiter && !limiter.admit())
      return reply(429, msError('Request rate increased too quickly (stand-in).', 'Throttling'), { 'retry-after': '1' });
    if (used >= quota)
      return reply(429, msError("You have exceeded today's quota for API-Inference. Please try again tomorrow.", 'QuotaExceeded'));
    const step = scripts.next(call.prompt);
    if (options.latencyMs) await sleep(options.latencyMs);
    if (step && 'status' in step) {
      call.status = step.status;
      return sendStep(res, step, msError(`scripted ${step.status}`), quotaHeaders());
    }
    if (call.asyncMode !== 'true')
      return reply(400, msError('This model only supports asynchronous calls: set the header X-ModelScope-Async-Mode: true.'));
    if (!call.model) return reply(400, msError('Missing required parameter: model.'));
    if (!call.prompt) return reply(400, msError('Missing required parameter: prompt.'));
    if (decoded.some((d, i) => !d.data || !metas[i])) return reply(400, msError('Invalid image_url: the image could not be read.'));

    let output: Buffer;
    if (decoded[0]?.data) output = await sharp(decoded[0].data).negate({ alpha: false }).png().toBuffer();
    else {
      const [w, h] = /^(\d+)x(\d+)$/
        .exec(String(fields.size ?? ''))
        ?.slice(1)
        .map(Number) ?? [64, 64];
      const hue = [...call.prompt].reduce((a, c) => (a * 31 + c.charCodeAt(0)) % 360, 7);
      output = await sharp({
        create: { width: Math.min(w!, 256), height: Math.min(h!, 256), channels: 3, background: `hsl(${hue}, 70%, 50%)` },
      })
        .png()
        .toBuffer();
    }
    used++;
    const id = `standin-task-${++counter}`;
    const task: Task = { id, prompt: call.prompt, polls: 0, pollsUntilDone: options.pollsUntilDone ?? 2, output };
    if (step && step.task === 'FAILED') task.failure = step.message ?? 'Task failed.';
    if (step && step.task === 'SLOW') task.pollsUntilDone = step.polls ?? 10;
    tasks.set(id, task);
    call.taskId = id;
    reply(200, { task_id: id, request_id: `standin-req-${counter}` });
  }

  function handlePoll(req: IncomingMessage, res: ServerResponse, id: string): void {
    const task = tasks.get(id);
    const call = record(req, {
      kind: 'poll',
      taskId: id,
      prompt: task?.prompt ?? '',
      taskType: String(req.headers['x-modelscope-task-type'] ?? ''),
    });
    const reply = (status: number, payload: unknown) => {
      call.status = status;
      sendJson(res, status, payload, quotaHeaders());
    };
    if (!/^Bearer \S+/.test(call.authorization))
      return reply(401, msError('Authentication failed: missing or invalid token.', 'Unauthorized'));
    if (call.taskType !== 'image_generation') return reply(400, msError('Missing header X-ModelScope-Task-Type.'));
    if (!task) return reply(404, msError(`Task ${id} not found.`, 'NotFound'));
    task.polls++;
    const requestId = `standin-poll-${task.polls}`;
    if (task.polls <= task.pollsUntilDone) {
      return reply(200, { request_id: requestId, task_id: id, task_status: task.polls === 1 ? 'PENDING' : 'RUNNING' });
    }
    if (task.failure) return reply(200, { request_id: requestId, task_id: id, task_status: 'FAILED', errors: { message: task.failure } });
    reply(200, { request_id: requestId, task_id: id, task_status: 'SUCCEED', output_images: [`${baseURL}/outputs/${id}.png`] });
  }

  function handleDownload(req: IncomingMessage, res: ServerResponse, id: string): void {
    const task = tasks.get(id);
    const call = record(req, { kind: 'download', taskId: id, prompt: task?.prompt ?? '' });
    if (!task?.output || task.failure) {
      call.status = 404;
      return sendJson(res, 404, msError('Not found', 'NotFound'));
    }
    res.writeHead(200, { 'content-type': 'image/png' });
    res.end(task.output);
  }

  const { server, port } = await listenOnLoopback((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    const taskMatch = /^\/v1\/tasks\/([^/]+)$/.exec(path);
    const outputMatch = /^\/outputs\/([^/]+)\.png$/.exec(path);
    if (req.method === 'POST' && path === '/v1/images/generations') {
      handleSubmit(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, msError(`stand-in failure: ${(err as Error).message}`, 'InternalError'));
      });
      return;
    }
    if (req.method === 'GET' && taskMatch) return handlePoll(req, res, decodeURIComponent(taskMatch[1]!));
    if (req.method === 'GET' && outputMatch) return handleDownload(req, res, decodeURIComponent(outputMatch[1]!));
    sendJson(res, 404, msError(`Not found: ${req.method} ${path}`, 'NotFound'));
  }, options.port);
  const controls = standinControls(calls, scripts, server);
  baseURL = `http://127.0.0.1:${port}`;

  return {
    baseURL,
    ...controls,
  };
}
