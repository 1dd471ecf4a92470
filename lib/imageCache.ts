import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeFileAtomic } from './atomicFile';
import { ClassifiedError } from './errors';

// Downloaded input images, content-addressed: objects/<sha256 of the bytes>, plus urls/<sha256 of the
// URL> naming the object. Rows (and later runs) that use the same URL download it once; a crash
// mid-download leaves nothing behind (atomic writes).

const DOWNLOAD_TIMEOUT_MS = 30_000;
const DOWNLOAD_ATTEMPTS = 3;

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function transient(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

async function downloadOnce(url: string, signal?: AbortSignal): Promise<Buffer> {
  const timeout = AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS);
  let response: Response;
  try {
    response = await fetch(url, { signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
  } catch (err) {
    throw new ClassifiedError('retryable', `downloading ${url} failed: ${(err as Error).message}`);
  }
  if (!response.ok) {
    throw new ClassifiedError(transient(response.status) ? 'retryable' : 'inputError', `downloading ${url} failed: HTTP ${response.status}`, {
      status: response.status,
    });
  }
  return Buffer.from(await response.arrayBuffer());
}

/** Downloads with a few quick retries of its own (the row's retry policy backs them up). */
export async function download(url: string, signal?: AbortSignal): Promise<Buffer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await downloadOnce(url, signal);
    } catch (err) {
      if (!(err instanceof ClassifiedError) || err.kind !== 'retryable' || attempt >= DOWNLOAD_ATTEMPTS || signal?.aborted) throw err;
      await sleep(500 * 2 ** (attempt - 1));
    }
  }
}

export async function fetchCached(url: string, cacheDir: string, signal?: AbortSignal): Promise<Buffer> {
  const pointer = join(cacheDir, 'urls', sha256(url));
  try {
    const object = (await readFile(pointer, 'utf8')).trim();
    return await readFile(join(cacheDir, 'objects', object));
  } catch {
    // not cached yet (or the object was removed): download
  }
  const bytes = await download(url, signal);
  const object = sha256(bytes);
  await writeFileAtomic(join(cacheDir, 'objects', object), bytes);
  await writeFileAtomic(pointer, object);
  return bytes;
}
