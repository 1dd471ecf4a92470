import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp, { type Sharp } from 'sharp';

// A local stand-in for OpenAI's Images API (`POST /v1/images/edits`, multipart, and
// `POST /v1/images/generations`), used by the tests and by `atelier demo` when no OPENAI_API_KEY is
// set. It speaks the real wire format closely enough for the official SDK, rejects the classic client
// mistakes the real API rejects (uploads without an image MIME type, `response_format` for GPT image
// models, `input_fidelity` for models without it, a transparent background with jpeg, a mask of the
// wrong size, dall-e-2 inputs that are not one square RGBA PNG under 4 MB), returns real images (the
// first input, colour-inverted, in the requested output format), and injects scripted faults per
// prompt: 429 with Retry-After, 5xx, refusals, malformed bodies, delays; optionally a rate limit.

export interface FaultStep {
  status: number;
  /** JSON body (any status, 200 included); defaults to an OpenAI-shaped error for the status. */
  body?: unknown;
  /** Sent verbatim instead of `body` (malformed responses). */
  raw?: string;
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
  /** A 200 whose body is not JSON. */
  malformed: (): FaultStep => ({ status: 200, raw: '{"created": 17, "data": [{"b64_json": "iVBOR' }),
  /** A response that takes this long (longer than the client's timeout: a timeout). */
  slow: (delayMs: number): FaultStep => ({ status: 500, delayMs, body: { error: { message: 'slow', type: 'server_error', param: null, code: null } } }),
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
  /** The mask, when one was sent. */
  mask?: { type: string; width: number; height: number; hasAlpha: boolean };
  /** Every other request field as sent (size, quality, background, output_format, input_fidelity, ...). */
  fields: Record<string, string>;
  /** What the caller sent as Authorization (the tests check keys go only here). */
  authorization: string;
  status: number;
  at: number;
}

/** What every stand-in offers the tests and benchmarks, whatever wire format it speaks. */
export interface Standin<Call, Step = FaultStep> {
  /** Base URL to give the provider's SDK or adapter. */
  baseURL: string;
  calls: Call[];
  /** Requests whose prompt contains `match` get `steps` in order, then succeed (or repeat them all). */
  script(match: string, steps: Step[], options?: { repeat?: boolean }): void;
  callsFor(match: string): Call[];
  close(): Promise<void>;
}

/** Options every stand-in takes. */
export interface StandinOptions {
  port?: number;
  /** Added to every response, to look like a real model. */
  latencyMs?: number;
  /** Above this many requests in any sliding second: the provider's 429 with a one-second retry. */
  rateLimitPerSecond?: number;
}

/** Base URL ends in /v1. */
export type OpenAIStandin = Standin<StandinCall>;
export type OpenAIStandinOptions = StandinOptions;

interface Script<S> {
  match: string;
  steps: S[];
  repeat: boolean;
  served: number;
}

/** Requests admitted in the last second; `admit()` is false above the rate (that request is not counted). */
export class SlidingWindowLimiter {
  private readonly times: number[] = [];
  constructor(private readonly perSecond: number) {}
  admit(now = Date.now()): boolean {
    while (this.times.length && this.times[0]! <= now - 1000) this.times.shift();
    if (this.times.length >= this.perSecond) return false;
    this.times.push(now);
    return true;
  }
}

