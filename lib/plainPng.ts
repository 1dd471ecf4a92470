import { crc32, inflate, inflateSync } from 'node:zlib';
import { promisify } from 'node:util';

// A PNG that sharp would only re-encode: decoding it and encoding it again (a deflate of every pixel)
// changes no pixel and drops nothing, so the bytes can be sent or stored as they are. What makes a
// PNG plain is checked in full, short of undoing the scanline filters: every chunk's CRC, the image
// data inflating to exactly the rows its header describes, each row's filter type valid. Anything
// else (another format, interlacing, an ICC profile, EXIF orientation, text or any other metadata
// sharp would drop or apply, a bad CRC, a truncated file, bytes after IEND) is not plain, and the
// caller decodes it with sharp as before, with the same errors for a broken file.

const inflateAsync = promisify(inflate);

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * Chunks that carry nothing sharp's re-encoding would change: the image itself, its palette and
 * transparency, pixel density and the sRGB intent (both of which sharp writes too). Gamma,
 * chromaticities, ICC profiles, EXIF, text and unknown chunks send the image through sharp.
 */
const PLAIN_CHUNKS = new Set(['IHDR', 'PLTE', 'tRNS', 'IDAT', 'IEND', 'pHYs', 'sRGB']);

/** Channels per pixel by colour type (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA), with the depths each allows. */
const COLOUR_TYPES: Record<number, { channels: number; depths: number[] }> = {
  0: { channels: 1, depths: [1, 2, 4, 8, 16] },
  2: { channels: 3, depths: [8, 16] },
  3: { channels: 1, depths: [1, 2, 4, 8] },
  4: { channels: 2, depths: [8, 16] },
  6: { channels: 4, depths: [8, 16] },
};

/** Past this many decoded bytes the check is not worth it: sharp handles the image as before. */
const MAX_RAW_BYTES = 64 * 1024 * 1024;
/**
 * Up to this many decoded bytes the image data is inflated on the spot (well under a millisecond),
 * beyond it on the thread pool: an async inflate costs ~50 µs of set-up, a sync one blocks the loop.
 */
const SYNC_RAW_BYTES = 1024 * 1024;

export interface PlainPng {
  width: number;
  height: number;
}

/** The size of a plain PNG (see above), or undefined when `bytes` are anything else. */
export async function plainPng(bytes: Uint8Array): Promise<PlainPng | undefined> {
  const data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (data.length < SIGNATURE.length + 25 || !data.subarray(0, SIGNATURE.length).equals(SIGNATURE)) return undefined;
  let header: { width: number; height: number; depth: number; colour: number } | undefined;
  const idat: Buffer[] = [];
  let palette = false;
  let ended = false;
  let lastType = '';
  for (let at = SIGNATURE.length; at < data.length;) {
    if (ended || at + 12 > data.length) return undefined; // bytes after IEND, or a chunk cut short
    const length = data.readUInt32BE(at);
    if (at + 12 + length > data.length) return undefined;
    const type = data.toString('latin1', at + 4, at + 8);
    const body = data.subarray(at + 8, at + 8 + length);
    if (!PLAIN_CHUNKS.has(type)) return undefined;
    if (crc32(data.subarray(at + 4, at + 8 + length)) !== data.readUInt32BE(at + 8 + length)) return undefined;
    if ((type === 'IHDR') !== (lastType === '')) return undefined; // IHDR first, and once
    if (type === 'IDAT' && idat.length > 0 && lastType !== 'IDAT') return undefined; // IDAT chunks are consecutive
    if (type === 'IHDR') {
      if (length !== 13) return undefined;
      // Compression and filter method 0, no interlacing (Adam7 rows have other lengths: left to sharp).
      if (body[10] !== 0 || body[11] !== 0 || body[12] !== 0) return undefined;
      header = { width: body.readUInt32BE(0), height: body.readUInt32BE(4), depth: body[8]!, colour: body[9]! };
    } else if (type === 'PLTE') palette = true;
    else if (type === 'IDAT') idat.push(body);
    else if (type === 'IEND') ended = true;
    lastType = type;
    at += 12 + length;
  }
  if (!header || !ended || idat.length === 0) return undefined;
  const { width, height, depth, colour } = header;
  const kind = COLOUR_TYPES[colour];
  if (!kind || !kind.depths.includes(depth) || width === 0 || height === 0 || (colour === 3 && !palette)) return undefined;
  const rowBytes = 1 + Math.ceil((width * kind.channels * depth) / 8);
  const expected = rowBytes * height;
  if (expected > MAX_RAW_BYTES) return undefined;
  let raw: Buffer;
  try {
    const options = { maxOutputLength: expected + 1 };
    raw = expected <= SYNC_RAW_BYTES ? inflateSync(Buffer.concat(idat), options) : await inflateAsync(Buffer.concat(idat), options);
  } catch {
    return undefined; // not a zlib stream, or more data than the header says (RangeError)
  }
  if (raw.length !== expected) return undefined;
  for (let row = 0; row < height; row++) if (raw[row * rowBytes]! > 4) return undefined; // filter types 0–4
  return { width, height };
}
