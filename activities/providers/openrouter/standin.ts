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

// A local stand-in for an OpenAI-compatible chat-completions server shaped like OpenRouter
// (`POST /api/v1/chat/completions`, also `/v1/chat/completions`), used through the real `openai`
// SDK. With `modalities` including "image" it answers like OpenRouter's image models: the message's
// `images[].image_url.url` holds a data URL (the first input image colour-inverted, or a solid colour
// for a text-only prompt) and usage carries `cost`. Without it, it answers as a text model: that is
// how prompt enhancement is tested (the rewrite is deterministic, see `rewrite`). Scripted faults per
// prompt substring (the last user message's text): 429 with Retry-After, 402 credits, 403
// moderation, 5xx, errors inside a 200 body, answers without an image, safety finish reasons,
// malformed bodies, delays; an optional rate limit answers 429 above R requests/s.
//
// It is a contract for the models in its catalogue (`OPENROUTER_MODELS`, served at
// `GET /api/v1/models` as OpenRouter serves it: text-output models by default, `?output_modalities=
// image|text,image|all` to filter; each with `architecture.{input,output}_modalities` and `pricing`
// as strings, openrouter.ai/docs/models): an image-only model asked for `modalities` that include
// "text" answers 404 "No endpoints found that support the requested output modalities: image, text"
// (HKUDS/DeepTutor#1348, BerriAI/litellm#34908); a model asked for an output modality it does not
// have answers the same 404 for what was asked. Playing openrouter.ai (the default) it serves only
// the catalogue's ids on the day (`now`): any other id, and an id OpenRouter stopped serving, answers
// OpenRouter's 400 `{"error":{"message":"<id> is not a valid model ID","code":400},"user_id":…}`
// (OpenRouterTeam/openrouter-examples#74, sipeed/picoclaw#199/#1790, RightNow-AI/openfang#697).
// Only with `compatible` does it play an OpenAI-compatible chat server (a prompt-enhancer or judge
// `--base-url`), which serves whatever id it is given (and has no Image API: 404 there).
//
// OpenRouter's dedicated Image API (openrouter.ai/docs/api/api-reference/images/generate-an-image and
// openrouter.ai/docs/guides/overview/multimodal/image-generation, providers-audit-2026-12 §1 [OR-img]):
// `GET /api/v1/images/models` lists each image model with `architecture` and `supported_parameters`
// (typed descriptors: `{type:"enum", values}`, `{type:"boolean"}`, ...; "an absent key means the
// parameter is unsupported"); `POST /api/v1/images` takes `model`, `prompt` (min 1 char), the
// normalised fields (aspect_ratio, resolution, quality, background, output_format,
// output_compression, seed, n, size) and `input_references` (at most 16 `{type:"image_url",
// image_url:{url}}`, data or http(s) URLs), and answers `{created, data:[{b64_json, media_type}],
// usage:{prompt_tokens, completion_tokens, total_tokens, cost}}`. A parameter the model does not list
// is rejected, not ignored (400; the message wording is the stand-in's), as is a value outside an
// enum. An id OpenRouter does not serve answers the chat endpoint's 400 "is not a valid model ID"; a
// served model without image output answers 404 "No endpoints found for <id>".

export type { FaultStep } from '../../../standins/server';

export interface OpenRouterModel {
  id: string;
  input: string[];
  output: string[];
  /** USD per token (prompt, completion) and per output image, as strings like OpenRouter's. */
  pricing: Record<string, string>;
  /** The day (YYYY-MM-DD, UTC) from which OpenRouter no longer lists or serves the id. */
  until?: string;
  /** Image API `supported_parameters` (image-output models; absent: none beyond model and prompt). */
  imageParams?: Record<string, ParamDescriptor>;
}

/** A typed capability descriptor of `GET /api/v1/images/models`. */
export type ParamDescriptor = { type: 'enum'; values: string[] } | { type: 'boolean' } | { type: 'integer'; min?: number; max?: number };

