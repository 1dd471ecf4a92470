import OpenAI, { APIError } from 'openai';
import { ClassifiedError } from '../../../lib/shared/errors';
import { capabilities, modalitiesFor, supportsParam } from '../models';
import { listOpenRouterImageModels } from './list';
import { classifyOpenAIError } from '../openai/adapter';
import { checkEditInputs, resultImage, sniffImageType } from '../shared';
import type { EditRequest, ImageEditProvider, ImageRequest, ImageResult, ProviderImage } from '../provider';

// OpenRouter image models through the `openai` SDK's chat completions (OpenRouter is
// OpenAI-compatible there): the prompt and input images (data URLs) go in one user message, with the
// untyped body extras `modalities` and `image_config`; images come back in
// `choices[0].message.images[].image_url.url` as data URLs. An answer without an image is asked
// again once here, then fails as an invalid request. SDK retries are off, as for OpenAI.
//
// `modalities` follows the model's declared output modalities: image-only models (Seedream, Flux,
// gpt-image-2, ...) answer 404 "No endpoints found that support the requested output modalities:
// image, text" when asked for text too. They come from `GET /api/v1/models?output_modalities=image`
// (`architecture.output_modalities`), fetched once per adapter (one per worker) and kept for an
// hour; the name table in models.ts is the fallback when the list cannot be had or lacks the model.
//
// Image-only models go through OpenRouter's dedicated Image API instead (providers-audit-2026-12 §1,
// [OR-img]; openrouter.ai/docs/api/api-reference/images/generate-an-image): `POST /api/v1/images`
// with `prompt`, `input_references` (data URLs) and the normalised fields, answered with
// `data[].b64_json` + `media_type` and `usage.cost`. Which fields a model takes comes from
// `GET /api/v1/images/models` (`supported_parameters`, typed descriptors), fetched once per adapter
// and kept for an hour like the model list: OpenRouter rejects a parameter the model does not list
// instead of ignoring it, so a parameter it does not list is left out (as the other adapters leave
// out what a model does not take; planning warns), and a value outside a listed enum fails the row
// before any call. Where that list cannot be had (an OpenAI-compatible `--base-url` server has no
// Image API) or does not hold the model, the chat path serves it as before.

const DEFAULT_BASE_URL = 'https://openrouter.ai/api/v1';
const REQUEST_TIMEOUT_MS = 180_000;
const CATALOG_TTL_MS = 3_600_000;
/** After a failed list request, the name table serves this long before the list is asked again. */
const CATALOG_RETRY_MS = 60_000;

export interface OpenRouterProviderOptions {
  apiKey: string;
  /** Default https://openrouter.ai/api/v1. */
  baseURL?: string | undefined;
  timeoutMs?: number;
  /** Optional attribution headers OpenRouter shows in its dashboard. */
  appName?: string;
  appUrl?: string;
}

/** OpenRouter's moderation refusals are 403s whose message or metadata says the input was flagged. */
function isModeration(status: number | undefined, body: unknown, message: string): boolean {
  const metadata = (body as { metadata?: { reasons?: unknown } } | undefined)?.metadata;
  return status === 403 && (Array.isArray(metadata?.reasons) || /moderation|flagged/i.test(message));
}

/** OpenAI's classes plus OpenRouter's: 402 (credits) -> quota exhausted, 403 moderation -> blocked. */
export function classifyOpenRouterError(err: unknown, baseURL?: string): ClassifiedError {
  if (err instanceof APIError && err.status !== undefined && isModeration(err.status, err.error, err.message)) {
    // The SDK's message already starts with the status: say it once.
    const message = err.message.startsWith(String(err.status)) ? err.message : `${err.status} ${err.message}`;
    return new ClassifiedError('blocked', message, { status: err.status, ...(err.requestID ? { requestId: err.requestID } : {}) });
  }
  return classifyOpenAIError(err, baseURL);
}

