import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp from 'sharp';

// A local stand-in for OpenAI's Images API (`POST /v1/images/edits`, multipart), used by the tests
// and by `atelier demo` when no OPENAI_API_KEY is set. It speaks the real wire format closely enough
// for the official SDK, rejects the classic client mistakes the real API rejects (uploads without an
// image MIME type, `response_format` for GPT image models), returns real images (the first input,
// colour-inverted), and injects scripted faults per prompt: 429 with Retry-After, 5xx, refusals.

export interface FaultStep {
  status: number;
  /** JSON error body; defaults to an OpenAI-shaped error for the status. */
  body?: unknown;
  headers?: Record<string, string>;
  delayMs?: number;
}

export const faults = {
  rateLimited: (retryAfterSeconds = 1): FaultStep => ({
    status: 429,
    headers: { 'retry-after': String(retryAfterSeconds) },
    body: { error: { message: 'Rate limit reached for images per minute. Please try again later.', type: 'requests', param: null, code: 'rate_limit_exceeded' } },
  }),
  serverError: (): FaultStep => ({
    status: 500,
    body: { error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } },
  }),
  moderationBlocked: (): FaultStep => ({
    status: 400,
    body: {
      error: {
        message: 'Your request was rejected by the safety system. If you believe this is an error, contact us.',
        type: 'image_generation_user_error',
        param: null,
        code: 'moderation_blocked',
        moderation_details: { moderation_stage: 'input', categories: ['illicit'] },
      },
    },
  }),
  insufficientQuota: (): FaultStep => ({
    status: 429,
    body: { error: { message: 'You exceeded your current quota, please check your plan and billing details.', type: 'insufficient_quota', param: null, code: 'insufficient_quota' } },
  }),
};

export interface StandinCall {
  path: '/v1/images/edits' | '/v1/images/generations';
  model: string;
  prompt: string;
  /** Images asked for (`n`). */
  n: number;
  imageCount: number;
  imageTypes: string[];
  /** Decoded sizes of the input images. */
  imageSizes: { width: number; height: number }[];
  /** What the caller sent as Authorization (the tests check keys go only here). */
  authorization: string;
  status: number;
  at: number;
}

export interface OpenAIStandin {
  /** Base URL to give the SDK (ends in /v1). */
  baseURL: string;
  calls: StandinCall[];
  /** Requests whose prompt contains `match` get `steps` in order, then succeed (or repeat them all). */
  script(match: string, steps: FaultStep[], options?: { repeat?: boolean }): void;
  callsFor(match: string): StandinCall[];
  close(): Promise<void>;
}

export interface OpenAIStandinOptions {
  port?: number;
  /** Added to every response, to look like a real model. */
  latencyMs?: number;
}

interface Script {
  match: string;
  steps: FaultStep[];
  repeat: boolean;
  served: number;
}

const GPT_IMAGE = /^(gpt-image|chatgpt-image)/;

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function errorBody(message: string, code: string | null = null, param: string | null = null) {
  return { error: { message, type: 'invalid_request_error', param, code } };
}

