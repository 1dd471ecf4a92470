import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LedgerEntry } from '../../lib/run/records';
import { rowDigest } from '../../lib/run/rowDigest';
import { RunStore } from '../../lib/run/runStore';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { startS3Server, type S3TestServer } from '../../testing/versitygw';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { runDataset, startTestServer, testInput } from '../helpers/temporalEnv';

// Bytes, not names, for S3 inputs (issue 23): an input image replaced in place in the bucket is
// noticed by a re-run, which redoes exactly the rows that use it. Each S3 input's ETag and size are
// part of the row's digest (as a local input's size and modification time are) and are recorded in
// its ledger entry. An entry written by an earlier release (its digest made without the ETag) is not
// redone on upgrade: the first re-run adopts the ETags it finds, and from then on a replacement shows.

const ROWS = 6;
let env: TestWorkflowEnvironment;
let s3: S3TestServer;
let standin: OpenAIStandin;
let client: S3Client;

beforeAll(async () => {
  s3 = await startS3Server();
  Object.assign(process.env, s3.env);
  await s3.createBucket('ids');
  ({ env } = await startTestServer());
  standin = await startOpenAIStandin();
  client = new S3Client({ region: s3.env.AWS_REGION, endpoint: s3.endpoint, forcePathStyle: true });
});
afterAll(async () => {
  client?.destroy();
  await standin?.close();
  await env?.teardown();
  await s3?.stop();
});

const put = (key: string, body: Buffer | string) => client.send(new PutObjectCommand({ Bucket: 'ids', Key: key, Body: body }));

async function putPng(key: string, color: string): Promise<void> {
  const path = join(tempDir('atelier-s3id-png-'), 'image.png');
  await writePng(path, color);
  await put(key, readFileSync(path));
}

async function entry(index: number): Promise<LedgerEntry> {
  const out = await client.send(new GetObjectCommand({ Bucket: 'ids', Key: `out/.atelier/ledger/${String(index).padStart(6, '0')}.json` }));
  return JSON.parse(await out.Body!.transformToString()) as LedgerEntry;
}

describe('S3 input images replaced in place', () => {
  it('a re-run redoes the rows whose S3 input changed, and an earlier release’s entries are adopted, not redone', async () => {
    const dir = tempDir('atelier-s3id-');
    // Rows 0-2 edit a.png, rows 3-5 edit b.png (relative paths: the dataset's own prefix).
    writeText(
      join(dir, 'rows.csv'),
      ['image,instruction', ...Array.from({ length: ROWS }, (_, i) => `${i < 3 ? 'a' : 'b'}.png,identity ${i}`)].join('\n'),
    );
    await put('data/rows.csv', readFileSync(join(dir, 'rows.csv')));
    await putPng('data/a.png', '#3a86ff');
    await putPng('data/b.png', '#ff006e');
    const workerEnv = { ...process.env, OPENAI_API_KEY: 'sk-test-s3id', OPENAI_BASE_URL: standin.baseURL, ...s3.env };
    const input = testInput({ runId: 's3id', inputPath: 's3://ids/data/rows.csv', outputDir: 's3://ids/out' });
    const run = async (): Promise<string[]> => {
      const before = standin.calls.length;
      expect(await runDataset(env, input, workerEnv)).toMatchObject({ total: ROWS, ok: ROWS });
      return standin.calls
        .slice(before)
        .map((c) => c.prompt.replace(/.*identity (\d).*/s, '$1'))
        .sort();
    };

    expect(await run()).toHaveLength(ROWS);
    // Each entry names the ETag and size of the S3 input its outputs were made from.
    const first = await entry(3);
    expect(Object.keys(first.inputs ?? {})).toEqual(['s3://ids/data/b.png']);
    expect(first.inputs!['s3://ids/data/b.png']).toMatchObject({ etag: expect.any(String), size: expect.any(Number) });

    // b.png replaced in place (same name, other bytes): rows 3-5 are redone, rows 0-2 are not.
    await putPng('data/b.png', '#8338ec');
    expect(await run()).toEqual(['3', '4', '5']);
    expect((await entry(3)).inputs!['s3://ids/data/b.png']!.etag).not.toBe(first.inputs!['s3://ids/data/b.png']!.etag);
    expect((await entry(3)).replacedDigest).toBe(first.digest);

    // Entries as an earlier release wrote them: a digest made without the ETag, no inputs recorded.
    // (That release digested an s3:// input by its reference alone: rowDigest without input identities.)
    const store = RunStore.open('s3://ids/out');
    for (const row of await store.planRows(0, ROWS)) {
      const { inputs: _inputs, replacedDigest: _replaced, ...legacy } = await entry(row.index);
      await put(
        `out/.atelier/ledger/${String(row.index).padStart(6, '0')}.json`,
        JSON.stringify({ ...legacy, digest: await rowDigest(row, input) }),
      );
    }
    // The upgrade redoes nothing: the ETags found now are adopted (and said so in the entry).
    expect(await run()).toEqual([]);
    const adopted = await entry(0);
    expect(adopted.inputsAdopted).toBe(true);
    expect(adopted.inputs!['s3://ids/data/a.png']).toMatchObject({ etag: expect.any(String) });
    // From then on a replacement shows: a.png replaced, rows 0-2 are redone.
    await putPng('data/a.png', '#fb5607');
    expect(await run()).toEqual(['0', '1', '2']);
    expect((await entry(0)).inputsAdopted).toBeUndefined();
  }, 300_000);
});