/** An error carried in a 200 body (OpenRouter reports upstream failures this way). */
function classifyBodyError(
  error: { code?: unknown; message?: unknown; metadata?: unknown },
  requestId: string | undefined,
): ClassifiedError {
  const code = Number(error.code);
  const message = `${Number.isFinite(code) ? code : ''} ${String(error.message ?? 'provider error')}`.trim();
  const details = { ...(Number.isFinite(code) ? { status: code } : {}), ...(requestId ? { requestId } : {}) };
  if (isModeration(code, error, message)) return new ClassifiedError('blocked', message, details);
  if (code === 402) return new ClassifiedError('quotaExhausted', message, details);
  if (!Number.isFinite(code) || code === 408 || code === 429 || code >= 500) return new ClassifiedError('retryable', message, details);
  return new ClassifiedError('invalidRequest', message, details);
}

const SAFETY_FINISH = /SAFETY|PROHIBITED|BLOCKLIST|SPII|RECITATION|content_filter/i;

export function dataUrl(image: ProviderImage): string {
  return `data:${image.mimeType};base64,${image.data.toString('base64')}`;
}

interface ImagePartOut {
  image_url?: { url?: string };
  imageUrl?: { url?: string };
}

interface Choice {
  finish_reason?: string | null;
  native_finish_reason?: string | null;
  error?: { code?: unknown; message?: unknown; metadata?: unknown };
  message?: { content?: string | null; images?: ImagePartOut[]; refusal?: string | null };
}

interface ChatResponse {
  id?: string;
  choices?: Choice[];
  error?: { code?: unknown; message?: unknown; metadata?: unknown };
  usage?: {
    prompt_tokens?: number;
    completion_tokens?: number;
    total_tokens?: number;
    cost?: number;
    prompt_tokens_details?: { image_tokens?: number; cached_tokens?: number };
    completion_tokens_details?: { image_tokens?: number; reasoning_tokens?: number };
  };
}

function usageOf(u: ChatResponse['usage']): Record<string, number> {
  if (!u) return {};
  const usage: Record<string, number | undefined> = {
    inputTokens: u.prompt_tokens,
    outputTokens: u.completion_tokens,
    totalTokens: u.total_tokens,
    inputImageTokens: u.prompt_tokens_details?.image_tokens,
    outputImageTokens: u.completion_tokens_details?.image_tokens,
    thoughtsTokens: u.completion_tokens_details?.reasoning_tokens,
    costUsd: u.cost,
  };
  return Object.fromEntries(Object.entries(usage).filter((e): e is [string, number] => typeof e[1] === 'number'));
}

function addUsage(total: Record<string, number>, usage: Record<string, number>): void {
  for (const [k, v] of Object.entries(usage)) total[k] = (total[k] ?? 0) + v;
}

/** A typed descriptor of `GET /api/v1/images/models` (`{type:"enum", values}`, `{type:"boolean"}`, ...). */
export interface ImageParamDescriptor {
  type?: string;
  values?: unknown[];
}

/** One entry of `GET /api/v1/images/models`, as the adapter keeps it. */
export interface ImageApiModel {
  outputs: string[];
  params: Record<string, ImageParamDescriptor>;
}

/** Atelier's image sizes in the Image API's `resolution` tiers (512 is what Atelier calls 0.5K). */
const RESOLUTION: Record<string, string> = { '0.5K': '512', '512': '512', '1K': '1K', '2K': '2K', '4K': '4K' };

/**
 * The Image API fields for a row's parameters and numbers of images, given what the model lists:
 * fields it does not list are left out (OpenRouter would refuse the request); a value outside a
 * listed enum is a problem the row fails on before any call.
 */
