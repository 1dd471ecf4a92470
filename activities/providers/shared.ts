import { createHash } from 'node:crypto';
import { ClassifiedError } from '../../lib/shared/errors';
import { parseDataUri, sniffImageType } from '../../lib/images';
import { capabilities, type Backend } from './models';
import type { EditRequest, ImageRequest, ProviderImage } from './provider';

// Small pieces every adapter needs, kept in one place so they behave the same for all providers.

export { sniffImageType };

/**
 * A result image given as a `data:` URI or a URL to download. A failed download is retryable (the
 * provider made the image; fetching it again is cheap). `fetchImpl` lets an adapter bring its own
 * timeouts.
 */
export async function resultImage(
  url: string,
  signal?: AbortSignal,
  fetchImpl: (url: string, signal?: AbortSignal) => Promise<Response> = defaultFetch,
): Promise<ProviderImage> {
  const inline = parseDataUri(url);
  if (inline) return { data: inline.data, mimeType: sniffImageType(inline.data, inline.mimeType ?? 'image/png') };
  const response = await fetchImpl(url, signal);
  if (!response.ok) throw new ClassifiedError('retryable', `downloading the result image failed: HTTP ${response.status}`);
  const data = Buffer.from(await response.arrayBuffer());
  return { data, mimeType: sniffImageType(data, response.headers.get('content-type') ?? 'image/png') };
}

async function defaultFetch(url: string, signal?: AbortSignal): Promise<Response> {
  try {
    return await fetch(url, signal ? { signal } : {});
  } catch (err) {
    throw new ClassifiedError('retryable', `downloading the result image failed: ${(err as Error).message}`);
  }
}

/** An edit takes at least one image and at most the model's limit; extra images are never dropped. */
export function checkEditInputs(backend: Backend, request: Pick<EditRequest, 'model' | 'images'>): void {
  if (request.images.length === 0) throw new ClassifiedError('inputError', 'an edit needs at least one input image');
  checkInputCount(backend, request);
}

/** At most the model's limit of input images (a later chat turn may send none). */
export function checkInputCount(backend: Backend, request: Pick<EditRequest, 'model' | 'images'>): void {
  const max = capabilities(backend, request.model).maxInputImages;
  if (request.images.length > max) {
    throw new ClassifiedError('inputError', `${request.model} takes at most ${max} input image(s); the row has ${request.images.length}`);
  }
}

/**
 * Identifies one request's content (model, prompt, parameters, input bytes) for a submit-then-poll
 * provider: the heartbeat keeps it beside the submitted ids, so a retry resumes polling only the
 * submissions made for this very request.
 */
export function requestFingerprint(request: ImageRequest, images: ProviderImage[]): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ model: request.model, prompt: request.prompt, params: request.params, n: request.numImages }));
  for (const image of images) hash.update(createHash('sha256').update(image.data).digest());
  return hash.digest('hex').slice(0, 24);
}
