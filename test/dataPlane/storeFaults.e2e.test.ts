import { readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parquetReadObjects } from 'hyparquet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatasetRunSummary, ProgressSnapshot } from '../../lib/shared/types';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { S3_REFUSALS, startS3FaultProxy, type S3FaultProxy } from '../../testing/s3FaultProxy';
import { startS3Server, type S3TestServer } from '../../testing/versitygw';
import { resumeSignal } from '../../workflows/messages';
import { ORCHESTRATOR_QUEUE } from '../../lib/shared/constants';
import { CliProcess } from '../helpers/cli';
import { tempDir, writePng } from '../helpers/fixtures';
import { startTestServer, testInput, watchDatasetRun, type WatchedRun } from '../helpers/temporalEnv';

// Issue 21, "faults are pauses, not payments", run by run: an s3 → s3 run (dataset, its image and
// every output in versitygw) with the project's real workers on the Temporal dev server, the S3
// traffic of this process (workers and activities) going through a fault proxy. Each case puts one
// store fault in the middle of a run and checks what the user pays and gets: every row ends ok
// (a pause for the store lifting by itself once the store answers; by `resume` in one case), the
// provider was called once per row, and the results tables hold every row. A store that is missing
// or refuses the worker (bucket gone, credentials) must pause the run with one plain reason, rows in
// flight waiting rather than failing, and so must a page of rows or the final tables failing on it.

const ROWS = 12;
let env: TestWorkflowEnvironment;
let s3: S3TestServer;
let proxy: S3FaultProxy;
let standin: OpenAIStandin;
let direct: S3Client;
let workerEnv: NodeJS.ProcessEnv;
let png: Buffer;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  s3 = await startS3Server();
  proxy = await startS3FaultProxy(s3.endpoint);
  // Every S3 request of this process (the workers' storage) goes through the proxy.
  Object.assign(process.env, s3.env, { AWS_ENDPOINT_URL_S3: proxy.endpoint, AWS_ENDPOINT_URL: proxy.endpoint });
  // The test's own client talks to the store directly, past the faults.
  direct = new S3Client({ region: s3.env.AWS_REGION, endpoint: s3.endpoint, forcePathStyle: true });
  ({ env } = await startTestServer());
  // Each call takes a second, so a fault put in after the first rows lands in the middle of the run.
  standin = await startOpenAIStandin({ latencyMs: 1000 });
  workerEnv = { ...process.env, OPENAI_API_KEY: 'sk-test-faults', OPENAI_BASE_URL: standin.baseURL };
  const dir = tempDir('atelier-faults-');
  await writePng(join(dir, 'in.png'));
  png = readFileSync(join(dir, 'in.png'));
}, 120_000);

afterAll(async () => {
  direct?.destroy();
  await standin?.close();
  await env?.teardown();
  await proxy?.close();
  await s3?.stop();
});

/** A bucket of its own for a case: the dataset and its image, the run's outputs under out/. */
async function dataset(bucket: string): Promise<string> {
  await s3.createBucket(bucket);
  const rows = ['image,instruction', ...Array.from({ length: ROWS }, (_, i) => `in.png,${bucket} row ${i}`)].join('\n');
  await direct.send(new PutObjectCommand({ Bucket: bucket, Key: 'data/rows.csv', Body: rows }));
  await direct.send(new PutObjectCommand({ Bucket: bucket, Key: 'data/in.png', Body: png }));
  return `s3://${bucket}/out`;
}

function start(bucket: string, outputDir: string): Promise<WatchedRun> {
  const input = testInput({ runId: `faults-${bucket}`, inputPath: `s3://${bucket}/data/rows.csv`, outputDir, window: 4 });
  return watchDatasetRun(env, input, workerEnv);
}

/**
 * Polls the run's progress until `ready` holds (that progress) or the run is done (its summary).
 * A query is not awaited past the run's end: its workers stop then and nothing would answer it.
 */
