import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrchestrationActivities } from '../activities/orchestration';
import { writeResultsTables } from '../activities/resultsTables';
import { writeLedgerEntry } from '../lib/run/ledger';
import { readPlanRows } from '../lib/run/plan';
import { adoptStorage } from '../storage';
import { S3Storage } from '../storage/s3';
import { CountingStorage } from '../testing/countingStorage';
import { startS3Server, type S3TestServer } from '../testing/versitygw';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { testInput } from './helpers/temporalEnv';

// The results tables of a run whose folder is on S3 (versitygw): a refresh reads its kept chunks in
// a few ranged requests and writes the bytes a full rewrite gives.

let s3: S3TestServer;

beforeAll(async () => {
  s3 = await startS3Server();
  Object.assign(process.env, s3.env);
  await s3.createBucket('tables');
}, 120_000);

afterAll(async () => {
  await s3?.stop();
});

describe('results tables on S3', () => {
  it('a refresh after rows in two chunks reads the kept chunks in a few ranged requests and writes the bytes of a full rewrite', async () => {
    const rows = 2500;
    const dir = tempDir('atelier-results-s3-');
    await writePng(join(dir, 'a.png'));
    writeText(join(dir, 'rows.csv'), ['input_images,instruction', ...Array.from({ length: rows }, (_, i) => `a.png,edit ${i}`)].join('\n'));
    const outputDir = 's3://tables/run/out';
    const runId = 'results-s3';
    await createOrchestrationActivities().planRun(testInput({ runId, inputPath: join(dir, 'rows.csv'), outputDir }));
    const plan = await readPlanRows(outputDir, 0, rows);
    const fail = async (indexes: number[]) => {
      for (const index of indexes) {
        const row = plan[index]!;
        await writeLedgerEntry(outputDir, {
          index,
          position: row.position,
          runId,
          model: 'gpt-image-2',
          digest: row.digest!,
          finishedAt: new Date().toISOString(),
          status: 'failed',
          errorType: 'ContentRefused',
          error: `row ${index} refused`,
          attempts: 1,
        });
      }
    };
    const args = { runId, outputDir };
    await fail([3]);
    await writeResultsTables(args);

    const changed = [10, 11, 2400];
    await fail(changed);
    const counting = new CountingStorage(new S3Storage(outputDir));
    adoptStorage(counting);
    let info;
    try {
      ({ info } = await writeResultsTables({ ...args, changedRows: changed.map((i): [number, number] => [i, i]) }));
    } finally {
      adoptStorage(new S3Storage(outputDir));
    }
    expect(info).toMatchObject({ full: false, chunksEncoded: 2, entriesRead: 3 });
    // Kept parts: one ranged read per table part of the one pack in use (states of the two chunks
    // encoded again included), plus the plan rows of those two chunks.
    expect(counting.counts.readRange).toBeLessThanOrEqual(4 + 2 * 2);
    expect(counting.total()).toBeLessThanOrEqual(30);

    const store = new S3Storage(outputDir);
    const names = ['results.csv', 'results.jsonl', 'results.parquet'];
    const refreshed = await Promise.all(names.map((n) => store.read(n)));
    await store.removeAll('.atelier/results');
    const uploads = new CountingStorage(new S3Storage(outputDir));
    adoptStorage(uploads);
    try {
      expect((await writeResultsTables(args)).info.full).toBe(true);
    } finally {
      adoptStorage(new S3Storage(outputDir));
    }
    const scratch = await Promise.all(names.map((n) => store.read(n)));
    names.forEach((name, n) => expect(refreshed[n]!.equals(scratch[n]!), name).toBe(true));
    expect(refreshed[0]!.toString().split('\n')[2401]).toMatch(/failed,ContentRefused: row 2400 refused$/);
    // A full write uploads the tables once: its pack is the chunks' metadata and states only.
    const tableBytes = scratch.reduce((sum, b) => sum + b!.length, 0);
    expect(uploads.bytesWritten((key) => names.includes(key))).toBe(tableBytes);
    expect(uploads.bytesWritten((key) => key.startsWith('.atelier/results/packs/'))).toBeLessThan(tableBytes);

    // Another writer's results.jsonl since the manifest (same length, other bytes): not the version
    // the manifest names (If-Match), so a refresh keeps none of it and writes everything again.
    await store.write('results.jsonl', scratch[1]!.toString().replace('"pending"', '"PENDING"'));
    await fail([5]);
    expect((await writeResultsTables({ ...args, changedRows: [[5, 5]] })).info).toMatchObject({ full: true, chunksEncoded: 3 });
    expect((await store.read('results.jsonl'))!.toString()).not.toContain('PENDING');
  });
});
