import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError, toFile } from 'openai';
import { ClassifiedError } from '../../lib/errors';
import type { EditRequest, ImageEditProvider, ImageRequest, ImageResult, ProviderImage } from './provider';

// OpenAI Images API adapter (also any OpenAI-compatible server via OPENAI_BASE_URL).
// The SDK's own retries are off: Temporal's activity retry policy owns every retry, so backoff,
// Retry-After and attempt limits are applied in one place and visible in the UI.

const REQUEST_TIMEOUT_MS = 180_000;

export interface OpenAIProviderOptions {
  apiKey: string;
  baseURL?: string | undefined;
}

/** Retry-After as sent by OpenAI: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date. */
export function retryAfterMs(headers: Headers | undefined): number | undefined {
  if (!headers) return undefined;
  const ms = Number(headers.get('retry-after-ms'));
  if (headers.get('retry-after-ms') !== null && Number.isFinite(ms) && ms >= 0) return ms;
  const raw = headers.get('retry-after');
  if (raw === null) return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** Sorts an SDK error into a row failure class. */
export function classifyOpenAIError(err: unknown): ClassifiedError {
  if (err instanceof ClassifiedError) return err;
  if (err instanceof APIUserAbortError) return new ClassifiedError('retryable', 'request cancelled');
  if (err instanceof APIConnectionTimeoutError) return new ClassifiedError('retryable', `request timed out: ${err.message}`);
  if (err instanceof APIConnectionError) return new ClassifiedError('retryable', `connection error: ${err.message}`);
  if (err instanceof APIError) {
    const status = err.status;
    const details = {
      ...(status !== undefined ? { status } : {}),
      ...(err.requestID ? { requestId: err.requestID } : {}),
    };
    const code = err.code ?? '';
    const message = `${status ?? ''} ${err.message}`.trim();
    if (code === 'moderation_blocked' || code === 'content_policy_violation') {
      return new ClassifiedError('blocked', message, details);
    }
    if (code === 'insufficient_quota' || code === 'billing_hard_limit_reached') {
      return new ClassifiedError('quotaExhausted', message, details);
    }
    if (status === undefined || status === 408 || status === 409 || status === 429 || status >= 500) {
      const wait = retryAfterMs(err.headers as Headers | undefined);
      return new ClassifiedError('retryable', message, { ...details, ...(wait !== undefined ? { retryAfterMs: wait } : {}) });
    }
    return new ClassifiedError('invalidRequest', message, details);
  }
  return new ClassifiedError('retryable', `unexpected error: ${(err as Error)?.message ?? String(err)}`);
}

function extensionFor(mimeType: string): string {
  return mimeType.split('/')[1]?.replace('jpeg', 'jpg') ?? 'png';
}

/** GPT image models take files under 50 MB; dall-e-2 one square PNG under 4 MB. */
const INPUT_LIMITS = { 'dall-e-2': { maxBytes: 4 * 1024 * 1024, maxSide: 1024 }, default: { maxBytes: 50 * 1024 * 1024 } };

function sizedParams(request: ImageRequest) {
  return {
    ...(request.numImages > 1 ? { n: request.numImages } : {}),
    ...(request.params.size ? { size: request.params.size as OpenAI.ImageEditParams['size'] } : {}),
    ...(request.params.quality ? { quality: request.params.quality as OpenAI.ImageEditParams['quality'] } : {}),
  };
}

async function collectImages(response: OpenAI.ImagesResponse, requestId: string | null, signal?: AbortSignal): Promise<ImageResult> {
  const images: ProviderImage[] = [];
  for (const item of response.data ?? []) {
    if (item.b64_json) images.push({ data: Buffer.from(item.b64_json, 'base64'), mimeType: `image/${response.output_format ?? 'png'}` });
    else if (item.url) images.push(await download(item.url, signal));
  }
  if (images.length === 0) {
    throw new ClassifiedError('retryable', 'the response held no image', requestId ? { requestId } : {});
  }
  const usage = response.usage
    ? { inputTokens: response.usage.input_tokens, outputTokens: response.usage.output_tokens, totalTokens: response.usage.total_tokens }
    : undefined;
  return { images, ...(requestId ? { requestId } : {}), ...(usage ? { usage } : {}) };
}

export function createOpenAIProvider(options: OpenAIProviderOptions): ImageEditProvider {
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseURL,
    maxRetries: 0,
    timeout: REQUEST_TIMEOUT_MS,
  });
  return {
    backend: 'openai',
    secrets: [options.apiKey],
    inputLimits: (model) => (model === 'dall-e-2' ? INPUT_LIMITS['dall-e-2'] : INPUT_LIMITS.default),
    maxInputImages: (model) => (model === 'dall-e-2' ? 1 : 16),
    async edit(request: EditRequest): Promise<ImageResult> {
      // Buffers with an explicit name and MIME type: without them uploads go out as
      // application/octet-stream and the API rejects them.
      const files = await Promise.all(
        request.images.map((image, i) =>
          toFile(image.data, `image_${i}.${extensionFor(image.mimeType)}`, { type: image.mimeType }),
        ),
      );
      const [firstFile] = files;
      if (!firstFile) throw new ClassifiedError('inputError', 'an edit needs at least one input image');
      try {
        const { data, request_id } = await client.images
          .edit(
            {
              model: request.model,
              prompt: request.prompt,
              // One image goes as `image`; several as repeated `image[]` fields.
              image: files.length === 1 ? firstFile : files,
              ...sizedParams(request),
            },
            request.signal ? { signal: request.signal } : {},
          )
          .withResponse();
        return await collectImages(data, request_id, request.signal);
      } catch (err) {
        throw classifyOpenAIError(err);
      }
    },
    async generate(request: ImageRequest): Promise<ImageResult> {
      try {
        const { data, request_id } = await client.images
          .generate(
            { model: request.model, prompt: request.prompt, ...(sizedParams(request) as Partial<OpenAI.ImageGenerateParams>) },
            request.signal ? { signal: request.signal } : {},
          )
          .withResponse();
        return await collectImages(data as OpenAI.ImagesResponse, request_id, request.signal);
      } catch (err) {
        throw classifyOpenAIError(err);
      }
    },
  };
}

/** dall-e-2 and some compatible servers answer with URLs instead of base64. */
async function download(url: string, signal?: AbortSignal): Promise<ProviderImage> {
  const response = await fetch(url, signal ? { signal } : {});
  if (!response.ok) throw new ClassifiedError('retryable', `downloading the result image failed: HTTP ${response.status}`);
  return { data: Buffer.from(await response.arrayBuffer()), mimeType: response.headers.get('content-type') ?? 'image/png' };
}
