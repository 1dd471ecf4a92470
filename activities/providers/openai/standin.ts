import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp, { type Sharp } from 'sharp';
import { createOpenAIBatchApi, type OpenAIBatchApi, type OpenAIBatchOptions } from './standinBatch';
import {
  FaultScripts,
  listenOnLoopback,
  openAIErrorBody,
  readBody,
  sendJson,
  sendStep,
  SlidingWindowLimiter,
  standinControls,
  type FaultStep,
  type Standin,
  type StandinOptions,
} from '../../../standins/server';

export type { FaultStep, Standin, StandinOptions } from '../../../standins/server';

// The other stand-ins import these from here.
export { readBody, sendJson };

const errorBody = openAIErrorBody;

// A local stand-in for OpenAI's Images API (`POST /v1/images/edits`, multipart, and
// `POST /v1/images/generations`) and its model list (`GET /v1/models`), used by the tests and by
// `atelier demo` when no OPENAI_API_KEY is set. It speaks the real wire format closely enough for the
// official SDK, returns real images (the first input, colour-inverted, in the requested output
// format), and injects scripted faults per prompt: 429 with Retry-After, 5xx, refusals, malformed
// bodies, delays; optionally a rate limit.
//
// It is a contract: it rejects what the real API rejects, with the real error body
// `{error: {message, type, param, code}}`. Rules and their sources:
// - Retired model ids (dall-e-2, gpt-image-1; gpt-image-1.5, gpt-image-1-mini and
//   chatgpt-image-latest from their shutdown on 2026-12-01, by the stand-in's clock `now`): 404
//   `model_not_found`, "The model `X` does not exist or you do not have access to it." (the body
//   OpenAI answers for an unknown model; developers.openai.com/api/docs/deprecations for the dates).
//   Playing api.openai.com (the default) it serves only the ids OpenAI lists on that date
//   (`LISTED_MODELS`, dated snapshots included): any other id answers the same 404, as the real API
//   does for `gpt-imag-2` or `m`. Only with `compatible` does it play an OpenAI-compatible server (a
//   user's `--base-url`): then it serves any id, with GPT-image rules for any `gpt-image*` id, and
//   lists the ids `compatible.models` names.
// - Uploads: png/webp/jpeg only, each under 50 MB, at most 16 images (openapi.yaml
//   CreateImageEditRequest.image); without an image MIME type: 400 unsupported mimetype
//   (openai/openai-node#1468).
// - prompt: at most 32,000 characters: 400 `string_above_max_length` (openapi.yaml; the message is
//   the API's usual length error).
// - mask: PNG with alpha, same size as the first image, under 4 MB (openapi.yaml
//   CreateImageEditRequest.mask).
// - `response_format` is rejected for GPT image models (openai-node images.ts: dall-e-2 only).
// - `input_fidelity`: gpt-image-1.5 and chatgpt-image-latest only (gpt-image-1-mini rejects it;
//   gpt-image-2 answers 400 `invalid_input_fidelity_model`, vulca-org/vulca-visual-control-sdk#12).
// - `size`: gpt-image-1.5 family: 1024x1024, 1536x1024, 1024x1536, auto. gpt-image-2 and later: both
//   sides divisible by 16, aspect 1:3 to 3:1, at most 3840 px a side (openai-node images.ts), total
//   pixels 655,360 to 8,294,400 (lobehub/lobehub#14039).
// - `quality`: low, medium, high, auto; gpt-image-2.5 and 2.6 also xhigh and max (OpenAI's 2.6 model
//   page; docs.comfy.org OpenAIGPTImageNodeV3 for 2.5).
// - `complexity` (low, medium, high): gpt-image-2.6 only; other models answer 400 unknown_parameter
//   (OpenAI's images/edits reference, updated 2026-11-11).
// - transparent background needs png or webp; output_compression 0-100 and not below 100 for png;
//   `n` 1-10; moderation low or auto.