function imagesResponse(images: Buffer[], size: string, quality: string, inputImages: number) {
  return {
    created: Math.floor(Date.now() / 1000),
    background: 'opaque',
    data: images.map((img) => ({ b64_json: img.toString('base64') })),
    output_format: 'png',
    quality,
    size,
    usage: {
      input_tokens: 50 + inputImages * 323,
      input_tokens_details: { image_tokens: inputImages * 323, text_tokens: 50 },
      output_tokens: 1056 * images.length,
      total_tokens: 50 + inputImages * 323 + 1056 * images.length,
    },
  };
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function startOpenAIStandin(options: OpenAIStandinOptions = {}): Promise<OpenAIStandin> {
  const calls: StandinCall[] = [];
  const scripts: Script[] = [];
  let requestCounter = 0;

  async function handleEdit(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = `req_standin_${++requestCounter}`;
    const authorization = String(req.headers.authorization ?? '');
    const raw = await readBody(req);
    let form: FormData;
    try {
      form = await new Response(raw, { headers: { 'content-type': String(req.headers['content-type'] ?? '') } }).formData();
    } catch {
      return sendJson(res, 400, errorBody('Invalid multipart body; expected multipart/form-data.'));
    }
    const model = String(form.get('model') ?? '');
    const prompt = String(form.get('prompt') ?? '');
    const files = [...form.getAll('image'), ...form.getAll('image[]')].flatMap((v) => (typeof v === 'string' ? [] : [v]));
    const buffers = await Promise.all(files.map(async (f) => Buffer.from(await f.arrayBuffer())));
    const imageSizes = await Promise.all(
      buffers.map((b) =>
        sharp(b)
          .metadata()
          .then((m) => ({ width: m.width ?? 0, height: m.height ?? 0 }))
          .catch(() => ({ width: 0, height: 0 })),
      ),
    );
    const n = Number(form.get('n') ?? 1);
    const call: StandinCall = {
      path: '/v1/images/edits',
      model,
      prompt,
      n,
      imageCount: files.length,
      imageTypes: files.map((f) => f.type),
      imageSizes,
      authorization,
      status: 200,
      at: Date.now(),
    };
    calls.push(call);
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      call.status = status;
      sendJson(res, status, body, { 'x-request-id': requestId, ...headers });
    };

    if (!authorization.startsWith('Bearer ') || authorization.length <= 'Bearer '.length) {
      return reply(401, errorBody("You didn't provide an API key.", 'invalid_api_key'));
    }
    if (!model) return reply(400, errorBody("Missing required parameter: 'model'.", 'missing_required_parameter', 'model'));
    if (!prompt) return reply(400, errorBody("Missing required parameter: 'prompt'.", 'missing_required_parameter', 'prompt'));
    if (files.length === 0) return reply(400, errorBody("Missing required parameter: 'image'.", 'missing_required_parameter', 'image'));
    if (GPT_IMAGE.test(model) && form.has('response_format')) {
      return reply(400, errorBody("Unknown parameter: 'response_format'.", 'unknown_parameter', 'response_format'));
    }
    const badType = files.find((f) => !['image/png', 'image/jpeg', 'image/webp'].includes(f.type));
    if (badType) {
      return reply(400, errorBody(`Invalid file 'image': unsupported mimetype ('${badType.type || 'application/octet-stream'}'). Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'.`, 'invalid_image_file', 'image'));
    }

    if (await scripted(prompt, reply)) return;

    let output: Buffer;
    try {
      output = await sharp(buffers[0]!).negate({ alpha: false }).png().toBuffer();
    } catch {
      return reply(400, errorBody('Invalid image file or mode for image 1, please check your image file.', 'invalid_image_file', 'image'));
    }
    reply(200, imagesResponse(Array(n).fill(output), String(form.get('size') ?? 'auto'), String(form.get('quality') ?? 'auto'), files.length));
  }

  /** Serves the prompt's next scripted fault, if any; true when it did. */
  async function scripted(prompt: string, reply: (status: number, body: unknown, headers?: Record<string, string>) => void): Promise<boolean> {
    const script = scripts.find((s) => prompt.includes(s.match));
    const step = script ? (script.repeat ? script.steps[script.served++ % script.steps.length] : script.steps[script.served++]) : undefined;
    if (options.latencyMs) await sleep(options.latencyMs);
    if (!step) return false;
    if (step.delayMs) await sleep(step.delayMs);
    reply(step.status, step.body ?? errorBody(`scripted ${step.status}`), step.headers ?? {});
    return true;
  }

  async function handleGeneration(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = `req_standin_${++requestCounter}`;
    const authorization = String(req.headers.authorization ?? '');
    let body: Record<string, unknown>;
    try {
      body = JSON.parse((await readBody(req)).toString('utf8')) as Record<string, unknown>;
    } catch {
      return sendJson(res, 400, errorBody('We could not parse the JSON body of your request.'));
    }
    const model = String(body.model ?? '');
    const prompt = String(body.prompt ?? '');
    const n = Number(body.n ?? 1);
    const call: StandinCall = { path: '/v1/images/generations', model, prompt, n, imageCount: 0, imageTypes: [], imageSizes: [], authorization, status: 200, at: Date.now() };
    calls.push(call);
    const reply = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      call.status = status;
      sendJson(res, status, payload, { 'x-request-id': requestId, ...headers });
    };
    if (!authorization.startsWith('Bearer ') || authorization.length <= 'Bearer '.length) {
      return reply(401, errorBody("You didn't provide an API key.", 'invalid_api_key'));
    }
    if (!prompt) return reply(400, errorBody("Missing required parameter: 'prompt'.", 'missing_required_parameter', 'prompt'));
    if (GPT_IMAGE.test(model) && body.response_format !== undefined) {
      return reply(400, errorBody("Unknown parameter: 'response_format'.", 'unknown_parameter', 'response_format'));
    }
    if (await scripted(prompt, reply)) return;
    const [w, h] = /^(\d+)x(\d+)$/.exec(String(body.size ?? ''))?.slice(1).map(Number) ?? [64, 64];
    // A colour derived from the prompt, so different prompts give different images.
    const hue = [...prompt].reduce((a, c) => (a * 31 + c.charCodeAt(0)) % 360, 7);
    const image = await sharp({ create: { width: w!, height: h!, channels: 3, background: `hsl(${hue}, 70%, 50%)` } }).png().toBuffer();
    reply(200, imagesResponse(Array(n).fill(image), String(body.size ?? 'auto'), String(body.quality ?? 'auto'), 0));
  }

  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    const handler = req.method === 'POST' ? { '/v1/images/edits': handleEdit, '/v1/images/generations': handleGeneration }[path ?? ''] : undefined;
    if (handler) {
      handler(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, errorBody(`stand-in failure: ${(err as Error).message}`));
      });
      return;
    }
    sendJson(res, 404, errorBody(`Invalid URL (${req.method} ${path})`));
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    calls,
    script(match, steps, scriptOptions = {}) {
      scripts.push({ match, steps, repeat: scriptOptions.repeat ?? false, served: 0 });
    },
    callsFor(match) {
      return calls.filter((c) => c.prompt.includes(match));
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