const RATIOS = ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'];
/** Gemini image models on the Image API: ratio and resolution tiers (512 ... 4K). */
const GEMINI_IMAGE_PARAMS: Record<string, ParamDescriptor> = {
  aspect_ratio: { type: 'enum', values: [...RATIOS, '1:4', '4:1', '1:8', '8:1'] },
  resolution: { type: 'enum', values: ['512', '1K', '2K', '4K'] },
};

/** The stand-in's catalogue (a sample of OpenRouter's, ids and modalities as listed there). */
export const OPENROUTER_MODELS: OpenRouterModel[] = [
  {
    id: 'google/gemini-2.5-flash-image',
    input: ['image', 'text'],
    output: ['image', 'text'],
    pricing: { prompt: '0.0000003', completion: '0.0000025', image: '0.00003' },
    imageParams: GEMINI_IMAGE_PARAMS,
  },
  // Google shut the Gemini 3 / 3.1 image previews on 2026-06-25 (providers-audit-2026-12 §0,
  // ai.google.dev/gemini-api/docs/deprecations); OpenRouter, which routes them to Google, lists the
  // GA ids since. Shut-down ids are not valid model ids from that day.
  {
    id: 'google/gemini-3-pro-image-preview',
    input: ['image', 'text'],
    output: ['image', 'text'],
    pricing: { prompt: '0.000002', completion: '0.000012', image: '0.00012' },
    imageParams: GEMINI_IMAGE_PARAMS,
    until: '2026-06-25',
  },
  {
    id: 'google/gemini-3.1-flash-image-preview',
    input: ['image', 'text'],
    output: ['image', 'text'],
    pricing: { prompt: '0.0000005', completion: '0.000003', image: '0.00006' },
    imageParams: GEMINI_IMAGE_PARAMS,
    until: '2026-06-25',
  },
  {
    id: 'google/gemini-3-pro-image',
    input: ['image', 'text'],
    output: ['image', 'text'],
    pricing: { prompt: '0.000002', completion: '0.000012', image: '0.00012' },
    imageParams: GEMINI_IMAGE_PARAMS,
  },
  {
    id: 'google/gemini-3.1-flash-image',
    input: ['image', 'text'],
    output: ['image', 'text'],
    pricing: { prompt: '0.0000005', completion: '0.000003', image: '0.00006' },
    imageParams: GEMINI_IMAGE_PARAMS,
  },
  {
    id: 'openai/gpt-5-image',
    input: ['image', 'text', 'file'],
    output: ['image', 'text'],
    pricing: { prompt: '0.00001', completion: '0.00001', image: '0.00004' },
    imageParams: { aspect_ratio: { type: 'enum', values: RATIOS } },
  },
  {
    id: 'openai/gpt-image-2',
    input: ['image', 'text'],
    output: ['image'],
    pricing: { prompt: '0.000005', completion: '0.00003', image: '0.000008' },
    imageParams: {
      aspect_ratio: { type: 'enum', values: RATIOS },
      quality: { type: 'enum', values: ['auto', 'low', 'medium', 'high'] },
      background: { type: 'enum', values: ['auto', 'transparent', 'opaque'] },
      output_format: { type: 'enum', values: ['png', 'jpeg', 'webp'] },
      output_compression: { type: 'integer', min: 0, max: 100 },
      n: { type: 'integer', min: 1, max: 10 },
    },
  },
  {
    id: 'bytedance-seed/seedream-4.5',
    input: ['image', 'text'],
    output: ['image'],
    pricing: { prompt: '0', completion: '0', image: '0.04' },
    imageParams: { resolution: { type: 'enum', values: ['1K', '2K', '4K'] }, seed: { type: 'boolean' } },
  },
  {
    id: 'black-forest-labs/flux.2-pro',
    input: ['image', 'text'],
    output: ['image'],
    pricing: { prompt: '0', completion: '0', image: '0.03' },
    imageParams: {
      aspect_ratio: { type: 'enum', values: RATIOS },
      resolution: { type: 'enum', values: ['1K', '2K'] },
      seed: { type: 'boolean' },
    },
  },
  {
    id: 'sourceful/riverflow-v2-pro',
    input: ['image', 'text'],
    output: ['image'],
    pricing: { prompt: '0', completion: '0', image: '0.05' },
    imageParams: { aspect_ratio: { type: 'enum', values: RATIOS } },
  },
  // Image-only under a name the adapter's name table does not know: only /api/v1/models tells.
  {
    id: 'acme/pixel-forge-1',
    input: ['image', 'text'],
    output: ['image'],
    pricing: { prompt: '0', completion: '0', image: '0.02' },
    imageParams: { aspect_ratio: { type: 'enum', values: RATIOS } },
  },
  {
    id: 'openai/gpt-4.1-mini',
    input: ['image', 'text', 'file'],
    output: ['text'],
    pricing: { prompt: '0.0000004', completion: '0.0000016' },
  },
  {
    id: 'google/gemini-2.5-flash',
    input: ['image', 'text', 'file', 'audio', 'video'],
    output: ['text'],
    pricing: { prompt: '0.0000003', completion: '0.0000025' },
  },
];