export const faults = {
  rateLimited: (retryAfterSeconds = 1): FaultStep => ({
    status: 429,
    headers: { 'retry-after': String(retryAfterSeconds) },
    body: {
      error: {
        message: 'Rate limit reached for images per minute. Please try again later.',
        type: 'requests',
        param: null,
        code: 'rate_limit_exceeded',
      },
    },
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
    body: {
      error: {
        message: 'You exceeded your current quota, please check your plan and billing details.',
        type: 'insufficient_quota',
        param: null,
        code: 'insufficient_quota',
      },
    },
  }),
  /** A 200 whose body is not JSON. */
  malformed: (): FaultStep => ({ status: 200, raw: '{"created": 17, "data": [{"b64_json": "iVBOR' }),
  /** A response that takes this long (longer than the client's timeout: a timeout). */
  slow: (delayMs: number): FaultStep => ({
    status: 500,
    delayMs,
    body: { error: { message: 'slow', type: 'server_error', param: null, code: null } },
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
  /** The mask, when one was sent. */
  mask?: { type: string; width: number; height: number; hasAlpha: boolean };
  /** Every other request field as sent (size, quality, background, output_format, input_fidelity, ...). */
  fields: Record<string, string>;
  /** What the caller sent as Authorization (the tests check keys go only here). */
  authorization: string;
  /** Executed as a line of a batch (activities/providers/openai/standinBatch.ts), not called directly. */
  viaBatch?: boolean;
  status: number;
  at: number;
}

/** Base URL ends in /v1. */
export interface OpenAIStandin extends Standin<StandinCall> {
  /** The Files and Batch APIs (`/v1/files`, `/v1/batches`): their state and counters. */
  batches: OpenAIBatchApi;
}
export interface OpenAIStandinOptions extends StandinOptions {
  /** The stand-in's clock for model shutdowns (default: the real date). */
  now?: () => Date;
  /** Serve Azure OpenAI's URL shape and auth instead of OpenAI's (activities/providers/azure/standin.ts). */
  azure?: AzureFlavour;
  /** The Files and Batch APIs' timing and faults (activities/providers/openai/standinBatch.ts). */
  batch?: OpenAIBatchOptions;
  /**
   * Play an OpenAI-compatible server (a user's `--base-url`) instead of api.openai.com: any model id
   * is served; `models` is what its `GET /v1/models` lists (default: nothing, an empty list).
   */
  compatible?: { models?: string[] };
}

/** Azure OpenAI: deployments (name -> the OpenAI model it serves) and the api-versions accepted. */
export interface AzureFlavour {
  deployments: Record<string, string>;
  apiVersions: readonly string[];
}

const GPT_IMAGE = /^(gpt-image|chatgpt-image)/;
/** GPT image models that take input_fidelity (not the mini, not gpt-image-2 and later). */
const HAS_INPUT_FIDELITY = /^(gpt-image-1(\.5)?(-\d{4}-\d{2}-\d{2})?|chatgpt-image-latest)$/;
/** gpt-image-2 and later: flexible sizes. */
const FLEXIBLE_SIZE = /^gpt-image-[2-9]/;
/** gpt-image-2.5 and 2.6: quality xhigh and max. */
const EXTRA_QUALITIES = /^gpt-image-2\.[56]/;
/** gpt-image-2.6: `complexity`. */
const HAS_COMPLEXITY = /^gpt-image-2\.6/;
const MB = 1024 * 1024;
const MAX_PROMPT_CHARS = 32_000;

/** Model ids and the day (YYYY-MM-DD, UTC) from which the API no longer serves them. */
const SHUTDOWN: [RegExp, string][] = [
  // nextcloud/integration_openai#370 (checked 2026-12-07).
  [/^dall-e-[23]$/, '2026-05-12'],
  [/^gpt-image-1(-\d{4}-\d{2}-\d{2})?$/, '2026-10-23'],
  [/^(gpt-image-1\.5|gpt-image-1-mini)(-\d{4}-\d{2}-\d{2})?$/, '2026-12-01'],
  [/^chatgpt-image-latest$/, '2026-12-01'],
];

/** The shutdown day of an id, when one is announced. */
function shutdownOf(model: string): string | undefined {
  return SHUTDOWN.find(([test]) => test.test(model))?.[1];
}

/**
 * Whether OpenAI still serves this model id on this date: listed and not shut down. `compatible`:
 * an OpenAI-compatible server, which serves whatever the caller names (only OpenAI's shutdowns apply).
 */
export function openAIServes(model: string, now: Date, compatible = false): boolean {
  const today = now.toISOString().slice(0, 10);
  const shutdown = shutdownOf(model);
  if (shutdown && today >= shutdown) return false;
  return compatible || LISTED_MODELS.some((m) => m.id === model);
}

/**
 * Models the stand-in's `GET /v1/models` lists, image models with the chat models the tests use (the
 * real list mixes them). Dated snapshots are listed ids of their own, as OpenAI lists them.
 */
const LISTED_MODELS: { id: string; created: number }[] = [
  { id: 'dall-e-2', created: 1698798177 },
  { id: 'dall-e-3', created: 1698785189 },
  { id: 'gpt-image-1', created: 1745517030 },
  { id: 'gpt-image-1.5', created: 1765843200 },
  { id: 'gpt-image-1.5-2025-12-16', created: 1765843200 },
  { id: 'gpt-image-1-mini', created: 1759708800 },
  { id: 'chatgpt-image-latest', created: 1765843200 },
  { id: 'gpt-image-2', created: 1776729600 },
  { id: 'gpt-image-2-2026-04-21', created: 1776729600 },
  { id: 'gpt-image-2.5-flare', created: 1788825600 },
  { id: 'gpt-image-2.5-sunburst', created: 1788825600 },
  { id: 'gpt-image-2.6-flare', created: 1793000000 },
  { id: 'gpt-image-2.6-sunburst', created: 1793000000 },
  { id: 'gpt-image-2.5-flare-2026-09-08', created: 1788825600 },
  { id: 'gpt-image-2.5-sunburst-2026-09-08', created: 1788825600 },
  { id: 'gpt-4.1-mini', created: 1744316542 },
  { id: 'gpt-4.1', created: 1744316542 },
  { id: 'gpt-5.2', created: 1765000000 },
];

function modelNotFound(model: string) {
  return {
    error: {
      message: `The model \`${model}\` does not exist or you do not have access to it.`,
      type: 'invalid_request_error',
      param: null,
      code: 'model_not_found',
    },
  };
}

/** Azure's own errors (auth, routing, deployments): `{error: {code, message}}`, code often the status as a string. */
/** Azure's answer for a deployment the resource does not have (Azure OpenAI troubleshooting pages). */
export function deploymentNotFound() {
  return azureError(
    'DeploymentNotFound',
    'The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.',
  );
}

export function azureError(code: string, message: string) {
  return { error: { code, message } };
}

function imagesResponse(
  images: Buffer[],
  meta: { size: string; quality: string; background: string; outputFormat: string },
  inputImages: number,
) {
  return {
    created: Math.floor(Date.now() / 1000),
    background: meta.background,
    data: images.map((img) => ({ b64_json: img.toString('base64') })),
    output_format: meta.outputFormat,
    quality: meta.quality,
    size: meta.size,
    // gpt-image-2 and later also bill some text output (output_tokens_details.text_tokens).
    usage: {
      input_tokens: 50 + inputImages * 323,
      input_tokens_details: { image_tokens: inputImages * 323, text_tokens: 50 },
      output_tokens: 1056 * images.length + 24,
      output_tokens_details: { image_tokens: 1056 * images.length, text_tokens: 24 },
      total_tokens: 50 + inputImages * 323 + 1056 * images.length + 24,
    },
  };
}

/** Validates the optional fields like the real API; returns an error body or undefined. */
function checkFields(model: string, f: Record<string, string>, kind: 'edit' | 'generate'): ReturnType<typeof errorBody> | undefined {
  if (GPT_IMAGE.test(model) && f.response_format !== undefined) {
    return errorBody("Unknown parameter: 'response_format'.", 'unknown_parameter', 'response_format');
  }
  if (f.input_fidelity !== undefined) {
    if (kind === 'generate') return errorBody("Unknown parameter: 'input_fidelity'.", 'unknown_parameter', 'input_fidelity');
    if (FLEXIBLE_SIZE.test(model)) {
      return errorBody(`input_fidelity is not supported for model '${model}'.`, 'invalid_input_fidelity_model', 'input_fidelity');
    }
    if (GPT_IMAGE.test(model) && !HAS_INPUT_FIDELITY.test(model)) {
      return errorBody(
        `Invalid value for 'input_fidelity': the model ${model} does not support input_fidelity.`,
        'unsupported_parameter',
        'input_fidelity',
      );
    }
    if (!['high', 'low'].includes(f.input_fidelity))
      return errorBody(`Invalid value: '${f.input_fidelity}'. Supported values are: 'high' and 'low'.`, 'invalid_value', 'input_fidelity');
  }
  const format = f.output_format ?? 'png';
  if (!['png', 'jpeg', 'webp'].includes(format))
    return errorBody(`Invalid value: '${format}'. Supported values are: 'png', 'jpeg', and 'webp'.`, 'invalid_value', 'output_format');
  if (f.background !== undefined && !['transparent', 'opaque', 'auto'].includes(f.background)) {
    return errorBody(
      `Invalid value: '${f.background}'. Supported values are: 'transparent', 'opaque', and 'auto'.`,
      'invalid_value',
      'background',
    );
  }
  if (f.background === 'transparent' && format === 'jpeg') {
    return errorBody('Transparent background is not supported for the jpeg output format. Use png or webp.', 'invalid_value', 'background');
  }
  if (f.output_compression !== undefined) {
    const c = Number(f.output_compression);
    if (!Number.isInteger(c) || c < 0 || c > 100)
      return errorBody('Invalid value for output_compression: must be an integer from 0 to 100.', 'invalid_value', 'output_compression');
    if (format === 'png' && c < 100)
      return errorBody('Compression less than 100 is not supported for PNG output format.', 'invalid_value', 'output_compression');
  }
  if (f.moderation !== undefined && !['low', 'auto'].includes(f.moderation)) {
    return errorBody(`Invalid value: '${f.moderation}'. Supported values are: 'low' and 'auto'.`, 'invalid_value', 'moderation');
  }
  if (f.complexity !== undefined) {
    if (!HAS_COMPLEXITY.test(model)) return errorBody("Unknown parameter: 'complexity'.", 'unknown_parameter', 'complexity');
    if (!['low', 'medium', 'high'].includes(f.complexity))
      return errorBody(
        `Invalid value: '${f.complexity}'. Supported values are: 'low', 'medium', and 'high'.`,
        'invalid_value',
        'complexity',
      );
  }
  if (f.quality !== undefined && GPT_IMAGE.test(model)) {
    const qualities = ['low', 'medium', 'high', 'auto', ...(EXTRA_QUALITIES.test(model) ? ['xhigh', 'max'] : [])];
    if (!qualities.includes(f.quality))
      return errorBody(
        `Invalid value: '${f.quality}'. Supported values are: ${qualities.map((q) => `'${q}'`).join(', ')}.`,
        'invalid_value',
        'quality',
      );
  }
  if (f.size !== undefined && GPT_IMAGE.test(model) && f.size !== 'auto') {
    const fixed = ['1024x1024', '1536x1024', '1024x1536'];
    if (!FLEXIBLE_SIZE.test(model)) {
      if (!fixed.includes(f.size))
        return errorBody(
          `Invalid value: '${f.size}'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and 'auto'.`,
          'invalid_value',
          'size',
        );
    } else {
      const m = /^(\d+)x(\d+)$/.exec(f.size);
      const [w, h] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
      const why = !m
        ? 'must be WIDTHxHEIGHT or auto'
        : w % 16 || h % 16
          ? 'width and height must both be divisible by 16'
          : Math.max(w, h) > 3840
            ? 'the longest edge must be at most 3840 px'
            : Math.max(w, h) > 3 * Math.min(w, h)
              ? 'the aspect ratio must be between 1:3 and 3:1'
              : w * h < 655_360 || w * h > 8_294_400
                ? 'the total number of pixels must be between 655,360 and 8,294,400'
                : undefined;
      if (why) return errorBody(`Invalid value: '${f.size}'. Invalid size for ${model}: ${why}.`, 'invalid_value', 'size');
    }
  }
  const n = Number(f.n ?? 1);
  if (!Number.isInteger(n) || n < 1 || n > 10)
    return errorBody(`Invalid value for n: ${f.n}. Must be between 1 and 10.`, 'invalid_value', 'n');
  return undefined;
}

/** The prompt rule shared by edits and generations. */
function checkPromptLength(prompt: string): ReturnType<typeof errorBody> | undefined {
  if (prompt.length <= MAX_PROMPT_CHARS) return undefined;
  return errorBody(
    `Invalid 'prompt': string too long. Expected a string with maximum length ${MAX_PROMPT_CHARS}, but got a string with length ${prompt.length} instead.`,
    'string_above_max_length',
    'prompt',
  );
}

async function encode(image: Sharp, format: string, compression: number | undefined): Promise<Buffer> {
  if (format === 'jpeg')
    return image
      .flatten({ background: '#ffffff' })
      .jpeg({ quality: compression ?? 90 })
      .toBuffer();
  if (format === 'webp') return image.webp({ quality: compression ?? 90 }).toBuffer();
  return image.png().toBuffer();
}

export async function startOpenAIStandin(options: OpenAIStandinOptions = {}): Promise<OpenAIStandin> {
  const calls: StandinCall[] = [];
  const scripts = new FaultScripts();
  const limiter = options.rateLimitPerSecond ? new SlidingWindowLimiter(options.rateLimitPerSecond) : undefined;
  const now = options.now ?? (() => new Date());
  const compatible = options.compatible !== undefined;
  let requestCounter = 0;
  let baseURL = '';
  const batchApi = createOpenAIBatchApi(() => baseURL, options.batch ?? {});

  /** Common checks and faults after the call is recorded; true when a reply was sent. */
  async function gate(call: StandinCall, reply: Reply, res: ServerResponse): Promise<boolean> {
    // Azure's api-key was checked by its router (azureRoute) before the body was read.
    if (!options.azure && (!call.authorization.startsWith('Bearer ') || call.authorization.length <= 'Bearer '.length)) {
      reply(401, errorBody("You didn't provide an API key.", 'invalid_api_key'));
      return true;
    }
    if (limiter && !limiter.admit()) {
      reply(
        429,
        {
          error: {
            message: 'Rate limit reached for requests per second (stand-in). Please try again later.',
            type: 'requests',
            param: null,
            code: 'rate_limit_exceeded',
          },
        },
        { 'retry-after': '1' },
      );
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

  async function respondWithImages(reply: Reply, f: Record<string, string>, images: Buffer[], inputImages: number): Promise<void> {
    reply(
      200,
      imagesResponse(
        images,
        {
          size: f.size ?? 'auto',
          quality: f.quality ?? 'auto',
          background: f.background === 'transparent' ? 'transparent' : 'opaque',
          outputFormat: f.output_format ?? 'png',
        },
        inputImages,
      ),
    );
  }

  /** An uploaded or referenced image: its declared type and bytes. */
  interface EditImage {
    type: string;
    bytes: Buffer;
  }

  /**
   * The JSON form of an edit (what batch lines must use): `images: [{image_url} | {file_id}]`, `mask`
   * likewise; exactly one of the two per reference (openapi.yaml ImageRefParam). The stand-in
   * reads data URLs and files uploaded to it; it cannot fetch http(s) URLs (no network in tests).
   */
  function imageRef(ref: unknown, param: string): EditImage | ReturnType<typeof errorBody> {
    const r = (ref ?? {}) as { image_url?: unknown; file_id?: unknown };
    if ((r.image_url === undefined) === (r.file_id === undefined))
      return errorBody(`Invalid '${param}': provide exactly one of image_url or file_id.`, 'invalid_value', param);
    if (typeof r.file_id === 'string') {
      const file = batchApi.file(r.file_id);
      if (!file) return errorBody(`No such File object: ${r.file_id}`, null, param);
      // Image inputs are uploaded with purpose vision (or user_data); a batch input file is not an image.
      if (!['vision', 'user_data'].includes(file.purpose))
        return errorBody(
          `Invalid '${param}.file_id': the file ${r.file_id} has purpose '${file.purpose}'; image inputs need purpose 'vision' or 'user_data'.`,
          'invalid_value',
          param,
        );
      return {
        type: /\.jpe?g$/i.test(file.filename) ? 'image/jpeg' : /\.webp$/i.test(file.filename) ? 'image/webp' : 'image/png',
        bytes: file.bytes,
      };
    }
    const url = String(r.image_url);
    const m = /^data:([^;,]*)(;base64)?,(.*)$/s.exec(url);
    if (!m)
      return errorBody(
        `Invalid '${param}': the stand-in only reads base64 data URLs and file ids, got '${url.slice(0, 40)}'.`,
        'invalid_image_url',
        param,
      );
    if (url.length > 20_971_520)
      return errorBody(
        `Invalid '${param}.image_url': string too long. Expected a string with maximum length 20971520, but got a string with length ${url.length} instead.`,
        'string_above_max_length',
        param,
      );
    return { type: m[1] ?? '', bytes: m[2] ? Buffer.from(m[3] ?? '', 'base64') : Buffer.from(decodeURIComponent(m[3] ?? ''), 'utf8') };
  }

  /** Reads an edit request, multipart (the SDK's images.edit) or JSON (batch lines, `images: [...]`). */
  async function readEdit(
    req: IncomingMessage,
    azureModel?: string,
  ): Promise<
    | { model: string; prompt: string; n: number; fields: Record<string, string>; uploads: EditImage[]; mask?: EditImage }
    | ReturnType<typeof errorBody>
  > {
    const raw = await readBody(req);
    const contentType = String(req.headers['content-type'] ?? '');
    if (/^application\/json/i.test(contentType)) {
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
      } catch {
        return errorBody('We could not parse the JSON body of your request.');
      }
      if (body.image !== undefined)
        return errorBody(
          "Unknown parameter: 'image'. JSON requests use 'images' (an array of image references).",
          'unknown_parameter',
          'image',
        );
      const uploads: EditImage[] = [];
      for (const [i, ref] of (Array.isArray(body.images) ? body.images : []).entries()) {
        const image = imageRef(ref, `images[${i}]`);
        if ('error' in image) return image;
        uploads.push(image);
      }
      let mask: EditImage | undefined;
      if (body.mask !== undefined) {
        const m = imageRef(body.mask, 'mask');
        if ('error' in m) return m;
        mask = m;
      }
      const fields: Record<string, string> = {};
      for (const [key, value] of Object.entries(body))
        if (!['prompt', 'images', 'mask'].includes(key) && value !== undefined && value !== null) fields[key] = String(value);
      return {
        model: azureModel ?? String(body.model ?? ''),
        prompt: String(body.prompt ?? ''),
        n: Number(body.n ?? 1),
        fields,
        uploads,
        ...(mask ? { mask } : {}),
      };
    }
    let form: FormData;
    try {
      form = await new Response(raw, { headers: { 'content-type': contentType } }).formData();
    } catch {
      return errorBody('Invalid multipart body; expected multipart/form-data.');
    }
    const fields: Record<string, string> = {};
    for (const [key, value] of form.entries()) if (typeof value === 'string' && key !== 'prompt') fields[key] = value;
    const files = [...form.getAll('image'), ...form.getAll('image[]')].flatMap((v) => (typeof v === 'string' ? [] : [v]));
    const uploads = await Promise.all(files.map(async (f) => ({ type: f.type, bytes: Buffer.from(await f.arrayBuffer()) })));
    const maskUpload = form.get('mask');
    const mask =
      maskUpload && typeof maskUpload !== 'string'
        ? { type: maskUpload.type, bytes: Buffer.from(await maskUpload.arrayBuffer()) }
        : undefined;
    // Azure: the deployment decides the model; a `model` field in the body is not used.
    return {
      model: azureModel ?? String(form.get('model') ?? ''),
      prompt: String(form.get('prompt') ?? ''),
      n: Number(form.get('n') ?? 1),
      fields,
      uploads,
      ...(mask ? { mask } : {}),
    };
  }

  async function handleEdit(req: IncomingMessage, res: ServerResponse, azureModel?: string, v1?: Record<string, string>): Promise<void> {
    const azure = azureModel !== undefined || v1 !== undefined;
    const authorization = azure ? azureAuthorization(req) : String(req.headers.authorization ?? '');
    const edit = await readEdit(req, azureModel);
    if ('error' in edit) return sendJson(res, 400, edit);
    const { prompt, fields } = edit;
    // Azure's v1 API: the body's model names the deployment.
    const model = v1 ? v1[edit.model] : edit.model;
    if (model === undefined) return sendJson(res, 404, deploymentNotFound());
    const uploads = edit.uploads;
    const buffers = uploads.map((u) => u.bytes);
    const metas = await Promise.all(
      buffers.map((b) =>
        sharp(b)
          .metadata()
          .catch(() => undefined),
      ),
    );
    const maskFile = edit.mask;
    const maskBytes = maskFile?.bytes;
    const maskMeta = maskBytes
      ? await sharp(maskBytes)
          .metadata()
          .catch(() => undefined)
      : undefined;
    const call: StandinCall = {
      path: '/v1/images/edits',
      model,
      prompt,
      n: edit.n,
      imageCount: uploads.length,
      imageTypes: uploads.map((f) => f.type),
      imageSizes: metas.map((m) => ({ width: m?.width ?? 0, height: m?.height ?? 0 })),
      ...(maskFile
        ? {
            mask: {
              type: maskFile.type,
              width: maskMeta?.width ?? 0,
              height: maskMeta?.height ?? 0,
              hasAlpha: maskMeta?.hasAlpha ?? false,
            },
          }
        : {}),
      fields,
      authorization,
      ...(req.headers['x-standin-batch'] ? { viaBatch: true } : {}),
      status: 200,
      at: Date.now(),
    };
    calls.push(call);
    const reply = replier(res, call);

    if (await gate(call, reply, res)) return;
    if (!model) return reply(400, errorBody("Missing required parameter: 'model'.", 'missing_required_parameter', 'model'));
    // Azure: the deployment existing is the check (Azure retires models on its own schedule).
    if (!azure && !openAIServes(model, now(), compatible)) return reply(404, modelNotFound(model));
    if (!prompt) return reply(400, errorBody("Missing required parameter: 'prompt'.", 'missing_required_parameter', 'prompt'));
    const longPrompt = checkPromptLength(prompt);
    if (longPrompt) return reply(400, longPrompt);
    if (uploads.length === 0) return reply(400, errorBody("Missing required parameter: 'image'.", 'missing_required_parameter', 'image'));
    const badType = uploads.find((f) => !['image/png', 'image/jpeg', 'image/webp'].includes(f.type));
    if (badType) {
      return reply(
        400,
        errorBody(
          `Invalid file 'image': unsupported mimetype ('${badType.type || 'application/octet-stream'}'). Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'.`,
          'invalid_image_file',
          'image',
        ),
      );
    }
    const invalid = checkFields(model, fields, 'edit');
    if (invalid) return reply(400, invalid);
    if (uploads.length > 16)
      return reply(
        400,
        errorBody(`Invalid 'image': too many images. Expected at most 16, but got ${uploads.length}.`, 'invalid_value', 'image'),
      );
    const tooBig = buffers.findIndex((b) => b.length >= 50 * MB);
    if (tooBig >= 0)
      return reply(400, errorBody(`Invalid file 'image': image ${tooBig + 1} is larger than 50 MB.`, 'invalid_image_file', 'image'));
    const first = metas[0];
    if (!first)
      return reply(400, errorBody('Invalid image file or mode for image 1, please check your image file.', 'invalid_image_file', 'image'));
    if (maskFile) {
      if (maskFile.type !== 'image/png' || maskMeta?.format !== 'png')
        return reply(400, errorBody("Invalid file 'mask': the mask must be a PNG image.", 'invalid_image_file', 'mask'));
      if (maskMeta.width !== first.width || maskMeta.height !== first.height) {
        return reply(
          400,
          errorBody('Invalid mask image: the mask and the image must have the same dimensions.', 'invalid_image_file', 'mask'),
        );
      }
      if (!maskMeta.hasAlpha)
        return reply(400, errorBody('Invalid mask image: the mask must have an alpha channel.', 'invalid_image_file', 'mask'));
      if (maskBytes!.length >= 4 * MB)
        return reply(400, errorBody("Invalid file 'mask': the mask must be less than 4 MB.", 'invalid_image_file', 'mask'));
    }

    let output: Buffer;
    try {
      output = await encode(
        sharp(buffers[0]!).negate({ alpha: false }),
        fields.output_format ?? 'png',
        fields.output_compression ? Number(fields.output_compression) : undefined,
      );
    } catch {
      return reply(400, errorBody('Invalid image file or mode for image 1, please check your image file.', 'invalid_image_file', 'image'));
    }
    await respondWithImages(reply, fields, Array(call.n).fill(output), uploads.length);
  }

  async function handleGeneration(
    req: IncomingMessage,
    res: ServerResponse,
    azureModel?: string,
    v1?: Record<string, string>,
  ): Promise<void> {
    const azure = azureModel !== undefined || v1 !== undefined;
    const authorization = azure ? azureAuthorization(req) : String(req.headers.authorization ?? '');
    let body: Record<string, unknown>;
    try {
      body = JSON.parse((await readBody(req)).toString('utf8')) as Record<string, unknown>;
    } catch {
      return sendJson(res, 400, errorBody('We could not parse the JSON body of your request.'));
    }
    const model = v1 ? v1[String(body.model ?? '')] : (azureModel ?? String(body.model ?? ''));
    if (model === undefined) return sendJson(res, 404, deploymentNotFound());
    const prompt = String(body.prompt ?? '');
    const fields: Record<string, string> = {};
    for (const [key, value] of Object.entries(body))
      if (key !== 'prompt' && value !== undefined && value !== null) fields[key] = String(value);
    const call: StandinCall = {
      path: '/v1/images/generations',
      model,
      prompt,
      n: Number(body.n ?? 1),
      imageCount: 0,
      imageTypes: [],
      imageSizes: [],
      fields,
      authorization,
      ...(req.headers['x-standin-batch'] ? { viaBatch: true } : {}),
      status: 200,
      at: Date.now(),
    };
    calls.push(call);
    const reply = replier(res, call);
    if (await gate(call, reply, res)) return;
    // Without a model the API picks dall-e-2 (openai-node images.ts), which is no longer served.
    if (!azure && !openAIServes(model || 'dall-e-2', now(), compatible)) return reply(404, modelNotFound(model || 'dall-e-2'));
    if (!prompt) return reply(400, errorBody("Missing required parameter: 'prompt'.", 'missing_required_parameter', 'prompt'));
    const longPrompt = checkPromptLength(prompt);
    if (longPrompt) return reply(400, longPrompt);
    const invalid = checkFields(model, fields, 'generate');
    if (invalid) return reply(400, invalid);
    const [w, h] = /^(\d+)x(\d+)$/
      .exec(String(body.size ?? ''))
      ?.slice(1)
      .map(Number) ?? [64, 64];
    // A colour derived from the prompt, so different prompts give different images.
    const hue = [...prompt].reduce((a, c) => (a * 31 + c.charCodeAt(0)) % 360, 7);
    const format = fields.output_format ?? 'png';
    const image = await encode(
      sharp({ create: { width: w!, height: h!, channels: 3, background: `hsl(${hue}, 70%, 50%)` } }),
      format,
      fields.output_compression ? Number(fields.output_compression) : undefined,
    );
    await respondWithImages(reply, fields, Array(call.n).fill(image), 0);
  }

  /** Azure's key as the call record shows it: the `api-key` header, else the v1 API's Bearer. */
  function azureAuthorization(req: IncomingMessage): string {
    return req.headers['api-key'] !== undefined ? `api-key ${String(req.headers['api-key'])}` : String(req.headers.authorization ?? '');
  }

  const accessDenied = () =>
    azureError(
      '401',
      'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.',
    );

  /**
   * Azure OpenAI's data plane: `POST /openai/deployments/{deployment}/images/{edits,generations}
   * ?api-version=...` with an `api-key` header; the deployment's model then gets OpenAI's rules.
   * And the v1 API (GA since August 2025: learn.microsoft.com "Azure OpenAI in Azure AI Foundry
   * Models v1 API", api-version-lifecycle): `POST /openai/v1/images/{edits,generations}` with no
   * api-version (`preview` opts into preview features), the deployment in the body's `model`, the
   * key as `api-key` or `Authorization: Bearer`.
   */
  function azureRoute(azure: AzureFlavour, req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://standin');
    const v1 = /^\/openai\/v1\/images\/(edits|generations)$/.exec(url.pathname);
    if (v1 && req.method === 'POST') {
      const version = url.searchParams.get('api-version');
      if (version !== null && version !== 'preview' && version !== 'latest')
        return sendJson(res, 400, azureError('BadRequest', 'API version not supported'));
      const bearer = /^Bearer \S+/.test(String(req.headers.authorization ?? ''));
      if (!req.headers['api-key'] && !bearer) return sendJson(res, 401, accessDenied());
      const handler = v1[1] === 'edits' ? handleEdit : handleGeneration;
      return void handler(req, res, undefined, azure.deployments).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, azureError('InternalServerError', `stand-in failure: ${(err as Error).message}`));
      });
    }
    const match = /^\/openai\/deployments\/([^/]+)\/images\/(edits|generations)$/.exec(url.pathname);
    if (req.method !== 'POST' || !match) return sendJson(res, 404, azureError('404', 'Resource not found'));
    const version = url.searchParams.get('api-version');
    if (!version) return sendJson(res, 404, azureError('404', 'Resource not found'));
    if (!azure.apiVersions.includes(version)) return sendJson(res, 400, azureError('BadRequest', 'API version not supported'));
    if (!req.headers['api-key']) return sendJson(res, 401, accessDenied());
    const model = azure.deployments[decodeURIComponent(match[1]!)];
    if (!model) return sendJson(res, 404, deploymentNotFound());
    const handler = match[2] === 'edits' ? handleEdit : handleGeneration;
    handler(req, res, model).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, azureError('InternalServerError', `stand-in failure: ${(err as Error).message}`));
    });
  }

  const { server, port } = await listenOnLoopback((req, res) => {
    if (options.azure) return azureRoute(options.azure, req, res);
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (req.method === 'GET' && (path === '/v1/models' || path.startsWith('/v1/models/'))) {
      const authorization = String(req.headers.authorization ?? '');
      if (!authorization.startsWith('Bearer ') || authorization.length <= 'Bearer '.length)
        return sendJson(res, 401, errorBody("You didn't provide an API key.", 'invalid_api_key'));
      // The real list carries `shutdown_date` (unix seconds) for a model with an announced shutdown.
      const listed = compatible ? (options.compatible?.models ?? []).map((id) => ({ id, created: 1765000000 })) : LISTED_MODELS;
      const served = listed
        .filter((m) => openAIServes(m.id, now(), compatible))
        .map((m) => {
          const shutdown = shutdownOf(m.id);
          return {
            id: m.id,
            object: 'model',
            created: m.created,
            owned_by: compatible ? 'organization-owner' : 'system',
            ...(shutdown ? { shutdown_date: Math.floor(Date.parse(`${shutdown}T00:00:00Z`) / 1000) } : {}),
          };
        });
      if (path === '/v1/models') return sendJson(res, 200, { object: 'list', data: served });
      const id = decodeURIComponent(path.slice('/v1/models/'.length));
      const one = served.find((m) => m.id === id);
      return one ? sendJson(res, 200, one) : sendJson(res, 404, modelNotFound(id));
    }
    if (batchApi.route(req, res, path)) return;
    const handler =
      req.method === 'POST' ? { '/v1/images/edits': handleEdit, '/v1/images/generations': handleGeneration }[path] : undefined;
    if (handler) {
      handler(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, errorBody(`stand-in failure: ${(err as Error).message}`));
      });
      return;
    }
    sendJson(res, 404, errorBody(`Invalid URL (${req.method} ${path})`));
  }, options.port);
  const controls = standinControls(calls, scripts, server);
  baseURL = `http://127.0.0.1:${port}/v1`;

  return {
    // Azure: the resource endpoint (the SDK adds /openai/deployments/...).
    baseURL: options.azure ? `http://127.0.0.1:${port}` : baseURL,
    batches: batchApi,
    ...controls,
    close: async () => {
      batchApi.stop();
      await controls.close();
    },
  };
}
