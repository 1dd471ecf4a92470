import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parquetReadObjects } from 'hyparquet';
import { expect } from 'vitest';
import type { DatasetRunSummary, ProgressSnapshot } from '../../lib/shared/types';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { startS3FaultProxy, type S3FaultProxy } from '../../testing/s3FaultProxy';
import { startS3Server, type S3TestServer } from '../../testing/versitygw';
import { resumeSignal } from '../../workflows/messages';
import { tempDir, writePng } from './fixtures';
import { startTestServer, testInput, watchDatasetRun, type WatchedRun } from './temporalEnv';

// The test bed of the store-fault tests (test/dataPlane/storeFaults*.e2e.test.ts): s3 → s3 runs
// (dataset, its image and every output in versitygw) on the Temporal dev server, the S3 traffic of
// this process (workers and activities) going through a fault proxy, the provider the OpenAI
// stand-in answering in a second (a fault put in after the first rows lands mid-run).

export const ROWS = 12;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A run the helpers can watch: its handle and its summary (rejects if the run fails). */
export type RunHandle = { handle: WorkflowHandle; done: Promise<DatasetRunSummary> };

export interface StoreFaultsBed {
  env: TestWorkflowEnvironment;
  s3: S3TestServer;
  proxy: S3FaultProxy;
  standin: OpenAIStandin;
  /** The environment of the workers (the stand-in's endpoint and key; S3 through the proxy). */
  workerEnv: NodeJS.ProcessEnv;
  /** A bucket of its own for a case: the dataset and its image; returns the run's output dir (out/). */
  dataset(bucket: string): Promise<string>;
  /** Starts the run of a case's dataset with the project's real workers (window 4). */
  start(bucket: string, outputDir: string): Promise<WatchedRun>;
  /** Probe writes of a paused run (workflows/dataset/storePause.ts) that reached the proxy for a bucket. */
  probes(bucket: string): number;
  /** Every row ok, the provider paid once per row (or at most `maxCalls` times in all), the results tables whole. */
  expectWhole(bucket: string, summary: DatasetRunSummary, maxCalls?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startStoreFaultsBed(): Promise<StoreFaultsBed> {
  const s3 = await startS3Server();
  const proxy = await startS3FaultProxy(s3.endpoint);
  // Every S3 request of this process (the workers' storage) goes through the proxy.
  Object.assign(process.env, s3.env, { AWS_ENDPOINT_URL_S3: proxy.endpoint, AWS_ENDPOINT_URL: proxy.endpoint });
  // The test's own client talks to the store directly, past the faults.
  const direct = new S3Client({ region: s3.env.AWS_REGION, endpoint: s3.endpoint, forcePathStyle: true });
  const { env } = await startTestServer();
  // Each call takes a second, so a fault put in after the first rows lands in the middle of the run.
  const standin = await startOpenAIStandin({ latencyMs: 1000 });
  const workerEnv = { ...process.env, OPENAI_API_KEY: 'sk-test-faults', OPENAI_BASE_URL: standin.baseURL };
  const dir = tempDir('atelier-faults-');
  await writePng(join(dir, 'in.png'));
  const png = readFileSync(join(dir, 'in.png'));

  const text = async (bucket: string, key: string): Promise<string> => {
    const out = await direct.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return out.Body!.transformToString();
  };

  return {
    env,
    s3,
    proxy,
    standin,
    workerEnv,
    async dataset(bucket) {
      await s3.createBucket(bucket);
      const rows = ['image,instruction', ...Array.from({ length: ROWS }, (_, i) => `in.png,${bucket} row ${i}`)].join('\n');
      await direct.send(new PutObjectCommand({ Bucket: bucket, Key: 'data/rows.csv', Body: rows }));
      await direct.send(new PutObjectCommand({ Bucket: bucket, Key: 'data/in.png', Body: png }));
      return `s3://${bucket}/out`;
    },
    start(bucket, outputDir) {
      const input = testInput({ runId: `faults-${bucket}`, inputPath: `s3://${bucket}/data/rows.csv`, outputDir, window: 4 });
      return watchDatasetRun(env, input, workerEnv);
    },
    probes(bucket) {
      return proxy.requests.filter((r) => r.method === 'PUT' && r.url.startsWith(`/${bucket}/out/.atelier/store-probe.json`)).length;
    },
    async expectWhole(bucket, summary, maxCalls) {
      if (summary.ok !== ROWS) {
        // What the rows that are not ok say, for a failure that shows once under load.
        const notOk = (await text(bucket, 'out/results.jsonl').catch((err: Error) => `unreadable: ${err.message}`))
          .split('\n')
          .filter((l) => l && !l.includes('"status":"ok"'))
          .map((l) => l.slice(0, 600));
        expect(summary, `summary ${JSON.stringify(summary)}; rows not ok: ${notOk.join(' | ')}`).toMatchObject({ total: ROWS, ok: ROWS });
      }
      expect(summary).toMatchObject({ total: ROWS, ok: ROWS });
      if (maxCalls === undefined) expect(standin.callsFor(`${bucket} row `), 'provider calls').toHaveLength(ROWS);
      else expect(standin.callsFor(`${bucket} row `).length, 'provider calls').toBeLessThanOrEqual(maxCalls);
      const lines = (await text(bucket, 'out/results.jsonl'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      const expected = Array.from({ length: ROWS }, (_, i) => [`${bucket} row ${i}`, 'ok']);
      expect(lines.map((l) => [l.instruction, l.status])).toEqual(expected);
      expect((await text(bucket, 'out/results.csv')).trim().split('\n')).toHaveLength(ROWS + 1);
      const parquet = await direct.send(new GetObjectCommand({ Bucket: bucket, Key: 'out/results.parquet' }));
      const bytes = await parquet.Body!.transformToByteArray();
      const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
      const table = await parquetReadObjects({ file, columns: ['instruction', 'status'] });
      expect(table.map((r) => [r.instruction, r.status])).toEqual(expected);
      for (const line of lines)
        for (const path of line.output_image as string[]) expect((await text(bucket, `out/${path}`)).length, path).toBeGreaterThan(0);
    },
    async close() {
      direct.destroy();
      await standin.close();
      await env.teardown();
      await proxy.close();
      await s3.stop();
    },
  };
}

/**
 * Polls the run's progress until `ready` holds (that progress) or the run is done (its summary).
 * A query is not awaited past the run's end: its workers stop then and nothing would answer it.
 */
export async function until(
  run: RunHandle,
  ready: (p: ProgressSnapshot) => boolean,
  timeoutMs = 120_000,
): Promise<{ progress?: ProgressSnapshot; summary?: DatasetRunSummary }> {
  let summary: DatasetRunSummary | undefined;
  const ended = run.done.then((s) => void (summary = s));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await Promise.race([ended, sleep(250)]);
    if (summary) return { summary };
    const query = run.handle.query('progress') as Promise<ProgressSnapshot>;
    query.catch(() => undefined);
    const progress = await Promise.race([query, ended.then(() => undefined)]);
    if (summary) return { summary };
    if (progress && ready(progress)) return { progress };
    if (Date.now() > deadline) throw new Error(`the run did not get there in ${timeoutMs} ms: ${JSON.stringify(progress)}`);
  }
}

/**
 * Waits until the run is done (its summary) or paused (its progress then). A store fault pauses the
 * run once a row is set aside, and a row holding a paid answer waits up to the worker's store
 * patience (120 s) first: when every row in flight holds one, the pause takes that long.
 */
export async function doneOrPaused(run: RunHandle): Promise<{ paused?: ProgressSnapshot; summary?: DatasetRunSummary }> {
  const { progress, summary } = await until(run, (p) => p.paused !== null, 200_000);
  return progress ? { paused: progress } : { summary: summary! };
}

/**
 * Waits for the run to finish with no `resume` from anyone: a pause for the store lifts by itself
 * once the store answers. Returns the pause reasons seen on the way.
 */
export async function finishAlone(run: RunHandle, timeoutMs = 200_000): Promise<{ summary: DatasetRunSummary; reasons: string[] }> {
  const reasons = new Set<string>();
  const { summary } = await until(
    run,
    (p) => {
      if (p.paused) reasons.add(p.paused.reason);
      return false;
    },
    timeoutMs,
  );
  return { summary: summary!, reasons: [...reasons] };
}

/** Resumes a paused run by hand (the store is back) until it finishes; returns the pause reasons met. */
export async function finishByHand(run: RunHandle): Promise<{ summary: DatasetRunSummary; reasons: string[] }> {
  const reasons: string[] = [];
  for (;;) {
    const { paused, summary } = await doneOrPaused(run);
    if (summary) return { summary, reasons };
    reasons.push(paused!.paused!.reason);
    if (reasons.length > 5) throw new Error(`the run paused ${reasons.length} times: ${reasons.join(' | ')}`);
    await run.handle.signal(resumeSignal);
    await until(run, (p) => p.paused === null);
  }
}