/** Whether OpenRouter serves this catalogue entry on this date. */
function servedOn(model: OpenRouterModel, now: Date): boolean {
  return !model.until || now.toISOString().slice(0, 10) < model.until;
}

/** OpenRouter's answer to a model id it does not serve (HTTP 400). */
export function notAValidModel(model: string) {
  return { error: { message: `${model} is not a valid model ID`, code: 400 }, user_id: 'user_standin' };
}

/** `GET /api/v1/models` body for an `output_modalities` query (default text). */
function modelsList(query: string | null, now: Date) {
  const wanted = (query ?? 'text').split(',').map((m) => m.trim());
  const served = OPENROUTER_MODELS.filter((m) => servedOn(m, now));
  const models = wanted.includes('all') ? served : served.filter((m) => m.output.some((o) => wanted.includes(o)));
  return {
    data: models.map((m) => ({
      id: m.id,
      canonical_slug: m.id,
      name: m.id,
      created: 1767225600,
      description: '',
      context_length: 32768,
      architecture: {
        modality: `${m.input.join('+')}->${m.output.join('+')}`,
        input_modalities: m.input,
        output_modalities: m.output,
        tokenizer: 'Other',
        instruct_type: null,
      },
      pricing: { request: '0', input_cache_read: '0', ...m.pricing },
      top_provider: { context_length: 32768, max_completion_tokens: null, is_moderated: false },
      per_request_limits: null,
      supported_parameters: ['seed', 'temperature'],
    })),
  };
}

/** `GET /api/v1/images/models`: the image-output models served on the day, with their parameters. */
function imageModelsList(now: Date) {
  return {
    data: OPENROUTER_MODELS.filter((m) => servedOn(m, now) && m.output.includes('image')).map((m) => ({
      id: m.id,
      name: m.id,
      description: '',
      created: 1767225600,
      architecture: { input_modalities: m.input, output_modalities: m.output },
      supported_parameters: m.imageParams ?? {},
      supports_streaming: false,
      endpoints: `/api/v1/images/models/${m.id}/endpoints`,
    })),
  };
}

/** The request fields of `POST /api/v1/images` besides model, prompt and input_references. */
const IMAGE_API_FIELDS = new Set([
  'aspect_ratio',
  'background',
  'n',
  'output_compression',
  'output_format',
  'quality',
  'resolution',
  'seed',
  'size',
]);

