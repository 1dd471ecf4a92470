import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { objectAt, openStorage } from '../storage';
import { ClassifiedError } from './shared/errors';
import { plainPng, type PlainPng } from './plainPng';
import { readConfined } from './dataset/confine';
import { fetchCached, type DownloadLimits } from './dataset/imageCache';
import type { OutputFormat } from './run/outputNames';
import type { ImageRef } from './run/plan';
import type { OutputEncoding } from './shared/types';

export interface LoadedImage {
  /** PNG bytes, EXIF orientation applied, within the backend's limits. */
  png: Buffer;
  width: number;
  height: number;
}

/** What a backend accepts for one input image. */
export interface ImageLimits {
  maxBytes?: number;
  maxSide?: number;
}

/** The image type from its first bytes (PNG, JPEG, WebP, GIF), else the fallback. */
export function sniffImageType(data: Uint8Array, fallback = 'image/png'): string {
  const b = Buffer.from(data.buffer, data.byteOffset, Math.min(data.byteLength, 12));
  if (b.length >= 8 && b.readUInt32BE(0) === 0x89504e47) return 'image/png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  if (b.length >= 12 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP') return 'image/webp';
  if (b.length >= 6 && b.toString('latin1', 0, 3) === 'GIF') return 'image/gif';
  return fallback;
}

/** The bytes and declared type of a `data:` URI, or undefined when it is not one. */
export function parseDataUri(uri: string): { data: Buffer; mimeType?: string } | undefined {
  const match = /^data:([^;,]+)?(;base64)?,(.*)$/s.exec(uri);
  if (!match) return undefined;
  const data = match[2] ? Buffer.from(match[3]!, 'base64') : Buffer.from(decodeURIComponent(match[3]!));
  return { data, ...(match[1] ? { mimeType: match[1] } : {}) };
}

function decodeDataUri(uri: string): Buffer {
  const parsed = parseDataUri(uri);
  if (!parsed) throw new ClassifiedError('inputError', 'a data: URI input image is malformed');
  return parsed.data;
}

function describe(ref: ImageRef): string {
  return ref.kind === 'data' ? 'data: URI image' : ref.source;
}

/** Where a row's input images come from besides their own reference. */
export interface ImageSources {
  /** The image cache's location (a folder or s3:// prefix) for downloaded URLs. */
  cacheDir: string;
  /** The run's output location: `blob` refs are keys in its storage. */
  runDir?: string;
  download?: DownloadLimits;
  signal?: AbortSignal;
}