export function imageApiFields(
  model: string,
  p: ImageRequest['params'],
  supported: Record<string, ImageParamDescriptor>,
): { fields: Record<string, unknown>; problems: string[] } {
  const wanted: Record<string, unknown> = {
    aspect_ratio: p.aspectRatio || undefined,
    resolution: p.imageSize ? (RESOLUTION[p.imageSize] ?? p.imageSize) : undefined,
    size: p.size || undefined,
    quality: p.quality || undefined,
    background: p.background || undefined,
    output_format: p.outputFormat || undefined,
    output_compression: p.outputCompression,
    seed: p.seed,
  };
  const fields: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [key, value] of Object.entries(wanted)) {
    if (value === undefined) continue;
    const d = supported[key];
    if (!d) continue;
    if (d.type === 'enum' && Array.isArray(d.values) && !d.values.map(String).includes(String(value))) {
      problems.push(`${model} takes ${key} ${d.values.map(String).join(', ')} on OpenRouter's Image API, not ${String(value)}`);
      continue;
    }
    fields[key] = value;
  }
  return { fields, problems };
}

export function createOpenRouterProvider(options: OpenRouterProviderOptions): ImageEditProvider {
  // Output modalities by model id from /api/v1/models, cached for this adapter (this worker).
  let catalog: { at: number; ttl: number; models: Promise<Map<string, string[]>> } | undefined;
  const declaredOutputs = async (model: string): Promise<string[] | undefined> => {
    const now = Date.now();
    if (!catalog || now - catalog.at > catalog.ttl) {
      const entry = {
        at: now,
        ttl: CATALOG_TTL_MS,
        models: listOpenRouterImageModels({ apiKey: options.apiKey, baseURL: options.baseURL, timeoutMs: 20_000 })
          .then((list) => new Map(list.flatMap((m) => (m.outputModalities ? [[m.id, m.outputModalities] as [string, string[]]] : []))))
          .catch(() => {
            entry.ttl = CATALOG_RETRY_MS;
            return new Map<string, string[]>();
          }),
      };
      catalog = entry;
    }
    return (await catalog.models).get(model);
  };

  // Image API models by id from /api/v1/images/models, cached like the model list.
  let imageCatalog: { at: number; ttl: number; models: Promise<Map<string, ImageApiModel>> } | undefined;
  const imageApiModel = async (model: string): Promise<ImageApiModel | undefined> => {
    const now = Date.now();
    if (!imageCatalog || now - imageCatalog.at > imageCatalog.ttl) {
      const entry = {
        at: now,
        ttl: CATALOG_TTL_MS,
        models: client
          .get('/images/models', { timeout: 20_000 })
          .then((body) => {
            const data = (body as { data?: unknown } | undefined)?.data;
            const list = Array.isArray(data)
              ? (data as { id?: unknown; architecture?: { output_modalities?: unknown }; supported_parameters?: unknown }[])
              : [];
            return new Map(
              list.flatMap((m): [string, ImageApiModel][] =>
                typeof m.id === 'string'
                  ? [
                      [
                        m.id,
                        {
                          outputs: Array.isArray(m.architecture?.output_modalities)
                            ? m.architecture.output_modalities.map(String)
                            : ['image'],
                          params:
                            m.supported_parameters && typeof m.supported_parameters === 'object'
                              ? (m.supported_parameters as Record<string, ImageParamDescriptor>)
                              : {},
                        },
                      ],
                    ]
                  : [],
              ),
            );
          })
          .catch(() => {
            // No Image API here (an OpenAI-compatible server) or it failed: the chat path serves.
            entry.ttl = CATALOG_RETRY_MS;
            return new Map<string, ImageApiModel>();
          }),
      };
      imageCatalog = entry;
    }
    return (await imageCatalog.models).get(model);
  };

  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseURL || DEFAULT_BASE_URL,
    maxRetries: 0,
    timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS,
    defaultHeaders: {
      ...(options.appUrl ? { 'HTTP-Referer': options.appUrl } : {}),
      ...(options.appName ? { 'X-Title': options.appName } : {}),
    },
  });

  /** One chat completion; the answer's images, or a classified failure, or null for no image. */
  async function once(
    request: ImageRequest,
    images: ProviderImage[],
  ): Promise<{ images: ProviderImage[] | null; why: string; requestId?: string; usage: Record<string, number> }> {
    const caps = capabilities('openrouter', request.model);
    const p = request.params;
    const has = (name: Parameters<typeof supportsParam>[1]) => p[name] !== undefined && p[name] !== '' && supportsParam(caps, name);
    // image_config takes aspect_ratio and image_size for every image model, and OpenAI's image
    // options for OpenAI's image models (see models.ts).
    const imageConfig = {
      ...(has('aspectRatio') ? { aspect_ratio: p.aspectRatio } : {}),
      ...(has('imageSize') ? { image_size: p.imageSize } : {}),
      ...(has('quality') ? { quality: p.quality } : {}),
      ...(has('background') ? { background: p.background } : {}),
      ...(has('outputFormat') ? { output_format: p.outputFormat } : {}),
      ...(has('outputCompression') ? { output_compression: p.outputCompression } : {}),
      ...(has('moderation') ? { moderation: p.moderation } : {}),
    };
    const modalities = modalitiesFor(await declaredOutputs(request.model), caps.outputModalities);
    const body = {
      model: request.model,
      messages: [
        {
          role: 'user' as const,
          content: [
            { type: 'text' as const, text: request.prompt },
            ...images.map((image) => ({ type: 'image_url' as const, image_url: { url: dataUrl(image) } })),
          ],
        },
      ],
      // OpenRouter extras (not in the SDK's types): pass through to the JSON body.
      modalities,
      ...(Object.keys(imageConfig).length ? { image_config: imageConfig } : {}),
      ...(p.seed !== undefined && supportsParam(caps, 'seed') ? { seed: p.seed } : {}),
    };
    let data: ChatResponse;
    let headerId: string | null;
    try {
      const result = await client.chat.completions
        .create(body as OpenAI.ChatCompletionCreateParamsNonStreaming, request.signal ? { signal: request.signal } : {})
        .withResponse();
      data = result.data as unknown as ChatResponse;
      headerId = result.request_id;
    } catch (err) {
      throw classifyOpenRouterError(err, client.baseURL);
    }
    if (!data || typeof data !== 'object') throw new ClassifiedError('retryable', 'malformed response: not a JSON object');
    const requestId = data.id ?? headerId ?? undefined;
    const usage = usageOf(data.usage);
    if (data.error) throw classifyBodyError(data.error, requestId);
    const choice = data.choices?.[0];
    if (choice?.error) throw classifyBodyError(choice.error, requestId);
    const finish = `${choice?.finish_reason ?? ''} ${choice?.native_finish_reason ?? ''}`.trim();
    const urls = (choice?.message?.images ?? []).map((img) => img.image_url?.url ?? img.imageUrl?.url).filter((u): u is string => !!u);
    if (urls.length === 0) {
      if (SAFETY_FINISH.test(finish) || choice?.message?.refusal) {
        throw new ClassifiedError(
          'blocked',
          `the answer was withheld: ${finish || choice?.message?.refusal}`,
          requestId ? { requestId } : {},
        );
      }
      const text = (choice?.message?.content ?? '').trim();
      return {
        images: null,
        why: text ? `the model answered: "${text.slice(0, 200)}"` : `empty answer${finish ? ` (${finish})` : ''}`,
        ...(requestId ? { requestId } : {}),
        usage,
      };
    }
    const out = await Promise.all(urls.map((u) => resultImage(u, request.signal)));
    return { images: out, why: '', ...(requestId ? { requestId } : {}), usage };
  }

  /** One Image API call (`POST /images`) for `n` images of an image-only model. */
  async function viaImageApi(request: ImageRequest, images: ProviderImage[], model: ImageApiModel): Promise<ImageResult> {
    const { fields, problems } = imageApiFields(request.model, request.params, model.params);
    if (problems.length) throw new ClassifiedError('invalidRequest', problems.join('; '));
    // Several images in one call where the model takes `n`; else one call per image.
    const perCall = model.params.n && request.numImages > 1 ? request.numImages : 1;
    const out: ProviderImage[] = [];
    const usage: Record<string, number> = {};
    let requestId: string | undefined;
    while (out.length < Math.max(1, request.numImages)) {
      const body = {
        model: request.model,
        prompt: request.prompt,
        ...(images.length ? { input_references: images.map((image) => ({ type: 'image_url', image_url: { url: dataUrl(image) } })) } : {}),
        ...fields,
        ...(perCall > 1 ? { n: perCall } : {}),
      };
      let data: {
        data?: { b64_json?: unknown; url?: unknown; media_type?: unknown }[];
        usage?: ChatResponse['usage'];
        error?: ChatResponse['error'];
      };
      let response: Response;
      try {
        const result = await client.post('/images', { body, ...(request.signal ? { signal: request.signal } : {}) }).withResponse();
        data = result.data as typeof data;
        response = result.response;
      } catch (err) {
        throw classifyOpenRouterError(err, client.baseURL);
      }
      if (!data || typeof data !== 'object') throw new ClassifiedError('retryable', 'malformed response: not a JSON object');
      requestId ??= response.headers.get('x-generation-id') ?? response.headers.get('x-request-id') ?? undefined;
      if (data.error) throw classifyBodyError(data.error, requestId);
      addUsage(usage, usageOf(data.usage));
      const got = await Promise.all(
        (data.data ?? []).flatMap((d) => {
          if (typeof d.b64_json === 'string') {
            const bytes = Buffer.from(d.b64_json, 'base64');
            return [
              Promise.resolve({
                data: bytes,
                mimeType: sniffImageType(bytes, typeof d.media_type === 'string' ? d.media_type : 'image/png'),
              }),
            ];
          }
          return typeof d.url === 'string' ? [resultImage(d.url, request.signal)] : [];
        }),
      );
      if (got.length === 0) throw new ClassifiedError('invalidRequest', 'no image in the answer', requestId ? { requestId } : {});
      out.push(...got.slice(0, Math.max(1, request.numImages) - out.length));
    }
    return { images: out, ...(requestId ? { requestId } : {}), ...(Object.keys(usage).length ? { usage } : {}) };
  }

  async function run(request: ImageRequest, images: ProviderImage[]): Promise<ImageResult> {
    const imageApi = await imageApiModel(request.model);
    if (imageApi && !imageApi.outputs.includes('text')) return viaImageApi(request, images, imageApi);
    const out: ProviderImage[] = [];
    const usage: Record<string, number> = {};
    let requestId: string | undefined;
    for (let k = 0; k < Math.max(1, request.numImages); k++) {
      let why = '';
      let got: ProviderImage[] | null = null;
      for (let attempt = 0; attempt < 2 && !got; attempt++) {
        const answer = await once(request, images);
        addUsage(usage, answer.usage);
        requestId ??= answer.requestId;
        got = answer.images;
        why = answer.why;
      }
      if (!got) throw new ClassifiedError('invalidRequest', `no image in the answer (asked twice): ${why}`, requestId ? { requestId } : {});
      out.push(...(request.numImages > 1 ? got.slice(0, 1) : got));
    }
    return { images: out, ...(requestId ? { requestId } : {}), ...(Object.keys(usage).length ? { usage } : {}) };
  }

  return {
    backend: 'openrouter',
    secrets: [options.apiKey],
    async edit(request: EditRequest): Promise<ImageResult> {
      checkEditInputs('openrouter', request);
      return run(request, request.images);
    },
    async generate(request: ImageRequest): Promise<ImageResult> {
      return run(request, []);
    },
  };
}
