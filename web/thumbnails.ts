import { createHash } from 'node:crypto';
import sharp from 'sharp';
import type { Storage } from '../storage';
import { layout } from '../lib/run/runStore';

// Thumbnails for the viewer's grid: made once per image with sharp and kept in the run's own
// folder (`.atelier/thumbs/`), so reopening the viewer, or another person's viewer on the same
// output dir, serves them without decoding a full-size image again. The key hashes what the image
// is (its source and, for outputs, the ledger entry that made it): a redone row gets new ones.

const THUMB_SIDE = 256;

export function thumbKey(identity: string): string {
  return layout.thumb(createHash('sha256').update(identity).digest('hex').slice(0, 32));
}

/**
 * The cached thumbnail of an image, made from `load()` the first time it is asked for; `check()`
 * (which throws when the image no longer holds) runs before a cached one is served.
 */
export async function thumbnail(
  storage: Storage,
  identity: string,
  load: () => Promise<Buffer>,
  check?: () => Promise<void>,
): Promise<Buffer> {
  const key = thumbKey(identity);
  const cached = await storage.read(key);
  if (cached) {
    await check?.();
    return cached;
  }
  const thumb = await sharp(await load())
    .rotate()
    .resize(THUMB_SIDE, THUMB_SIDE, { fit: 'inside', withoutEnlargement: true })
    .webp({ quality: 80 })
    .toBuffer();
  await storage.write(key, thumb);
  return thumb;
}
