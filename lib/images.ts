import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { ClassifiedError } from './errors';
import type { ImageRef } from './plan';

export interface LoadedImage {
  /** PNG bytes, EXIF orientation applied. */
  png: Buffer;
  width: number;
  height: number;
}

const DOWNLOAD_TIMEOUT_MS = 30_000;

async function fetchImage(url: string, signal?: AbortSignal): Promise<Buffer> {
  const timeout = AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS);
  let response: Response;
  try {
    response = await fetch(url, { signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
  } catch (err) {
    // Network errors and timeouts are worth another attempt (the activity retry policy decides).
    throw new ClassifiedError('retryable', `downloading ${url} failed: ${(err as Error).message}`);
  }
  if (!response.ok) {
    const kind = response.status >= 500 || response.status === 408 || response.status === 429 ? 'retryable' : 'inputError';
    throw new ClassifiedError(kind, `downloading ${url} failed: HTTP ${response.status}`, { status: response.status });
  }
  return Buffer.from(await response.arrayBuffer());
}

async function readSource(ref: ImageRef, signal?: AbortSignal): Promise<Buffer> {
  if (ref.kind === 'url') return fetchImage(ref.source, signal);
  try {
    return await readFile(ref.source);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ClassifiedError('inputError', `input image not found: ${ref.source}`);
    throw new ClassifiedError('inputError', `input image ${ref.source} cannot be read: ${(err as Error).message}`);
  }
}

/** Reads, decodes and normalises one input image to an upright PNG; undecodable input fails the row. */
export async function loadInputImage(ref: ImageRef, signal?: AbortSignal): Promise<LoadedImage> {
  const bytes = await readSource(ref, signal);
  if (bytes.length === 0) throw new ClassifiedError('inputError', `input image ${ref.source} is empty (0 bytes)`);
  try {
    const { data, info } = await sharp(bytes, { failOn: 'error' }).rotate().png().toBuffer({ resolveWithObject: true });
    return { png: data, width: info.width, height: info.height };
  } catch (err) {
    throw new ClassifiedError('inputError', `input image ${ref.source} is not a decodable image: ${(err as Error).message}`);
  }
}

/** Provider output → PNG bytes (outputs are named .png, so their bytes must be PNG too). */
export async function toPng(bytes: Buffer): Promise<Buffer> {
  const isPng = bytes.length > 8 && bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  if (isPng) return bytes;
  return sharp(bytes).png().toBuffer();
}
