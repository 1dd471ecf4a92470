import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';

export function tempDir(prefix = 'atelier-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A small real PNG with a colour of its own. */
export async function writePng(path: string, color = '#3a86ff', size = 64): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  await sharp({ create: { width: size, height: size, channels: 3, background: color } })
    .png()
    .toFile(path);
}

/** A JPEG whose EXIF says "rotate 90°": stored 40x20, upright 20x40. */
export async function writeRotatedJpeg(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  await sharp({ create: { width: 40, height: 20, channels: 3, background: '#ff006e' } })
    .jpeg()
    .withMetadata({ orientation: 6 })
    .toFile(path);
}

export function writeText(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
}

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
export function isPng(bytes: Buffer): boolean {
  return bytes.subarray(0, 8).equals(PNG_MAGIC);
}
