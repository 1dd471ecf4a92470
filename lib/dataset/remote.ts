import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { objectAt, openStorage } from '../../storage';
import { DatasetError } from '../shared/errors';

/** A dataset in object storage, copied locally for the readers (which stream and seek in files). */
export interface DatasetCopy {
  localPath: string;
  /** The s3:// location a local file of the copy came from. */
  origin: (file: string) => string;
  cleanup: () => Promise<void>;
}

/**
 * Copies `s3://bucket/path/data.csv` (one object) or `s3://bucket/path/shards` (a prefix of
 * .parquet objects) into a temp folder.
 */
export async function fetchDatasetCopy(location: string): Promise<DatasetCopy> {
  const dir = await mkdtemp(join(tmpdir(), 'atelier-dataset-'));
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    const { storage, key } = objectAt(location);
    const name = key || 'dataset';
    const single = await storage.read(key);
    if (single) {
      const localPath = join(dir, name);
      await writeLocal(localPath, single);
      return { localPath, origin: () => location, cleanup };
    }
    const folder = openStorage(location);
    const shards = (await folder.list('')).filter((k) => !k.includes('/') && k.toLowerCase().endsWith('.parquet'));
    if (shards.length === 0) throw new DatasetError(`input not found: ${location} (no such object, and no *.parquet objects under it)`);
    const localPath = join(dir, name);
    for (const shard of shards) await writeLocal(join(localPath, shard), (await folder.read(shard))!);
    return { localPath, origin: (file) => `${location.replace(/\/+$/, '')}/${relative(localPath, file)}`, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

async function writeLocal(path: string, bytes: Buffer): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const stream = createWriteStream(path);
  await new Promise<void>((resolve, reject) => {
    stream.on('error', reject);
    stream.end(bytes, resolve);
  });
}
