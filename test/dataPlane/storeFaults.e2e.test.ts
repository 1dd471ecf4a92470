import { renameSync } from 'node:fs';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatasetRunSummary } from '../../lib/shared/types';
import type { OpenAIStandin } from '../../activities/providers/openai/standin';
import { S3_REFUSALS, type S3FaultProxy } from '../../testing/s3FaultProxy';
import type { S3TestServer } from '../../testing/versitygw';
import { ORCHESTRATOR_QUEUE } from '../../lib/shared/constants';
import { CliProcess } from '../helpers/cli';
import { testInput } from '../helpers/temporalEnv';
import { doneOrPaused, finishAlone, finishByHand, ROWS, startStoreFaultsBed, until, type StoreFaultsBed } from '../helpers/storeFaultsBed';

// Issue 21, "faults are pauses, not payments", run by run: an s3 → s3 run (dataset, its image and
// every output in versitygw) with the project's real workers on the Temporal dev server, the S3
// traffic of this process (workers and activities) going through a fault proxy. Each case puts one
// store fault in the middle of a run and checks what the user pays and gets: every row ends ok
// (a pause for the store lifting by itself once the store answers; by `resume` in one case), the
// provider was called once per row, and the results tables hold every row. A store that is missing
// or refuses the worker (bucket gone, credentials) must pause the run with one plain reason, rows in
// flight waiting rather than failing, and so must a page of rows or the final tables failing on it.
// The relapse cap and runs recorded before the pauses: storeFaultsPauses.e2e.test.ts.

let bed: StoreFaultsBed;
let env: TestWorkflowEnvironment;
let s3: S3TestServer;
let proxy: S3FaultProxy;
let standin: OpenAIStandin;
let workerEnv: NodeJS.ProcessEnv;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  bed = await startStoreFaultsBed();
  ({ env, s3, proxy, standin, workerEnv } = bed);
}, 120_000);

afterAll(async () => {
  await bed?.close();
});

const dataset = (bucket: string) => bed.dataset(bucket);
const start = (bucket: string, outputDir: string) => bed.start(bucket, outputDir);
const probes = (bucket: string) => bed.probes(bucket);
const expectWhole = (bucket: string, summary: DatasetRunSummary, maxCalls?: number) => bed.expectWhole(bucket, summary, maxCalls);

/**
 * A passing fault (SlowDown, resets, the store stopped for a while) may or may not outlast the
 * rows' patience: where the run paused for it, each pause named the store being unavailable at
 * this run's location, never another cause (a quota, an unreachable provider, a failed row).
 */
function expectUnavailableOnly(bucket: string, reasons: string[]): void {
  const unavailable = new RegExp(
    `^(writing the run's files|reading the next rows|writing the results tables) failed: the store is unavailable \\(s3://${bucket}/`,
  );
  for (const reason of reasons) expect(reason).toMatch(unavailable);
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
    expect(proxy.injected.slowDown, 'SlowDown answers').toBeGreaterThan(0);
    expectUnavailableOnly(bucket, reasons);
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
    expect(proxy.injected.resetMidBody, 'GETs cut mid-body').toBeGreaterThan(0);
    expect(proxy.injected.resetAfterCommit, 'PUTs cut after commit').toBeGreaterThan(0);
    expectUnavailableOnly(bucket, reasons);
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
    expectUnavailableOnly(bucket, reasons);
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
  }, 360_000);

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
  }, 360_000);

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
      // aside, and the run pauses for its store: then the kill, the outage still on. When every row
      // in flight holds a paid answer, the first is set aside only once the worker's store patience
      // (120 s) has passed, so the pause may take that long (ci20 met it: 4 in flight, none set aside).
      await until(run, (p) => p.paused?.store === true, 200_000);
      workers[0]!.child.kill('SIGKILL');
      await workers[0]!.exited;
      workers.push(await startWorker());
      await proxy.up();
      // The killed worker's rows come back after their heartbeat timeout (a minute).
      const { summary, reasons } = await finishAlone(run, 280_000);
      console.info(
        `SIGKILL in an outage: ${standin.callsFor(`${bucket} row `).length} calls for ${ROWS} rows; pauses: ${JSON.stringify(reasons)}`,
      );
      expectUnavailableOnly(bucket, reasons);
      await expectWhole(bucket, summary, ROWS + input.window);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
  }, 540_000);
});
