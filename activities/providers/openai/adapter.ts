import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError, toFile } from 'openai';
import sharp from 'sharp';
import { ClassifiedError } from '../../../lib/shared/errors';
import { capabilities, supportsParam, type Backend, type ModelCapabilities } from '../models';
import { checkEditInputs, resultImage, retryAfterMs, sniffImageType } from '../shared';
import type { EditRequest, ImageEditProvider, ImageRequest, ImageResult, ProviderImage } from '../provider';
import { connectionErrorMessage } from '../../../lib/shared/unreachable';

// OpenAI Images API adapter (also any OpenAI-compatible server via OPENAI_BASE_URL).
// The SDK's own retries are off: Temporal's activity retry policy owns every retry, so backoff,
// Retry-After and attempt limits are applied in one place and visible in the UI.
// What each model takes (input count and limits, optional parameters) comes from the capability
// table in models.ts. dall-e-2 (and its square-PNG input and `response_format`) is retired.

const REQUEST_TIMEOUT_MS = 180_000;
const MB = 1024 * 1024;

export interface OpenAIProviderOptions {
  apiKey: string;
  baseURL?: string | undefined;
  /** Per-attempt timeout (default 180 s). */
  timeoutMs?: number;
}

/** Sorts an SDK error into a row failure class (shared by every OpenAI-SDK-based adapter). */
export function classifyOpenAIError(err: unknown, baseURL?: string): ClassifiedError {
  if (err instanceof ClassifiedError) return err;
  if (err instanceof APIUserAbortError) return new ClassifiedError('retryable', 'request cancelled');
  if (err instanceof APIConnectionTimeoutError) return new ClassifiedError('retryable', `request timed out: ${err.message}`);
  if (err instanceof APIConnectionError) return new ClassifiedError('retryable', connectionErrorMessage(baseURL, err));
  if (err instanceof APIError) {
    const status = err.status;
    const details = {
      ...(status !== undefined ? { status } : {}),
      ...(err.requestID ? { requestId: err.requestID } : {}),
    };
    const code = String(err.code ?? '');
    // The SDK's message already starts with the status ("401 Incorrect API key ..."): say it once.
    const message = status !== undefined && !err.message.startsWith(String(status)) ? `${status} ${err.message}` : err.message;
    if (code === 'moderation_blocked' || code === 'content_policy_violation') {
      return new ClassifiedError('blocked', message, details);
    }
    if (code === 'insufficient_quota' || code === 'billing_hard_limit_reached' || status === 402) {
      return new ClassifiedError('quotaExhausted', message, details);
    }
    if (status === undefined || status === 408 || status === 409 || status === 429 || status >= 500) {
      const wait = retryAfterMs(err.headers as Headers | undefined);
      return new ClassifiedError('retryable', message, { ...details, ...(wait !== undefined ? { retryAfterMs: wait } : {}) });
    }
    return new ClassifiedError('invalidRequest', message, details);
  }
  if (err instanceof SyntaxError) return new ClassifiedError('retryable', `malformed response: ${err.message}`);
  return new ClassifiedError('retryable', `unexpected error: ${(err as Error)?.message ?? String(err)}`);
}

/** A prompt over the model's limit fails the row before any call (the API would answer 400). */
function checkPrompt(request: ImageRequest, caps: ModelCapabilities): void {
  if (caps.maxPromptChars !== undefined && request.prompt.length > caps.maxPromptChars) {
    throw new ClassifiedError(
      'inputError',
      `the prompt has ${request.prompt.length} characters; ${request.model} takes at most ${caps.maxPromptChars}`,
    );
  }
}

function extensionFor(mimeType: string): string {
  return mimeType.split('/')[1]?.replace('jpeg', 'jpg') ?? 'png';
}

/** The optional request fields this model takes, from the capability table. */
export function openAIParams(request: ImageRequest, caps: ModelCapabilities, kind: 'edit' | 'generate'): Record<string, unknown> {
  const p = request.params;
  const has = (name: Parameters<typeof supportsParam>[1]) => p[name] !== undefined && p[name] !== '' && supportsParam(caps, name);
  return {
    ...(request.numImages > 1 ? { n: request.numImages } : {}),
    ...(has('size') ? { size: p.size } : {}),
    ...(has('quality') ? { quality: p.quality } : {}),
    ...(has('background') ? { background: p.background } : {}),
    ...(has('outputFormat') ? { output_format: p.outputFormat } : {}),
    ...(has('outputCompression') ? { output_compression: p.outputCompression } : {}),
    ...(kind === 'edit' && has('inputFidelity') ? { input_fidelity: p.inputFidelity } : {}),
    // gpt-image-2.6 only (the table's `complexities`); untyped in the SDK, sent as a form field or JSON key.
    ...(has('complexity') ? { complexity: p.complexity } : {}),
    // Typed only on generate in the SDK; the edits endpoint takes it too (sent as a form field).
    ...(has('moderation') ? { moderation: p.moderation } : {}),
    // OpenAI-compatible diffusion servers (vLLM-Omni, SGLang; models with params 'any'): the run's
    // sampling settings, so a run is reproducible. Untyped extras: form fields or JSON keys.
    ...(has('seed') ? { seed: p.seed } : {}),
    ...(has('numInferenceSteps') ? { num_inference_steps: p.numInferenceSteps } : {}),
    ...(has('guidanceScale') ? { guidance_scale: p.guidanceScale } : {}),
    ...(has('trueCfgScale') ? { true_cfg_scale: p.trueCfgScale } : {}),
    ...(has('negativePrompt') ? { negative_prompt: p.negativePrompt } : {}),
  };
}