/** Scripted faults per prompt substring, shared by the stand-ins. */
export class FaultScripts<S = FaultStep> {
  private readonly scripts: Script<S>[] = [];
  add(match: string, steps: S[], options: { repeat?: boolean } = {}): void {
    this.scripts.push({ match, steps, repeat: options.repeat ?? false, served: 0 });
  }
  /** The next step for this prompt, if any (consumes it). */
  next(prompt: string): S | undefined {
    const script = this.scripts.find((s) => prompt.includes(s.match));
    if (!script) return undefined;
    return script.repeat ? script.steps[script.served++ % script.steps.length] : script.steps[script.served++];
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

/** Sends a scripted step (after its delay); the caller records the status. */
export async function sendStep(res: ServerResponse, step: FaultStep, defaultBody: unknown, headers: Record<string, string> = {}): Promise<void> {
  if (step.delayMs) await sleep(step.delayMs);
  if (res.destroyed) return;
  if (step.raw !== undefined) {
    res.writeHead(step.status, { 'content-type': 'application/json', ...headers, ...(step.headers ?? {}) });
    res.end(step.raw);
    return;
  }
  sendJson(res, step.status, step.body ?? defaultBody, { ...headers, ...(step.headers ?? {}) });
}

export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export function closeServer(server: ReturnType<typeof createServer>): Promise<void> {
  return new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

const GPT_IMAGE = /^(gpt-image|chatgpt-image)/;
/** GPT image models that take input_fidelity (not the mini, not gpt-image-2 and later). */
const HAS_INPUT_FIDELITY = /^(gpt-image-1(\.5)?(-\d{4}-\d{2}-\d{2})?|chatgpt-image-latest)$/;
const MB = 1024 * 1024;

function errorBody(message: string, code: string | null = null, param: string | null = null) {
  return { error: { message, type: 'invalid_request_error', param, code } };
}

function imagesResponse(images: Buffer[], meta: { size: string; quality: string; background: string; outputFormat: string }, inputImages: number) {
  return {
    created: Math.floor(Date.now() / 1000),
    background: meta.background,
    data: images.map((img) => ({ b64_json: img.toString('base64') })),
    output_format: meta.outputFormat,
    quality: meta.quality,
    size: meta.size,
    usage: {
      input_tokens: 50 + inputImages * 323,
      input_tokens_details: { image_tokens: inputImages * 323, text_tokens: 50 },
      output_tokens: 1056 * images.length,
      total_tokens: 50 + inputImages * 323 + 1056 * images.length,
    },
  };
}

/** Validates the optional fields like the real API; returns an error body or undefined. */
function checkFields(model: string, f: Record<string, string>, kind: 'edit' | 'generate'): ReturnType<typeof errorBody> | undefined {
  const dalle2 = model === 'dall-e-2';
  if (GPT_IMAGE.test(model) && f.response_format !== undefined) {
    return errorBody("Unknown parameter: 'response_format'.", 'unknown_parameter', 'response_format');
  }
  if (f.input_fidelity !== undefined) {
    if (kind === 'generate') return errorBody("Unknown parameter: 'input_fidelity'.", 'unknown_parameter', 'input_fidelity');
    if (!HAS_INPUT_FIDELITY.test(model)) {
      return errorBody(`Invalid value for 'input_fidelity': the model ${model} does not support input_fidelity.`, 'unsupported_parameter', 'input_fidelity');
    }
    if (!['high', 'low'].includes(f.input_fidelity)) return errorBody(`Invalid value: '${f.input_fidelity}'. Supported values are: 'high' and 'low'.`, 'invalid_value', 'input_fidelity');
  }
  if (dalle2) {
    for (const field of ['background', 'output_format', 'output_compression', 'moderation']) {
      if (f[field] !== undefined) return errorBody(`Unknown parameter: '${field}'.`, 'unknown_parameter', field);
    }
    if (f.size !== undefined && !['256x256', '512x512', '1024x1024'].includes(f.size)) {
      return errorBody(`Invalid value: '${f.size}'. Supported values are: '256x256', '512x512', and '1024x1024'.`, 'invalid_value', 'size');
    }
    return undefined;
  }
  const format = f.output_format ?? 'png';
  if (!['png', 'jpeg', 'webp'].includes(format)) return errorBody(`Invalid value: '${format}'. Supported values are: 'png', 'jpeg', and 'webp'.`, 'invalid_value', 'output_format');
  if (f.background !== undefined && !['transparent', 'opaque', 'auto'].includes(f.background)) {
    return errorBody(`Invalid value: '${f.background}'. Supported values are: 'transparent', 'opaque', and 'auto'.`, 'invalid_value', 'background');
  }
  if (f.background === 'transparent' && format === 'jpeg') {
    return errorBody('Transparent background is not supported for the jpeg output format. Use png or webp.', 'invalid_value', 'background');
  }
  if (f.output_compression !== undefined) {
    const c = Number(f.output_compression);
    if (!Number.isInteger(c) || c < 0 || c > 100) return errorBody('Invalid value for output_compression: must be an integer from 0 to 100.', 'invalid_value', 'output_compression');
    if (format === 'png' && c < 100) return errorBody('Compression less than 100 is not supported for PNG output format.', 'invalid_value', 'output_compression');
  }
  if (f.moderation !== undefined && !['low', 'auto'].includes(f.moderation)) {
    return errorBody(`Invalid value: '${f.moderation}'. Supported values are: 'low' and 'auto'.`, 'invalid_value', 'moderation');
  }
  if (f.quality !== undefined && GPT_IMAGE.test(model) && !['low', 'medium', 'high', 'auto'].includes(f.quality)) {
    return errorBody(`Invalid value: '${f.quality}'. Supported values are: 'low', 'medium', 'high', and 'auto'.`, 'invalid_value', 'quality');
  }
  if (f.size !== undefined && GPT_IMAGE.test(model) && f.size !== 'auto') {
    const m = /^(\d+)x(\d+)$/.exec(f.size);
    const fixed = ['1024x1024', '1536x1024', '1024x1536'];
    const flexible = !/^gpt-image-1/.test(model) && model !== 'chatgpt-image-latest';
    const ok = fixed.includes(f.size) || (flexible && m && Number(m[1]) % 16 === 0 && Number(m[2]) % 16 === 0 && Math.max(Number(m[1]), Number(m[2])) <= 3840);
    if (!ok) return errorBody(`Invalid value: '${f.size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and 'auto'.`, 'invalid_value', 'size');
  }
  const n = Number(f.n ?? 1);
  if (!Number.isInteger(n) || n < 1 || n > 10) return errorBody(`Invalid value for n: ${f.n}. Must be between 1 and 10.`, 'invalid_value', 'n');
  return undefined;
}

async function encode(image: Sharp, format: string, compression: number | undefined): Promise<Buffer> {
  if (format === 'jpeg') return image.flatten({ background: '#ffffff' }).jpeg({ quality: compression ?? 90 }).toBuffer();
  if (format === 'webp') return image.webp({ quality: compression ?? 90 }).toBuffer();
  return image.png().toBuffer();
}

export async function startOpenAIStandin(options: OpenAIStandinOptions = {}): Promise<OpenAIStandin> {
  const calls: StandinCall[] = [];
  const scripts = new FaultScripts();
  const limiter = options.rateLimitPerSecond ? new SlidingWindowLimiter(options.rateLimitPerSecond) : undefined;
  const files = new Map<string, Buffer>();
  let requestCounter = 0;
  let baseURL = '';

  /** Common checks and faults after the call is recorded; true when a reply was sent. */
  async function gate(call: StandinCall, reply: Reply, res: ServerResponse): Promise<boolean> {
    if (!call.authorization.startsWith('Bearer ') || call.authorization.length <= 'Bearer '.length) {
      reply(401, errorBody("You didn't provide an API key.", 'invalid_api_key'));
      return true;
    }
    if (limiter && !limiter.admit()) {
      reply(429, { error: { message: 'Rate limit reached for requests per second (stand-in). Please try again later.', type: 'requests', param: null, code: 'rate_limit_exceeded' } }, { 'retry-after': '1' });
      return true;
    }
    const step = scripts.next(call.prompt);
    if (options.latencyMs) await sleep(options.latencyMs);
    if (!step) return false;
    call.status = step.status;
    await sendStep(res, step, errorBody(`scripted ${step.status}`), { 'x-request-id': `req_standin_${requestCounter}` });
    return true;
  }

  type Reply = (status: number, body: unknown, headers?: Record<string, string>) => void;
  function replier(res: ServerResponse, call: StandinCall): Reply {
    const requestId = `req_standin_${++requestCounter}`;
    return (status, body, headers = {}) => {
      call.status = status;
      sendJson(res, status, body, { 'x-request-id': requestId, ...headers });
    };
  }

  async function respondWithImages(reply: Reply, model: string, f: Record<string, string>, images: Buffer[], inputImages: number): Promise<void> {
    if (model === 'dall-e-2' && f.response_format !== 'b64_json') {
      // dall-e-2's default: URLs (served here under /files/).
      const data = images.map((img) => {
        const id = `file_${files.size + 1}.png`;
        files.set(id, img);
        return { url: `${baseURL.replace(/\/v1$/, '')}/files/${id}` };
      });
      return reply(200, { created: Math.floor(Date.now() / 1000), data });
    }
    const outputFormat = model === 'dall-e-2' ? 'png' : (f.output_format ?? 'png');
    reply(200, imagesResponse(images, { size: f.size ?? 'auto', quality: f.quality ?? 'auto', background: f.background === 'transparent' ? 'transparent' : 'opaque', outputFormat }, inputImages));
  }

  async function handleEdit(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const authorization = String(req.headers.authorization ?? '');
    const raw = await readBody(req);
    let form: FormData;
    try {
      form = await new Response(raw, { headers: { 'content-type': String(req.headers['content-type'] ?? '') } }).formData();
    } catch {
      return sendJson(res, 400, errorBody('Invalid multipart body; expected multipart/form-data.'));
    }
    const fields: Record<string, string> = {};
    for (const [key, value] of form.entries()) if (typeof value === 'string' && key !== 'prompt') fields[key] = value;
    const model = String(form.get('model') ?? '');
    const prompt = String(form.get('prompt') ?? '');
    const uploads = [...form.getAll('image'), ...form.getAll('image[]')].flatMap((v) => (typeof v === 'string' ? [] : [v]));
    const buffers = await Promise.all(uploads.map(async (f) => Buffer.from(await f.arrayBuffer())));
    const metas = await Promise.all(buffers.map((b) => sharp(b).metadata().catch(() => undefined)));
    const maskUpload = form.get('mask');
    const maskFile = maskUpload && typeof maskUpload !== 'string' ? maskUpload : undefined;
    const maskBytes = maskFile ? Buffer.from(await maskFile.arrayBuffer()) : undefined;
    const maskMeta = maskBytes ? await sharp(maskBytes).metadata().catch(() => undefined) : undefined;
    const call: StandinCall = {
      path: '/v1/images/edits',
      model,
      prompt,
      n: Number(form.get('n') ?? 1),
      imageCount: uploads.length,
      imageTypes: uploads.map((f) => f.type),
      imageSizes: metas.map((m) => ({ width: m?.width ?? 0, height: m?.height ?? 0 })),
      ...(maskFile ? { mask: { type: maskFile.type, width: maskMeta?.width ?? 0, height: maskMeta?.height ?? 0, hasAlpha: maskMeta?.hasAlpha ?? false } } : {}),
      fields,
      authorization,
      status: 200,
      at: Date.now(),
    };
    calls.push(call);
    const reply = replier(res, call);

    if (await gate(call, reply, res)) return;
    if (!model) return reply(400, errorBody("Missing required parameter: 'model'.", 'missing_required_parameter', 'model'));
    if (!prompt) return reply(400, errorBody("Missing required parameter: 'prompt'.", 'missing_required_parameter', 'prompt'));
    if (uploads.length === 0) return reply(400, errorBody("Missing required parameter: 'image'.", 'missing_required_parameter', 'image'));
    const badType = uploads.find((f) => !['image/png', 'image/jpeg', 'image/webp'].includes(f.type));
    if (badType) {
      return reply(400, errorBody(`Invalid file 'image': unsupported mimetype ('${badType.type || 'application/octet-stream'}'). Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'.`, 'invalid_image_file', 'image'));
    }
    const invalid = checkFields(model, fields, 'edit');
    if (invalid) return reply(400, invalid);
    if (GPT_IMAGE.test(model) && uploads.length > 16) return reply(400, errorBody('Too many images: at most 16 are supported.', 'invalid_value', 'image'));
    const first = metas[0];
    if (!first) return reply(400, errorBody('Invalid image file or mode for image 1, please check your image file.', 'invalid_image_file', 'image'));
    if (maskFile) {
      if (maskFile.type !== 'image/png' || maskMeta?.format !== 'png') return reply(400, errorBody("Invalid file 'mask': the mask must be a PNG image.", 'invalid_image_file', 'mask'));
      if (maskMeta.width !== first.width || maskMeta.height !== first.height) {
        return reply(400, errorBody('Invalid mask image: the mask and the image must have the same dimensions.', 'invalid_image_file', 'mask'));
      }
      if (!maskMeta.hasAlpha) return reply(400, errorBody('Invalid mask image: the mask must have an alpha channel.', 'invalid_image_file', 'mask'));
    }
    if (model === 'dall-e-2') {
      if (uploads.length !== 1) return reply(400, errorBody('dall-e-2 takes exactly one image.', 'invalid_value', 'image'));
      if (first.format !== 'png' || buffers[0]!.length >= 4 * MB) return reply(400, errorBody('Uploaded image must be a PNG and less than 4 MB.', 'invalid_image_file', 'image'));
      if (first.width !== first.height) return reply(400, errorBody('Uploaded image must be square.', 'invalid_image_file', 'image'));
      if (!maskFile && !first.hasAlpha) return reply(400, errorBody("Invalid input image - format must be in ['RGBA', 'LA', 'L'], got RGB.", 'invalid_image_format', 'image'));
    }

    let output: Buffer;
    try {
      output = await encode(sharp(buffers[0]!).negate({ alpha: false }), model === 'dall-e-2' ? 'png' : (fields.output_format ?? 'png'), fields.output_compression ? Number(fields.output_compression) : undefined);
    } catch {
      return reply(400, errorBody('Invalid image file or mode for image 1, please check your image file.', 'invalid_image_file', 'image'));
    }
    await respondWithImages(reply, model, fields, Array(call.n).fill(output), uploads.length);
  }

  async function handleGeneration(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const authorization = String(req.headers.authorization ?? '');
    let body: Record<string, unknown>;
    try {
      body = JSON.parse((await readBody(req)).toString('utf8')) as Record<string, unknown>;
    } catch {
      return sendJson(res, 400, errorBody('We could not parse the JSON body of your request.'));
    }
    const model = String(body.model ?? '');
    const prompt = String(body.prompt ?? '');
    const fields: Record<string, string> = {};
    for (const [key, value] of Object.entries(body)) if (key !== 'prompt' && value !== undefined && value !== null) fields[key] = String(value);
    const call: StandinCall = { path: '/v1/images/generations', model, prompt, n: Number(body.n ?? 1), imageCount: 0, imageTypes: [], imageSizes: [], fields, authorization, status: 200, at: Date.now() };
    calls.push(call);
    const reply = replier(res, call);
    if (await gate(call, reply, res)) return;
    if (!prompt) return reply(400, errorBody("Missing required parameter: 'prompt'.", 'missing_required_parameter', 'prompt'));
    const invalid = checkFields(model || 'dall-e-2', fields, 'generate');
    if (invalid) return reply(400, invalid);
    const [w, h] = /^(\d+)x(\d+)$/.exec(String(body.size ?? ''))?.slice(1).map(Number) ?? [64, 64];
    // A colour derived from the prompt, so different prompts give different images.
    const hue = [...prompt].reduce((a, c) => (a * 31 + c.charCodeAt(0)) % 360, 7);
    const format = model === 'dall-e-2' ? 'png' : (fields.output_format ?? 'png');
    const image = await encode(sharp({ create: { width: w!, height: h!, channels: 3, background: `hsl(${hue}, 70%, 50%)` } }), format, fields.output_compression ? Number(fields.output_compression) : undefined);
    await respondWithImages(reply, model || 'dall-e-2', fields, Array(call.n).fill(image), 0);
  }

  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (req.method === 'GET' && path.startsWith('/files/')) {
      const file = files.get(path.slice('/files/'.length));
      if (!file) return sendJson(res, 404, errorBody('No such file'));
      res.writeHead(200, { 'content-type': 'image/png' });
      return res.end(file);
    }
    const handler = req.method === 'POST' ? { '/v1/images/edits': handleEdit, '/v1/images/generations': handleGeneration }[path] : undefined;
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
  baseURL = `http://127.0.0.1:${port}/v1`;

  return {
    baseURL,
    calls,
    script(match, steps, scriptOptions = {}) {
      scripts.add(match, steps, scriptOptions);
    },
    callsFor(match) {
      return calls.filter((c) => c.prompt.includes(match));
    },
    close: () => closeServer(server),
  };
}
