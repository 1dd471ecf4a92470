import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { openStorage } from '../../storage';
import { ClassifiedError } from '../shared/errors';
import type { DownloadLimits as DownloadSettings } from '../shared/types';

// Downloaded input images, content-addressed in the image cache's storage (a folder or an S3
// prefix): objects/<sha256 of the bytes>, plus urls/<sha256 of the URL> naming the object. Rows (and
// later runs) that use the same URL download it once; a crash mid-download leaves nothing behind.
//
// Downloads are bounded: a size cap (checked against Content-Length and while streaming), a total
// time limit for the whole transfer, and redirects followed by hand so that one to anything but
// http(s) is refused. A URL that is too big, hangs or points elsewhere is the row's input problem
// (InputError), answered in bounded time, not something to retry.

export const DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024;
/** Whole transfer, headers and body. */
export const DEFAULT_DOWNLOAD_TIMEOUT_MS = 60_000;
const DOWNLOAD_ATTEMPTS = 3;
const MAX_REDIRECTS = 5;

export type DownloadLimits = Partial<DownloadSettings>;

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function transient(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(bytes < 1024 * 1024 ? 2 : 0)} MB`;
}

async function readCapped(response: Response, url: string, maxBytes: number): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new ClassifiedError(
      'inputError',
      `downloading ${url}: it is ${megabytes(declared)}, over the ${megabytes(maxBytes)} limit (--max-download-mb)`,
    );
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = response.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new ClassifiedError('inputError', `downloading ${url}: more than the ${megabytes(maxBytes)} limit (--max-download-mb)`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

async function downloadOnce(url: string, limits: Required<DownloadLimits>, signal?: AbortSignal): Promise<Buffer> {
  const deadline = AbortSignal.timeout(limits.timeoutMs);
  const abort = signal ? AbortSignal.any([signal, deadline]) : deadline;
  let current = url;
  try {
    for (let hop = 0; ; hop++) {
      const response = await fetch(current, { signal: abort, redirect: 'manual' });
      if (response.status >= 300 && response.status < 400 && response.headers.has('location')) {
        await response.body?.cancel().catch(() => undefined);
        const next = new URL(response.headers.get('location')!, current);
        if (next.protocol !== 'http:' && next.protocol !== 'https:') {
          throw new ClassifiedError('inputError', `downloading ${url}: redirected to a ${next.protocol} URL; only http(s) is followed`);
        }
        if (hop >= MAX_REDIRECTS) throw new ClassifiedError('inputError', `downloading ${url}: more than ${MAX_REDIRECTS} redirects`);
        current = next.href;
        continue;
      }
      if (!response.ok) {
        await response.body?.cancel().catch(() => undefined);
        throw new ClassifiedError(
          transient(response.status) ? 'retryable' : 'inputError',
          `downloading ${url} failed: HTTP ${response.status}`,
          {
            status: response.status,
          },
        );
      }
      return await readCapped(response, url, limits.maxBytes);
    }
  } catch (err) {
    if (err instanceof ClassifiedError) throw err;
    if (deadline.aborted && !signal?.aborted) {
      throw new ClassifiedError('inputError', `downloading ${url}: no complete answer within ${limits.timeoutMs / 1000} s`);
    }
    throw new ClassifiedError('retryable', `downloading ${url} failed: ${(err as Error).message}`);
  }
}

/** Downloads with a few quick retries of its own for transient failures (the row's retry policy backs them up). */
export async function download(url: string, signal?: AbortSignal, limits: DownloadLimits = {}): Promise<Buffer> {
  const bounded = { maxBytes: limits.maxBytes ?? DEFAULT_MAX_DOWNLOAD_BYTES, timeoutMs: limits.timeoutMs ?? DEFAULT_DOWNLOAD_TIMEOUT_MS };
  for (let attempt = 1; ; attempt++) {
    try {
      return await downloadOnce(url, bounded, signal);
    } catch (err) {
      if (!(err instanceof ClassifiedError) || err.kind !== 'retryable' || attempt >= DOWNLOAD_ATTEMPTS || signal?.aborted) throw err;
      await sleep(500 * 2 ** (attempt - 1));
    }
  }
}

/**
 * The downloads into a cache running in this process, by cache and URL: rows of one worker that
 * need the same URL at the same moment share one download (a second row used to miss the cache the
 * first was still filling and fetch the URL again).
 */
const inFlight = new Map<string, Promise<Buffer>>();

export async function fetchCached(url: string, cacheLocation: string, signal?: AbortSignal, limits: DownloadLimits = {}): Promise<Buffer> {
  const key = `${cacheLocation}\n${url}`;
  const running = inFlight.get(key);
  if (running) {
    try {
      return await running;
    } catch {
      // The other row's download failed or was cancelled with that row: this row tries on its own.
    }
  }
  const fetching = fetchIntoCache(url, cacheLocation, signal, limits);
  inFlight.set(key, fetching);
  try {
    return await fetching;
  } finally {
    if (inFlight.get(key) === fetching) inFlight.delete(key);
  }
}

async function fetchIntoCache(
  url: string,
  cacheLocation: string,
  signal: AbortSignal | undefined,
  limits: DownloadLimits,
): Promise<Buffer> {
  const cache = openStorage(cacheLocation);
  const pointer = `urls/${sha256(url)}`;
  const object = (await cache.read(pointer).catch(() => undefined))?.toString('utf8').trim();
  if (object) {
    const cached = await cache.read(`objects/${object}`).catch(() => undefined);
    if (cached) return cached;
  }
  const bytes = await download(url, signal, limits);
  const digest = sha256(bytes);
  await cache.write(`objects/${digest}`, bytes);
  await cache.write(pointer, digest);
  return bytes;
}