/** A mask must match the first image's dimensions (inputs may have been shrunk to fit limits). */
async function fitMask(mask: ProviderImage, first: ProviderImage): Promise<Buffer> {
  const [m, f] = await Promise.all([sharp(mask.data).metadata(), sharp(first.data).metadata()]);
  if (m.width === f.width && m.height === f.height && m.format === 'png') return mask.data;
  return sharp(mask.data).resize(f.width, f.height, { fit: 'fill' }).ensureAlpha().png().toBuffer();
}

/**
 * Token counts by class, as OpenAI bills them: input text vs image, output image vs text
 * (`output_tokens_details`), and cached input (`cached_tokens`, when a response carries it; the SDK
 * does not type it for images).
 */
export function usageOf(u: OpenAI.ImagesResponse['usage'] | undefined): Record<string, number> | undefined {
  if (!u) return undefined;
  const input = u.input_tokens_details as
    (typeof u.input_tokens_details & { cached_tokens?: number; cached_tokens_details?: { image_tokens?: number } }) | undefined;
  const usage: Record<string, number | undefined> = {
    inputTokens: u.input_tokens,
    outputTokens: u.output_tokens,
    totalTokens: u.total_tokens,
    inputTextTokens: input?.text_tokens,
    inputImageTokens: input?.image_tokens,
    cachedInputTokens: input?.cached_tokens,
    cachedInputImageTokens: input?.cached_tokens_details?.image_tokens,
    outputImageTokens: u.output_tokens_details?.image_tokens,
    outputTextTokens: u.output_tokens_details?.text_tokens,
  };
  const defined = Object.entries(usage).filter((e): e is [string, number] => typeof e[1] === 'number');
  return defined.length ? Object.fromEntries(defined) : undefined;
}

async function collectImages(response: OpenAI.ImagesResponse, requestId: string | null, signal?: AbortSignal): Promise<ImageResult> {
  const images: ProviderImage[] = [];
  for (const item of response.data ?? []) {
    if (item.b64_json) {
      const data = Buffer.from(item.b64_json, 'base64');
      images.push({ data, mimeType: sniffImageType(data, `image/${response.output_format ?? 'png'}`) });
    } else if (item.url) images.push(await resultImage(item.url, signal)); // some compatible servers answer with URLs
  }
  if (images.length === 0) {
    throw new ClassifiedError('retryable', 'the response held no image', requestId ? { requestId } : {});
  }
  const usage = usageOf(response.usage);
  return { images, ...(requestId ? { requestId } : {}), ...(usage ? { usage } : {}) };
}

export function createOpenAIProvider(options: OpenAIProviderOptions): ImageEditProvider {
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseURL,
    maxRetries: 0,
    timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS,
  });
  return openAIImagesProvider('openai', () => client, [options.apiKey]);
}

/**
 * The Images API adapter for any client speaking OpenAI's images wire format (OpenAI, Azure
 * OpenAI); `clientFor` gives the client for a model (Azure: one per deployment).
 */
export function openAIImagesProvider(
  backend: Extract<Backend, 'openai' | 'azure'>,
  clientFor: (model: string) => OpenAI,
  secrets: readonly string[],
): ImageEditProvider {
  return {
    backend,
    secrets,
    async edit(request: EditRequest): Promise<ImageResult> {
      checkEditInputs(backend, request);
      const caps = capabilities(backend, request.model);
      checkPrompt(request, caps);
      const first = request.images[0]!;
      const images = request.images;
      const maskBytes = request.mask && caps.mask ? await fitMask(request.mask, first) : undefined;
      if (maskBytes && caps.maxMaskBytes !== undefined && maskBytes.length >= caps.maxMaskBytes) {
        throw new ClassifiedError(
          'inputError',
          `the mask is ${(maskBytes.length / MB).toFixed(1)} MB as a PNG; ${request.model} takes masks under ${caps.maxMaskBytes / MB} MB`,
        );
      }
      // Buffers with an explicit name and MIME type: without them uploads go out as
      // application/octet-stream and the API rejects them. Buffers (not streams) so a retry can resend.
      const files = await Promise.all(
        images.map((image, i) => toFile(image.data, `image_${i}.${extensionFor(image.mimeType)}`, { type: image.mimeType })),
      );
      const mask = maskBytes ? await toFile(maskBytes, 'mask.png', { type: 'image/png' }) : undefined;
      try {
        const { data, request_id } = await clientFor(request.model)
          .images.edit(
            {
              model: request.model,
              prompt: request.prompt,
              // One image goes as `image`; several as repeated `image[]` fields.
              image: files.length === 1 ? files[0]! : files,
              ...(mask ? { mask } : {}),
              ...(openAIParams(request, caps, 'edit') as Partial<OpenAI.ImageEditParamsNonStreaming>),
            },
            request.signal ? { signal: request.signal } : {},
          )
          .withResponse();
        return await collectImages(data, request_id, request.signal);
      } catch (err) {
        throw classifyOpenAIError(err, clientFor(request.model).baseURL);
      }
    },
    async generate(request: ImageRequest): Promise<ImageResult> {
      const caps = capabilities(backend, request.model);
      checkPrompt(request, caps);
      try {
        const { data, request_id } = await clientFor(request.model)
          .images.generate(
            {
              model: request.model,
              prompt: request.prompt,
              ...(openAIParams(request, caps, 'generate') as Partial<OpenAI.ImageGenerateParamsNonStreaming>),
            },
            request.signal ? { signal: request.signal } : {},
          )
          .withResponse();
        return await collectImages(data as OpenAI.ImagesResponse, request_id, request.signal);
      } catch (err) {
        throw classifyOpenAIError(err, clientFor(request.model).baseURL);
      }
    },
  };
}
