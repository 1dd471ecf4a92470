import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeOutput, loadInputImage } from '../../lib/images';
import { plainPng } from '../../lib/plainPng';

// The per-row fast path for images (issue 21, per-row CPU): a PNG that sharp would only re-encode is
// sent and stored as it is; everything else still goes through sharp, with today's result and errors.

const ENCODING = { jpegQuality: 95, webpQuality: 95 };

function chunk(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(body.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), body])), 0);
  return Buffer.concat([head, body, crc]);
}

/** An 8-bit RGB PNG of `width`×`height` whose image data holds `rows` rows (a lie when rows ≠ height). */
function handMadePng(width: number, height: number, rows = height, extra: Buffer[] = []): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const raw = Buffer.alloc(rows * (1 + width * 3), 0x40);
  for (let r = 0; r < rows; r++) raw[r * (1 + width * 3)] = 0; // filter type 0
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    ...extra,
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

let dir: string;
let plain: Buffer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'atelier-plainpng-'));
  plain = await sharp({ create: { width: 24, height: 16, channels: 3, background: '#336699' } })
    .png()
    .toBuffer();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function load(bytes: Buffer, limits?: { maxSide?: number; maxBytes?: number }) {
  const path = join(dir, `in-${Math.random().toString(16).slice(2)}.png`);
  writeFileSync(path, bytes);
  return loadInputImage({ kind: 'file', source: path }, { cacheDir: dir, ...(limits ? { limits } : {}) });
}

describe('plainPng', () => {
  it('takes a plain PNG, palette or RGBA, with its size', async () => {
    expect(await plainPng(plain)).toEqual({ width: 24, height: 16 });
    const palette = await sharp(plain).png({ palette: true }).toBuffer();
    expect(await plainPng(palette)).toEqual({ width: 24, height: 16 });
    const rgba = await sharp({ create: { width: 3, height: 5, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.5 } } })
      .png()
      .toBuffer();
    expect(await plainPng(rgba)).toEqual({ width: 3, height: 5 });
    expect(await plainPng(handMadePng(7, 4))).toEqual({ width: 7, height: 4 });
    // Over 1 MB decoded: inflated on the thread pool, same answer.
    const large = await sharp({ create: { width: 700, height: 600, channels: 3, background: '#123456' } })
      .png()
      .toBuffer();
    expect(await plainPng(large)).toEqual({ width: 700, height: 600 });
    expect(await plainPng(large.subarray(0, large.length - 30))).toBeUndefined();
  });

  it('refuses what sharp must handle or refuse: other formats, metadata, interlacing, damage', async () => {
    expect(await plainPng(await sharp(plain).jpeg().toBuffer())).toBeUndefined();
    expect(await plainPng(await sharp(plain).png({ progressive: true }).toBuffer())).toBeUndefined();
    // EXIF orientation must be applied; text is metadata sharp drops.
    expect(await plainPng(await sharp(plain).withMetadata({ orientation: 6 }).png().toBuffer())).toBeUndefined();
    expect(await plainPng(handMadePng(7, 4, 4, [chunk('tEXt', Buffer.from('Comment\0hello', 'latin1'))]))).toBeUndefined();
    // Cut short, a flipped byte (CRC), bytes after IEND.
    expect(await plainPng(plain.subarray(0, plain.length - 20))).toBeUndefined();
    const flipped = Buffer.from(plain);
    flipped[plain.length - 20]! ^= 0xff;
    expect(await plainPng(flipped)).toBeUndefined();
    expect(await plainPng(Buffer.concat([plain, Buffer.from('trailing')]))).toBeUndefined();
    // Valid chunks whose image data is shorter or longer than the header says.
    expect(await plainPng(handMadePng(7, 4, 3))).toBeUndefined();
    expect(await plainPng(handMadePng(7, 4, 5))).toBeUndefined();
    expect(await plainPng(Buffer.alloc(0))).toBeUndefined();
  });
});

describe('loadInputImage and encodeOutput with plain PNGs', () => {
  it('sends a plain PNG within the limits as it is, and decodes one over them as before', async () => {
    const same = await load(plain, { maxSide: 64, maxBytes: 1_000_000 });
    expect(same).toEqual({ png: plain, width: 24, height: 16 });
    const shrunk = await load(plain, { maxSide: 12 });
    expect([shrunk.width, shrunk.height]).toEqual([12, 8]);
  });

  it('still turns an EXIF-rotated PNG upright and refuses a damaged one before any call', async () => {
    const rotated = await load(await sharp(plain).withMetadata({ orientation: 6 }).png().toBuffer());
    expect([rotated.width, rotated.height]).toEqual([16, 24]);
    await expect(load(handMadePng(7, 4, 3))).rejects.toThrow(/is not a decodable image/);
    await expect(load(plain.subarray(0, plain.length - 20))).rejects.toThrow(/is not a decodable image/);
  });

  it('stores a plain PNG output as sent; re-encodes metadata away, other formats and damage as before', async () => {
    expect(await encodeOutput(plain, 'png', ENCODING)).toBe(plain);
    const withText = handMadePng(7, 4, 4, [chunk('tEXt', Buffer.from('Comment\0hello', 'latin1'))]);
    const reencoded = await encodeOutput(withText, 'png', ENCODING);
    expect(reencoded.includes(Buffer.from('tEXt'))).toBe(false);
    expect(await plainPng(reencoded)).toEqual({ width: 7, height: 4 });
    expect((await sharp(await encodeOutput(plain, 'jpeg', ENCODING)).metadata()).format).toBe('jpeg');
    await expect(encodeOutput(handMadePng(7, 4, 3), 'png', ENCODING)).rejects.toThrow(/undecodable image/);
  });
});