async function until(
  run: Pick<WatchedRun, 'handle' | 'done'>,
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

/** Waits until the run is done (its summary) or paused (its progress then). */
async function doneOrPaused(run: WatchedRun): Promise<{ paused?: ProgressSnapshot; summary?: DatasetRunSummary }> {
  const { progress, summary } = await until(run, (p) => p.paused !== null);
  return progress ? { paused: progress } : { summary: summary! };
}

/**
 * Waits for the run to finish with no `resume` from anyone: a pause for the store lifts by itself
 * once the store answers. Returns the pause reasons seen on the way.
 */
async function finishAlone(
  run: Pick<WatchedRun, 'handle' | 'done'>,
  timeoutMs = 200_000,
): Promise<{ summary: DatasetRunSummary; reasons: string[] }> {
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

/** Probe writes of a paused run (workflows/dataset/storePause.ts) that reached the proxy for a bucket. */
function probes(bucket: string): number {
  return proxy.requests.filter((r) => r.method === 'PUT' && r.url.startsWith(`/${bucket}/out/.atelier/store-probe.json`)).length;
}

/** Resumes a paused run by hand (the store is back) until it finishes; returns the pause reasons met. */
async function finishByHand(run: WatchedRun): Promise<{ summary: DatasetRunSummary; reasons: string[] }> {
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

async function text(bucket: string, key: string): Promise<string> {
  const out = await direct.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return out.Body!.transformToString();
}

/** Every row ok, the provider paid once per row (or at most `maxCalls` times in all), the results tables whole. */
async function expectWhole(bucket: string, summary: DatasetRunSummary, maxCalls?: number): Promise<void> {
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
}

describe('store faults in the middle of an s3 → s3 run (versitygw behind a fault proxy)', () => {
  it('a 15 s SlowDown on every PUT: every row ok, one provider call per row', async () => {
    const bucket = 'fslow';
    const run = await start(bucket, await dataset(bucket));
    await run.progressUntil((p) => p.ok >= 2);
    proxy.slowDown({ method: 'PUT', path: new RegExp(`^/${bucket}/`), times: Infinity });
    await sleep(15_000);
    proxy.clearFaults();
    const { summary, reasons } = await finishAlone(run);
    await run.running;
    console.info(`SlowDown: ${proxy.injected.slowDown} answered; pauses: ${JSON.stringify(reasons)}`);
    await expectWhole(bucket, summary);
  }, 240_000);

  it('resets mid-body on GETs and after commit on PUTs: every row ok, one provider call per row', async () => {
    const bucket = 'freset';
    const run = await start(bucket, await dataset(bucket));
    await run.progressUntil((p) => p.ok >= 1);
    // Every third GET and PUT of the run for a while: enough to meet outputs, entries and stored answers.
    proxy.resetMidBody({ method: 'GET', path: new RegExp(`^/${bucket}/`), times: 6 });
    proxy.resetAfterCommit({ method: 'PUT', path: new RegExp(`^/${bucket}/`), times: 6 });
    const { summary, reasons } = await finishAlone(run);
    proxy.clearFaults();
    await run.running;
    console.info(`resets: ${JSON.stringify(proxy.injected)}; pauses: ${JSON.stringify(reasons)}`);
    await expectWhole(bucket, summary);
  }, 240_000);

  it('the store stopped for 15 s: rows in flight wait, every row ok, one provider call per row', async () => {
    const bucket = 'fstop';
    const run = await start(bucket, await dataset(bucket));
    await run.progressUntil((p) => p.ok >= 2);
    await proxy.down();
    await sleep(15_000);
    await proxy.up();
    const { summary, reasons } = await finishAlone(run);
    await run.running;
    console.info(`stopped store: pauses: ${JSON.stringify(reasons)}`);
    await expectWhole(bucket, summary);
    expect(summary.failed).toBe(0);
  }, 240_000);

  it('the bucket gone mid-run: the run pauses naming the bucket; back, resumed, every row ok once', async () => {
    const bucket = 'fgone';
    const run = await start(bucket, await dataset(bucket));
    await run.progressUntil((p) => p.ok >= 2);
    // versitygw keeps a bucket as a folder: moved away, the store answers NoSuchBucket itself.
    renameSync(join(s3.dir, bucket), join(s3.dir, `.${bucket}-away`));
    const { paused } = await doneOrPaused(run);
    expect(paused, 'the run paused').toBeDefined();
    console.info(`bucket gone: paused with ${JSON.stringify(paused!.paused!.reason)}`);
    expect(paused!.paused!.reason).toMatch(new RegExp(`bucket ${bucket} does not exist`));
    expect(paused!.failed).toBe(0);
    renameSync(join(s3.dir, `.${bucket}-away`), join(s3.dir, bucket));
    // `atelier resume` lifts a store pause at once, whenever the store's own probe would.
    const { summary } = await finishByHand(run);
    await run.running;
    await expectWhole(bucket, summary);
  }, 240_000);

  it('credentials changed under the workers: the run pauses with the reason; fixed, it resumes by itself, every row ok once', async () => {
    const bucket = 'fcreds';
    const run = await start(bucket, await dataset(bucket));
    await run.progressUntil((p) => p.ok >= 2);
    // The store's secret rotated: the workers' no longer signs valid requests.
    await s3.restart('a-rotated-secret');
    const { paused } = await doneOrPaused(run);
    expect(paused, 'the run paused').toBeDefined();
    console.info(`credentials changed: paused with ${JSON.stringify(paused!.paused!.reason)}`);
    expect(paused!.paused!.reason).toMatch(/refused this worker's credentials/);
    expect(paused!.failed).toBe(0);
    await s3.restart();
    const { summary } = await finishAlone(run);
    await run.running;
    await expectWhole(bucket, summary);
  }, 300_000);

  it('the bucket gone while a page of rows is read: the run pauses (was failed), lifts itself once the bucket answers, every row ok once', async () => {
    const bucket = 'fpage';
    const outputDir = await dataset(bucket);
    // Planning writes the plan; the pages read it (a row's task carries its own line): the store
    // answers those reads, and the paused run's probes, that the bucket does not exist.
    const gone = { answer: S3_REFUSALS.noSuchBucket, times: Infinity };
    proxy.refuse({ ...gone, method: 'GET', path: new RegExp(`^/${bucket}/out/\\.atelier/plan\\.(idx|jsonl)`) });
    proxy.refuse({ ...gone, method: 'PUT', path: new RegExp(`^/${bucket}/out/\\.atelier/store-probe\\.json`) });
    const run = await start(bucket, outputDir);
    const { progress } = await until(run, (p) => p.paused !== null);
    expect(progress, 'the run paused (it did not fail or end)').toBeDefined();
    console.info(`page, bucket gone: paused with ${JSON.stringify(progress!.paused!.reason)}`);
    expect(progress!.paused!.reason).toMatch(new RegExp(`^reading the next rows failed: the bucket ${bucket} does not exist`));
    expect(progress).toMatchObject({ phase: 'paused', ok: 0, failed: 0 });
    // The pause holds while the store still refuses: a probe was refused and the run stays paused.
    const { progress: probed } = await until(run, () => probes(bucket) >= 2);
    expect(probed?.paused?.reason).toBe(progress!.paused!.reason);
    proxy.clearFaults();
    const { summary } = await finishAlone(run);
    await run.running;
    await expectWhole(bucket, summary);
  }, 300_000);

  it('credentials refused while the final tables are written: the run pauses (was failed), lifts itself once they are accepted', async () => {
    const bucket = 'ftables';
    const outputDir = await dataset(bucket);
    // The store refuses this worker's signature on the tables (the live refreshes fail quietly,
    // then the final write) and on the paused run's probes.
    const refused = { method: 'PUT', answer: S3_REFUSALS.signatureDoesNotMatch, times: Infinity };
    proxy.refuse({ ...refused, path: new RegExp(`^/${bucket}/out/results\\.(csv|jsonl|parquet)`) });
    proxy.refuse({ ...refused, path: new RegExp(`^/${bucket}/out/\\.atelier/store-probe\\.json`) });
    const run = await start(bucket, outputDir);
    const { progress } = await until(run, (p) => p.paused !== null, 200_000);
    expect(progress, 'the run paused (it did not fail or end)').toBeDefined();
    console.info(`final tables, credentials refused: paused with ${JSON.stringify(progress!.paused!.reason)}`);
    expect(progress!.paused!.reason).toMatch(/^writing the results tables failed: the store refused this worker's credentials/);
    expect(progress).toMatchObject({ phase: 'paused', ok: ROWS, failed: 0 });
    const { progress: probed } = await until(run, () => probes(bucket) >= 2);
    expect(probed?.paused?.reason).toBe(progress!.paused!.reason);
    proxy.clearFaults();
    const { summary } = await finishAlone(run);
    await run.running;
    await expectWhole(bucket, summary);
  }, 300_000);

  it('the worker SIGKILLed during a store outage, a new one started: every row ok, calls ≤ rows + rows in flight', async () => {
    const bucket = 'fkill';
    const outputDir = await dataset(bucket);
    // `atelier worker` processes (dist/: `node scripts/build.mjs`), the store behind the proxy for them too.
    const cliEnv = { ...workerEnv, TEMPORAL_ADDRESS: env.address };
    const startWorker = async () => {
      const worker = new CliProcess(['worker', '--concurrency', '8'], cliEnv);
      await worker.waitForOutput(/serving atelier-orchestrator/);
      return worker;
    };
    const workers = [await startWorker()];
    try {
      const input = testInput({ runId: `faults-${bucket}`, inputPath: `s3://${bucket}/data/rows.csv`, outputDir, window: 4 });
      const handle = await env.client.workflow.start('datasetWorkflow', {
        taskQueue: ORCHESTRATOR_QUEUE,
        workflowId: input.runId,
        args: [input],
      });
      const run = { handle, done: handle.result() as Promise<DatasetRunSummary> };
      run.done.catch(() => undefined);
      await until(run, (p) => p.ok >= 2);
      await proxy.down();
      // The rows in flight wait for the store (holding what they paid for in memory) or are set
      // aside, and the run pauses for its store: then the kill, the outage still on.
      await until(run, (p) => p.paused?.store === true);
      workers[0]!.child.kill('SIGKILL');
      await workers[0]!.exited;
      workers.push(await startWorker());
      await proxy.up();
      // The killed worker's rows come back after their heartbeat timeout (a minute).
      const { summary, reasons } = await finishAlone(run, 280_000);
      console.info(
        `SIGKILL in an outage: ${standin.callsFor(`${bucket} row `).length} calls for ${ROWS} rows; pauses: ${JSON.stringify(reasons)}`,
      );
      await expectWhole(bucket, summary, ROWS + input.window);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
  }, 400_000);
});