/** Why an Image API request's parameters are refused for this model (undefined: accepted). */
function imageParamProblem(model: OpenRouterModel, params: Record<string, unknown>): string | undefined {
  const unknown = Object.keys(params).filter((k) => !IMAGE_API_FIELDS.has(k));
  if (unknown.length) return `Unrecognized request field(s): ${unknown.join(', ')}`;
  const supported = model.imageParams ?? {};
  const unsupported = Object.keys(params).filter((k) => !(k in supported));
  if (unsupported.length) return `${model.id} does not support parameter(s): ${unsupported.join(', ')}`;
  for (const [key, value] of Object.entries(params)) {
    const d = supported[key]!;
    if (d.type === 'enum' && !d.values.includes(String(value)))
      return `Invalid value for ${key}: ${JSON.stringify(value)} (${model.id} accepts ${d.values.join(', ')})`;
    if (
      d.type === 'integer' &&
      (!Number.isInteger(value) || (d.min !== undefined && Number(value) < d.min) || (d.max !== undefined && Number(value) > d.max))
    )
      return `Invalid value for ${key}: ${JSON.stringify(value)}`;
    if (d.type === 'boolean' && key === 'seed' && !Number.isInteger(value)) return `Invalid value for seed: ${JSON.stringify(value)}`;
  }
  return undefined;
}

function orError(code: number, message: string, metadata?: Record<string, unknown>) {
  return { error: { code, message, ...(metadata ? { metadata } : {}) } };
}

function completion(
  model: string,
  message: Record<string, unknown>,
  extra: { finish?: string; native?: string; usage?: Record<string, unknown> } = {},
) {
  return {
    id: `gen-standin-${Math.random().toString(36).slice(2, 12)}`,
    provider: 'Standin',
    model,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    choices: [
      {
        index: 0,
        logprobs: null,
        finish_reason: extra.finish ?? 'stop',
        native_finish_reason: extra.native ?? 'STOP',
        message: { role: 'assistant', refusal: null, reasoning: null, ...message },
      },
    ],
    usage: extra.usage ?? { prompt_tokens: 12, completion_tokens: 8, total_tokens: 20, cost: 0.00001 },
  };
}

export const openrouterFaults = {
  rateLimited: (retryAfterSeconds = 1): FaultStep => ({
    status: 429,
    headers: { 'retry-after': String(retryAfterSeconds) },
    body: orError(429, 'Rate limit exceeded: free-models-per-min.', {
      headers: { 'X-RateLimit-Limit': '20', 'X-RateLimit-Remaining': '0' },
    }),
  }),
  insufficientCredits: (): FaultStep => ({
    status: 402,
    body: orError(
      402,
      'This request requires more credits, or fewer max_tokens. You requested up to 1290 tokens, but can only afford 100.',
    ),
  }),
  moderation: (): FaultStep => ({
    status: 403,
    body: orError(
      403,
      'google/gemini-2.5-flash-image requires moderation on Google AI Studio. Your input was flagged for "violence/graphic".',
      {
        reasons: ['violence/graphic'],
        flagged_input: '...',
        provider_name: 'Google AI Studio',
        model_slug: 'google/gemini-2.5-flash-image',
      },
    ),
  }),
  serverError: (status = 502): FaultStep => ({ status, body: orError(status, 'Provider returned error') }),
  /** HTTP 200 with an error instead of choices (OpenRouter relays some upstream failures so). */
  errorInBody: (code = 502): FaultStep => ({ status: 200, body: orError(code, 'Upstream error from Google: overloaded') }),
  badRequest: (message = 'Invalid request: messages must be a non-empty array'): FaultStep => ({
    status: 400,
    body: orError(400, message),
  }),
  /** HTTP 200, text and no image. */
  noImage: (text = "I'd be happy to help! Could you tell me more about what you want?"): FaultStep => ({
    status: 200,
    body: completion('standin', { content: text }),
  }),
  /** HTTP 200, no image, a safety finish. */
  contentFilter: (native = 'IMAGE_SAFETY'): FaultStep => ({
    status: 200,
    body: completion('standin', { content: '' }, { finish: 'content_filter', native }),
  }),
  malformed: (): FaultStep => ({ status: 200, raw: '{"id": "gen-1", "choices": [{"message": ' }),
  slow: (delayMs: number): FaultStep => ({ status: 502, delayMs, body: orError(502, 'slow') }),
};

