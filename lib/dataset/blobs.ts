import { createHash } from 'node:crypto';
import type { Storage } from '../../storage';
import { runMetaKey } from '../shared/constants';
import { sniffImageType } from '../images';
import type { ImageRef } from '../run/plan';

/**
 * Images embedded in a dataset (Parquet bytes), stored once by content in the run's storage
 * (`.atelier/blobs/<sha256>.<ext>`); rows refer to them as `blob` refs that any worker of the run
 * reads through the same storage.
 */
export function runBlobStore(storage: Storage): (bytes: Uint8Array) => Promise<ImageRef> {
  const stored = new Set<string>();
  return async (bytes) => {
    const digest = createHash('sha256').update(bytes).digest('hex');
    const type = sniffImageType(bytes, 'application/octet-stream');
    const ext = type.startsWith('image/') ? type.slice(6).replace('jpeg', 'jpg') : 'bin';
    const key = runMetaKey(`blobs/${digest}.${ext}`);
    if (!stored.has(key)) {
      await storage.create(key, bytes);
      stored.add(key);
    }
    return { kind: 'blob', source: key };
  };
}
