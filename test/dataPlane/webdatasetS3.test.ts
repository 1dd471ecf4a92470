import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRunDataset, type DatasetHeader } from '../../lib/dataset';
import type { ImageRef } from '../../lib/dataset/common';
import { TarWriter } from '../../lib/dataset/tar';
import { SHARD_RANGE_BYTES } from '../../lib/dataset/webdataset';
import { adoptStorage, openStorage } from '../../storage';
import { S3Storage } from '../../storage/s3';
import { CountingStorage } from '../../testing/countingStorage';
import { startS3Server, type S3TestServer } from '../../testing/versitygw';
import { tempDir } from '../helpers/fixtures';

// WebDataset shards in object storage are read where they are, by ranged GETs, a shard at a time:
// never copied whole (a shard can be gigabytes). Checked against a real S3 server (versitygw).

let s3: S3TestServer;
const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

beforeAll(async () => {
  s3 = await startS3Server();
  Object.assign(process.env, s3.env);
  await s3.createBucket('wds');
}, 60_000);
afterAll(async () => s3?.stop());

async function putShard(key: string, members: Array<[string, Uint8Array | string]>, truncateTo?: number): Promise<void> {
  const path = join(tempDir(), 'shard.tar');
  const tar = new TarWriter(path);
  for (const [name, data] of members) await tar.add(name, typeof data === 'string' ? Buffer.from(data) : data, new Date(0));
  await tar.finish();
  const storage = openStorage('s3://wds');
  if (truncateTo === undefined) await storage.writeFromFile(key, path);
  else {
    const { readFileSync } = await import('node:fs');
    await storage.write(key, readFileSync(path).subarray(0, truncateTo));
  }
}

async function readAll(inputPath: string) {
  const blobs: string[] = [];
  let header: DatasetHeader | undefined;
  const rows = [];
  const storeBlob = async (bytes: Uint8Array): Promise<ImageRef> => {
    blobs.push(sha(bytes));
    return { kind: 'blob', source: `blobs/${sha(bytes)}` };
  };
  for await (const row of readRunDataset({ inputPath, instructionKey: 'instruction' }, storeBlob, (h) => (header = h))) rows.push(row);
  return { rows, blobs, header };
}

describe('WebDataset shards in object storage', () => {
  it('streams a brace pattern of s3:// shards, a member larger than one range included', async () => {
    // Bigger than one ranged read, so the member spans several GETs (and not a multiple of a block).
    const big = randomBytes(SHARD_RANGE_BYTES + 123_457);
    const small = randomBytes(3000);
    await putShard('set/wds-000000.tar', [
      ['000000.png', small],
      ['000000.txt', 'make it red'],
      ['000001.jpg', big],
      ['000001.json', JSON.stringify({ instruction: 'make it blue', source: 'web' })],
    ]);
    await putShard('set/wds-000001.tar', [
      ['000002.webp', small],
      ['000002.txt', 'make it green'],
    ]);

    const counted = new CountingStorage(new S3Storage('s3://wds/set'));
    adoptStorage(counted);
    const { rows, blobs, header } = await readAll('s3://wds/set/wds-{000000..000001}.tar');
    // A stat per shard, then ranges: the first shard needs two (it is over one range), the second one.
    expect(counted.counts).toEqual({ stat: 2, readRange: 3 });

    expect(rows.map((r) => r.turns[0])).toEqual(['make it red', 'make it blue', 'make it green']);
    expect(rows.map((r) => r.where)).toEqual([
      'wds-000000.tar sample 000000',
      'wds-000000.tar sample 000001',
      'wds-000001.tar sample 000002',
    ]);
    // The bytes are the members' bytes, the one read across ranges included.
    expect(blobs).toEqual([sha(small), sha(big), sha(small)]);
    expect(rows[1]!.record).toMatchObject({ source: 'web', __key__: '000001' });
    expect(header?.columns).toEqual(expect.arrayContaining(['__key__', 'instruction', 'image', 'source']));
  }, 120_000);

  it('names the missing shards and a shard truncated in a member, before or while reading', async () => {
    await putShard('gaps/wds-000000.tar', [
      ['a.png', randomBytes(100)],
      ['a.txt', 'x'],
    ]);
    await expect(readAll('s3://wds/gaps/wds-{000000..000002}.tar')).rejects.toThrow(
      /wds-\{000000\.\.000002\}\.tar: 2 of 3 shard\(s\) not found: s3:\/\/wds\/gaps\/wds-000001\.tar, s3:\/\/wds\/gaps\/wds-000002\.tar/,
    );

    await putShard(
      'cut/wds-000000.tar',
      [
        ['a.png', randomBytes(5000)],
        ['a.txt', 'x'],
      ],
      2048,
    );
    await expect(readAll('s3://wds/cut/wds-000000.tar')).rejects.toThrow(/wds-000000\.tar: truncated in member "a\.png"/);
  }, 120_000);
});