export interface ChatStandinCall {
  /** Which API was called: chat completions (default) or the Image API (`POST /api/v1/images`). */
  endpoint?: 'images';
  model: string;
  /** Text of the last user message. */
  prompt: string;
  /** Text of the system message, if any. */
  system?: string;
  messages: number;
  imageCount: number;
  /** MIME types of the input images (from their data URLs). */
  imageTypes: string[];
  imageSizes: { width: number; height: number }[];
  modalities?: string[];
  imageConfig?: Record<string, unknown>;
  /** Other top-level fields sent (seed, temperature, ...). */
  extra: Record<string, unknown>;
  authorization: string;
  status: number;
  at: number;
}

/** Base URL for the SDK (ends in /api/v1). */
export interface ChatStandin extends Standin<ChatStandinCall> {
  /** How many times `GET /api/v1/models` was asked. */
  modelListCalls(): number;
  /** How many times `GET /api/v1/images/models` was asked. */
  imageModelListCalls(): number;
}

export interface ChatStandinOptions extends StandinOptions {
  /** Text-model answers (prompt enhancement); default `rewrite`. */
  answer?: (prompt: string, imageCount: number, system: string | undefined) => string;
  /**
   * Play an OpenAI-compatible chat server (a prompt-enhancer or judge `--base-url`) instead of
   * openrouter.ai: any model id is served.
   */
  compatible?: boolean;
  /** The day the stand-in plays (which catalogue ids are served); default the real clock. */
  now?: () => Date;
}

/** The stand-in's text answer: the instruction made explicit, deterministic for tests. */
export function rewrite(prompt: string, imageCount: number): string {
  const instruction = prompt.replace(/^[\s\S]*?Instruction:\s*/i, '').trim();
  const seen = imageCount ? ` (looking at ${imageCount} image${imageCount > 1 ? 's' : ''})` : '';
  return `Precisely: ${instruction}; keep everything else unchanged${seen}.`;
}

interface MessageIn {
  role?: string;
  content?: string | { type?: string; text?: string; image_url?: { url?: string } }[];
}

function textOf(message: MessageIn | undefined): string {
  if (!message) return '';
  if (typeof message.content === 'string') return message.content;
  return (message.content ?? [])
    .map((part) => (part.type === 'text' ? (part.text ?? '') : ''))
    .join(' ')
    .trim();
}

