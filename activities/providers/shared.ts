import { createHash } from 'node:crypto';
import { ClassifiedError } from '../../lib/shared/errors';
import { parseDataUri, sniffImageType } from '../../lib/images';
import { capabilities, type Backend } from './models';
import type { EditRequest, ImageRequest, ProviderImage } from './provider';

// Small pieces every adapter needs, kept in one place so they behave the same for all providers.
// No SDK is imported here: an adapter that uses these loads only its own (test/unit/providerModules.test.ts).

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

/** Retry-After as OpenAI (and fal, ModelScope) send it: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date. */
export function retryAfterMs(headers: Headers | undefined): number | undefined {
  if (!headers || typeof headers.get !== 'function') return undefined;
  const ms = Number(headers.get('retry-after-ms'));
  if (headers.get('retry-after-ms') !== null && Number.isFinite(ms) && ms >= 0) return ms;
  const raw = headers.get('retry-after');
  if (raw === null) return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** The next midnight in a time zone, as an ISO time (daily quotas reset then). */
export function nextMidnight(timeZone: string, now = new Date()): string {
  const wallClock = (at: Date) => {
    const parts = Object.fromEntries(
      new Intl.DateTimeFormat('en-US', {
        timeZone,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
      })
        .formatToParts(at)
        .map((p) => [p.type, Number(p.value)]),
    ) as Record<string, number>;
    return {
      y: parts.year!,
      m: parts.month!,
      d: parts.day!,
      utcOfWallClock: Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!),
    };
  };
  const here = wallClock(now);
  const offset = here.utcOfWallClock - Math.floor(now.getTime() / 1000) * 1000; // zone minus UTC
  const midnightWall = Date.UTC(here.y, here.m - 1, here.d + 1);
  let at = midnightWall - offset;
  // Across a DST change the offset at midnight differs from now's: correct once.
  const offsetThen = wallClock(new Date(at)).utcOfWallClock - at;
  at = midnightWall - offsetThen;
  return new Date(at).toISOString();
}