/** An input image's bytes as stored (not decoded): the export embeds them, the model call decodes them. */
export async function readSource(ref: ImageRef, sources: ImageSources): Promise<Buffer> {
  if (ref.kind === 'url') return fetchCached(ref.source, sources.cacheDir, sources.signal, sources.download);
  if (ref.kind === 'data') return decodeDataUri(ref.source);
  if (ref.kind === 's3' || ref.kind === 'blob') {
    const { storage, key } = ref.kind === 's3' ? objectAt(ref.source) : { storage: openStorage(sources.runDir!), key: ref.source };
    const bytes = await storage.read(key);
    if (!bytes) throw new ClassifiedError('inputError', `input image not found: ${storage.describe(key)}`);
    return bytes;
  }
  try {
    return ref.within !== undefined ? await readConfined({ source: ref.source, within: ref.within }) : await readFile(ref.source);
  } catch (err) {
    if (err instanceof ClassifiedError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ClassifiedError('inputError', `input image not found: ${ref.source}`);
    throw new ClassifiedError('inputError', `input image ${ref.source} cannot be read: ${(err as Error).message}`);
  }
}

/**
 * Formats Atelier publishes (exports, the viewer): those sharp decodes that PIL, behind the `datasets`
 * Image feature, opens too. SVG is text sharp renders and PIL cannot open; it is not among them.
 */
const PUBLISHED_FORMATS = new Set(['png', 'jpeg', 'webp', 'gif', 'tiff']);

/**
 * Why these bytes are not an image to publish, or undefined when they are: decoded whole (a file
 * cut short fails, not only its header), in a format of PUBLISHED_FORMATS. A file named .png that
 * holds a key, HTML or half a picture is refused here.
 */
export async function imageProblem(bytes: Uint8Array): Promise<string | undefined> {
  if (bytes.byteLength === 0) return 'it is empty (0 bytes)';
  try {
    const { format } = await sharp(bytes, { failOn: 'error' }).metadata();
    if (!PUBLISHED_FORMATS.has(format ?? '')) return `its format (${format ?? 'unknown'}) is not png, jpeg, webp, gif or tiff`;
    await sharp(bytes, { failOn: 'error' }).raw().toBuffer();
    return undefined;
  } catch (err) {
    return `it does not decode as an image (${(err as Error).message.split('\n')[0]})`;
  }
}

/**
 * Shrinks a PNG until it fits the limits, keeping its aspect ratio: first to the side limit, then
 * by 0.8 per step while the encoded size is still too large.
 */
export async function fitWithinLimits(image: LoadedImage, limits: ImageLimits): Promise<LoadedImage> {
  let { png, width, height } = image;
  const longest = Math.max(width, height);
  let scale = limits.maxSide && longest > limits.maxSide ? limits.maxSide / longest : 1;
  for (let step = 0; step < 30; step++) {
    if (scale < 1) {
      const w = Math.max(1, Math.round(image.width * scale));
      const h = Math.max(1, Math.round(image.height * scale));
      png = await sharp(image.png).resize(w, h, { fit: 'fill' }).png().toBuffer();
      width = w;
      height = h;
    }
    if (!limits.maxBytes || png.length <= limits.maxBytes) return { png, width, height };
    scale *= 0.8;
  }
  throw new ClassifiedError('inputError', `an input image cannot be shrunk under ${limits.maxBytes} bytes`);
}

function withinLimits(size: PlainPng, bytes: number, limits: ImageLimits | undefined): boolean {
  return (!limits?.maxSide || Math.max(size.width, size.height) <= limits.maxSide) && (!limits?.maxBytes || bytes <= limits.maxBytes);
}

/** Reads, decodes and normalises one input image to an upright PNG; undecodable input fails the row. */
export async function loadInputImage(ref: ImageRef, options: ImageSources & { limits?: ImageLimits }): Promise<LoadedImage> {
  const bytes = await readSource(ref, options);
  if (bytes.length === 0) throw new ClassifiedError('inputError', `input image ${describe(ref)} is empty (0 bytes)`);
  // A plain PNG within the limits is already what the steps below make of it (lib/plainPng.ts): it
  // goes as it is, without a decode and a re-encode per row. Anything else is decoded as before.
  const plain = await plainPng(bytes);
  if (plain && withinLimits(plain, bytes.length, options.limits)) return { png: bytes, ...plain };
  let loaded: LoadedImage;
  try {
    const { data, info } = await sharp(bytes, { failOn: 'error' }).rotate().png().toBuffer({ resolveWithObject: true });
    loaded = { png: data, width: info.width, height: info.height };
  } catch (err) {
    throw new ClassifiedError('inputError', `input image ${describe(ref)} is not a decodable image: ${(err as Error).message}`);
  }
  return options.limits ? fitWithinLimits(loaded, options.limits) : loaded;
}

/** Encodes a provider's output in the format its name asks for; undecodable output is retryable. */
export async function encodeOutput(bytes: Buffer, format: OutputFormat, encoding: OutputEncoding): Promise<Buffer> {
  // A plain PNG (checked whole: lib/plainPng.ts) for a .png output: re-encoding would give the same
  // pixels and no metadata it lacks, so it is stored as the provider sent it.
  if (format === 'png' && (await plainPng(bytes))) return bytes;
  try {
    const image = sharp(bytes, { failOn: 'error' });
    if (format === 'jpeg') return await image.flatten({ background: '#ffffff' }).jpeg({ quality: encoding.jpegQuality }).toBuffer();
    if (format === 'webp') return await image.webp({ quality: encoding.webpQuality }).toBuffer();
    return await image.png().toBuffer();
  } catch (err) {
    throw new ClassifiedError('retryable', `the provider returned an undecodable image: ${(err as Error).message}`);
  }
}