export async function startOpenRouterStandin(options: ChatStandinOptions = {}): Promise<ChatStandin> {
  const calls: ChatStandinCall[] = [];
  let modelListCalls = 0;
  let imageModelListCalls = 0;
  const scripts = new FaultScripts();
  const limiter = options.rateLimitPerSecond ? new SlidingWindowLimiter(options.rateLimitPerSecond) : undefined;
  const now = options.now ?? (() => new Date());

  type Reply = (status: number, payload: unknown, headers?: Record<string, string>) => void;

  /**
   * Records a call and gives the answers both endpoints give before their own checks (credentials,
   * the rate limit, a scripted step, a missing model). Returns how to reply, or undefined once answered.
   */
  async function admit(call: ChatStandinCall, authorization: string, res: ServerResponse): Promise<Reply | undefined> {
    calls.push(call);
    const reply: Reply = (status, payload, headers = {}) => {
      call.status = status;
      sendJson(res, status, payload, headers);
    };
    if (!authorization.startsWith('Bearer ') || authorization.length <= 'Bearer '.length)
      return void reply(401, orError(401, 'No auth credentials found'));
    if (limiter && !limiter.admit()) return void reply(429, orError(429, 'Rate limit exceeded (stand-in)'), { 'retry-after': '1' });
    const step = scripts.next(call.prompt);
    if (options.latencyMs) await sleep(options.latencyMs);
    if (step) {
      call.status = step.status;
      await sendStep(res, step, orError(step.status, `scripted ${step.status}`));
      return undefined;
    }
    if (!call.model) return void reply(400, orError(400, 'No model specified'));
    return reply;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const authorization = String(req.headers.authorization ?? '');
    let body: {
      model?: string;
      messages?: MessageIn[];
      modalities?: string[];
      image_config?: Record<string, unknown>;
      [key: string]: unknown;
    };
    try {
      body = JSON.parse((await readBody(req)).toString('utf8')) as typeof body;
    } catch {
      return sendJson(res, 400, orError(400, 'Invalid JSON in request body'));
    }
    const messages = Array.isArray(body.messages) ? body.messages : [];
    const lastUser = [...messages].reverse().find((m) => m.role === 'user');
    const system = messages.find((m) => m.role === 'system');
    const imageUrls = (Array.isArray(lastUser?.content) ? lastUser.content : []).flatMap((part) =>
      part.type === 'image_url' && part.image_url?.url ? [part.image_url.url] : [],
    );
    const decoded = imageUrls.map((url) => {
      const m = /^data:([^;,]+);base64,(.*)$/s.exec(url);
      return m ? { type: m[1]!, data: Buffer.from(m[2]!, 'base64') } : { type: 'url', data: undefined };
    });
    const metas = await Promise.all(
      decoded.map((d) =>
        d.data
          ? sharp(d.data)
              .metadata()
              .catch(() => undefined)
          : undefined,
      ),
    );
    const { model: _m, messages: _msgs, modalities, image_config, ...extra } = body;
    const call: ChatStandinCall = {
      model: String(body.model ?? ''),
      prompt: textOf(lastUser),
      ...(system ? { system: textOf(system) } : {}),
      messages: messages.length,
      imageCount: imageUrls.length,
      imageTypes: decoded.map((d) => d.type),
      imageSizes: metas.map((m) => ({ width: m?.width ?? 0, height: m?.height ?? 0 })),
      ...(modalities ? { modalities } : {}),
      ...(image_config ? { imageConfig: image_config } : {}),
      extra,
      authorization,
      status: 200,
      at: Date.now(),
    };
    const reply = await admit(call, authorization, res);
    if (!reply) return;
    const listed = OPENROUTER_MODELS.find((m) => m.id === call.model);
    if (!options.compatible && (!listed || !servedOn(listed, now()))) return reply(400, notAValidModel(call.model));
    if (messages.length === 0 || !lastUser) return reply(400, orError(400, 'Invalid request: messages must contain a user message'));
    // The GPT-5.x family (and o-series) takes no sampling parameters: OpenAI's 400 unsupported_value
    // (tmc/langchaingo#1355, johny-b/llmcomp#69), passed through for `openai/...` ids.
    if (/^(openai\/)?(gpt-5|gpt-6|o\d)/.test(call.model) && extra.temperature !== undefined && extra.temperature !== 1) {
      return reply(400, {
        error: {
          message: `Unsupported value: 'temperature' does not support ${String(extra.temperature)} with this model. Only the default (1) value is supported.`,
          type: 'invalid_request_error',
          param: 'temperature',
          code: 'unsupported_value',
        },
      });
    }
    // Structured output (OpenAI's chat completions reference): text, json_object, or json_schema
    // with a name and a schema; the answer is then the bare JSON document.
    const format = extra.response_format as { type?: unknown; json_schema?: { name?: unknown; schema?: unknown } } | undefined;
    if (format !== undefined) {
      const ok =
        format.type === 'text' ||
        format.type === 'json_object' ||
        (format.type === 'json_schema' && typeof format.json_schema?.name === 'string' && typeof format.json_schema.schema === 'object');
      if (!ok)
        return reply(
          400,
          orError(400, "Invalid parameter: 'response_format' must be text, json_object or json_schema with a name and a schema"),
        );
    }
    const known = listed;
    if (known) {
      const asked = Array.isArray(modalities) && modalities.length ? modalities : ['text'];
      if (asked.some((m) => !known.output.includes(m))) {
        return reply(404, orError(404, `No endpoints found that support the requested output modalities: ${asked.join(', ')}`));
      }
    }
    if (decoded.some((d) => d.data && !metas[decoded.indexOf(d)]))
      return reply(400, orError(400, 'Invalid image in image_url: could not decode'));

    const wantsImage = Array.isArray(modalities) && modalities.includes('image');
    if (!wantsImage) {
      const answer = (options.answer ?? rewrite)(call.prompt, call.imageCount, call.system);
      const text = format?.type === 'json_schema' ? answer.replace(/^```json\n([\s\S]*)\n```$/, '$1') : answer;
      return reply(
        200,
        completion(
          call.model,
          { content: text },
          {
            usage: {
              prompt_tokens: 40 + call.imageCount * 258,
              completion_tokens: 24,
              total_tokens: 64 + call.imageCount * 258,
              cost: 0.00002,
            },
          },
        ),
      );
    }
    const source = decoded[0]?.data;
    let output: Buffer;
    if (source) output = await sharp(source).negate({ alpha: false }).png().toBuffer();
    else {
      const ratio = String(image_config?.aspect_ratio ?? '1:1');
      const [w, h] = ratio.split(':').map(Number) as [number, number];
      const scale = 64 / Math.max(w || 1, h || 1);
      const hue = [...call.prompt].reduce((a, c) => (a * 31 + c.charCodeAt(0)) % 360, 7);
      output = await sharp({
        create: {
          width: Math.max(1, Math.round((w || 1) * scale)),
          height: Math.max(1, Math.round((h || 1) * scale)),
          channels: 3,
          background: `hsl(${hue}, 70%, 50%)`,
        },
      })
        .png()
        .toBuffer();
    }
    const promptTokens = 12 + call.imageCount * 258;
    reply(
      200,
      completion(
        call.model,
        {
          content: modalities.includes('text') ? 'Here is your edited image.' : null,
          images: [{ type: 'image_url', image_url: { url: `data:image/png;base64,${output.toString('base64')}` }, index: 0 }],
        },
        {
          usage: {
            prompt_tokens: promptTokens,
            completion_tokens: 1296,
            total_tokens: promptTokens + 1296,
            cost: 0.0387,
            prompt_tokens_details: { image_tokens: call.imageCount * 258 },
            completion_tokens_details: { image_tokens: 1290, reasoning_tokens: 0 },
          },
        },
      ),
    );
  }

  /** `POST /api/v1/images`, OpenRouter's Image API (see the header). */
  async function handleImages(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const authorization = String(req.headers.authorization ?? '');
    let body: { model?: unknown; prompt?: unknown; input_references?: unknown; [key: string]: unknown };
    try {
      body = JSON.parse((await readBody(req)).toString('utf8')) as typeof body;
    } catch {
      return sendJson(res, 400, orError(400, 'Invalid JSON in request body'));
    }
    const { model, prompt, input_references, ...params } = body;
    const refs = Array.isArray(input_references) ? (input_references as { type?: unknown; image_url?: { url?: unknown } }[]) : [];
    const decoded = refs.map((r) => {
      const m = /^data:([^;,]+);base64,(.*)$/s.exec(typeof r?.image_url?.url === 'string' ? r.image_url.url : '');
      return m ? { type: m[1]!, data: Buffer.from(m[2]!, 'base64') } : undefined;
    });
    const metas = await Promise.all(
      decoded.map((d) =>
        d
          ? sharp(d.data)
              .metadata()
              .catch(() => undefined)
          : undefined,
      ),
    );
    const call: ChatStandinCall = {
      endpoint: 'images',
      model: String(model ?? ''),
      prompt: typeof prompt === 'string' ? prompt : '',
      messages: 0,
      imageCount: refs.length,
      imageTypes: decoded.map((d) => d?.type ?? 'url'),
      imageSizes: metas.map((m) => ({ width: m?.width ?? 0, height: m?.height ?? 0 })),
      extra: params,
      authorization,
      status: 200,
      at: Date.now(),
    };
    const reply = await admit(call, authorization, res);
    if (!reply) return;
    if (!call.prompt) return reply(400, orError(400, 'Invalid request: prompt must be a non-empty string'));
    const listed = OPENROUTER_MODELS.find((m) => m.id === call.model);
    if (!listed || !servedOn(listed, now())) return reply(400, notAValidModel(call.model));
    if (!listed.output.includes('image')) return reply(404, orError(404, `No endpoints found for ${call.model}.`));
    if (input_references !== undefined && !Array.isArray(input_references))
      return reply(400, orError(400, 'Invalid request: input_references must be an array'));
    if (refs.length > 16) return reply(400, orError(400, 'Invalid request: input_references takes at most 16 images'));
    if (refs.some((r) => r?.type !== 'image_url' || typeof r.image_url?.url !== 'string'))
      return reply(400, orError(400, 'Invalid request: each input reference must be {type:"image_url", image_url:{url}}'));
    if (refs.length && !listed.input.includes('image')) return reply(400, orError(400, `${call.model} takes no input images`));
    const problem = imageParamProblem(listed, params);
    if (problem) return reply(400, orError(400, problem));
    if (decoded.some((d, i) => d && !metas[i])) return reply(400, orError(400, 'Invalid image in input_references: could not decode'));

    const source = decoded[0]?.data;
    const n = typeof params.n === 'number' ? params.n : 1;
    const hue = [...call.prompt].reduce((a, c) => (a * 31 + c.charCodeAt(0)) % 360, 7);
    const output = source
      ? await sharp(source).negate({ alpha: false }).png().toBuffer()
      : await sharp({ create: { width: 64, height: 64, channels: 3, background: `hsl(${hue}, 70%, 50%)` } })
          .png()
          .toBuffer();
    reply(
      200,
      {
        created: Math.floor(Date.now() / 1000),
        data: Array.from({ length: n }, () => ({ b64_json: output.toString('base64'), media_type: 'image/png' })),
        usage: { prompt_tokens: 0, completion_tokens: 4175 * n, total_tokens: 4175 * n, cost: 0.04 * n },
      },
      { 'x-generation-id': `gen-img-standin-${Math.random().toString(36).slice(2, 12)}` },
    );
  }

  const { server, port } = await listenOnLoopback((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (req.method === 'GET' && (path === '/api/v1/models' || path === '/v1/models')) {
      modelListCalls += 1;
      return sendJson(res, 200, modelsList(new URL(req.url ?? '/', 'http://standin').searchParams.get('output_modalities'), now()));
    }
    // An OpenAI-compatible chat server (`compatible`) has no Image API.
    if (!options.compatible && req.method === 'GET' && path === '/api/v1/images/models') {
      imageModelListCalls += 1;
      return sendJson(res, 200, imageModelsList(now()));
    }
    if (!options.compatible && req.method === 'POST' && path === '/api/v1/images') {
      handleImages(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, orError(500, `stand-in failure: ${(err as Error).message}`));
      });
      return;
    }
    if (req.method === 'POST' && (path === '/api/v1/chat/completions' || path === '/v1/chat/completions')) {
      handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, orError(500, `stand-in failure: ${(err as Error).message}`));
      });
      return;
    }
    sendJson(res, 404, orError(404, `Not Found (${req.method} ${path})`));
  }, options.port);
  const controls = standinControls(calls, scripts, server);

  return {
    baseURL: `http://127.0.0.1:${port}/api/v1`,
    ...controls,
    modelListCalls: () => modelListCalls,
    imageModelListCalls: () => imageModelListCalls,
  };
}
