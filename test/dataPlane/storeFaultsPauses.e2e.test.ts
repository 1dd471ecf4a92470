import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGpuRowActivities } from '../../activities/gpuRow';
import { createOrchestrationActivities } from '../../activities/orchestration';
import { ORCHESTRATOR_QUEUE, providerQueue } from '../../lib/shared/constants';
import type { DatasetRunSummary, ProgressSnapshot } from '../../lib/shared/types';
import { S3_REFUSALS } from '../../testing/s3FaultProxy';
import { createWorkers } from '../../workers';
import { PATCH } from '../../workflows/patches';
import { resumeSignal } from '../../workflows/messages';
import { testInput, type WatchedRun } from '../helpers/temporalEnv';
import { finishAlone, ROWS, startStoreFaultsBed, until, type RunHandle, type StoreFaultsBed } from '../helpers/storeFaultsBed';

// Two sides of the store pauses (workflows/dataset/storePause.ts, patch `atelier-store-pause-lifts`)
// that the fault cases of storeFaults.e2e.test.ts never reach, on the same bed: s3 → s3 runs on the
// dev server with the project's real workers and activities, the store behind a fault proxy.
// - The relapse cap: a pause that comes back right after each of 5 lifts (the probe's write goes
//   through, the run's own writes are refused) stops lifting by itself and waits for a resume.
// - Runs recorded before the patch: their tables failing on the store are retried as before (the
//   activity's `pauseOnStore` is set by the workflow only under the patch); failing at once there
//   would fail the run, since their workflow code has no pause to take.

let bed: StoreFaultsBed;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const OLD_BUNDLE = join(__dirname, '..', 'replay', 'fixtures', 'bundles', 'workflow-bundle-6964dbc.js.gz');

beforeAll(async () => {
  bed = await startStoreFaultsBed();
}, 120_000);

afterAll(async () => {
  await bed?.close();
});

/** The results tables' writes of a case's run refused with S3's answer to other credentials (not the probe's). */
function refuseTables(bucket: string): void {
  const path = new RegExp(`^/${bucket}/out/results\\.(csv|jsonl|parquet)`);
  bed.proxy.refuse({ method: 'PUT', path, answer: S3_REFUSALS.signatureDoesNotMatch, times: Infinity });
}

/**
 * The relapse cap on a run whose final tables are refused while its probes pass: five lifts, then
 * an ordinary pause saying so, which only a resume lifts.
 */
async function relapses(bucket: string, run: WatchedRun): Promise<void> {
  const reasons = new Set<string>();
  const { progress } = await until(
    run,
    (p) => {
      if (p.paused) reasons.add(p.paused.reason);
      // A sixth probe means a sixth lift was tried: the cap did not hold (checked below).
      return (p.paused !== null && p.paused.store !== true) || bed.probes(bucket) > 5;
    },
    400_000,
  );
  expect(progress, 'the run paused (it did not fail or end)').toBeDefined();
  const refused = "writing the results tables failed: the store refused this worker's credentials";
  console.info(`relapses: ${bed.probes(bucket)} probes; pauses: ${JSON.stringify([...reasons])}`);
  // Five lifts, each by one probe that the store answered; the sixth pause was not probed.
  expect(bed.probes(bucket), 'probe writes').toBe(5);
  const capped = progress!.paused!;
  expect(capped.reason).toMatch(
    new RegExp(
      `^${refused}.*lifted 5 times when the store answered, and failed again each time: put it right, then \`atelier resume\`\\)$`,
    ),
  );
  expect(capped.store, 'an ordinary pause now').toBeFalsy();
  expect(progress).toMatchObject({ ok: ROWS, failed: 0 });
  // On the way: only the store pause, lifted and back, then the capped one.
  expect([...reasons].filter((r) => r !== capped.reason).every((r) => r.startsWith(refused))).toBe(true);

  // Put right: the pause holds (no probe lifts it), and a resume finishes the run without another pause.
  bed.proxy.clearFaults();
  const held = (await run.handle.query('progress')) as ProgressSnapshot;
  expect(held.paused?.reason).toBe(capped.reason);
  await run.handle.signal(resumeSignal);
  const { summary, reasons: after } = await finishAlone(run);
  await run.running;
  expect(after, 'pauses after the resume').toEqual([]);
  expect(bed.probes(bucket), 'probe writes while the run waited for the resume').toBe(5);
  await bed.expectWhole(bucket, summary);
}

describe('store pauses: the relapse cap and runs recorded before the pauses', () => {
  it('a store pause back right after each of 5 lifts stays until `atelier resume`, saying so; resumed, every row ok once', async () => {
    const bucket = 'frelapse';
    const outputDir = await bed.dataset(bucket);
    // The probe's write into .atelier/ goes through and lifts each pause; the final tables are
    // refused again at once. The probes come 5, 10, 20, 40 and 60 s apart: about 2.5 minutes.
    refuseTables(bucket);
    const run = await bed.start(bucket, outputDir);
    try {
      await relapses(bucket, run);
    } finally {
      // A failed check leaves the run paused: its workers would hold the queues of the next case.
      bed.proxy.clearFaults();
      await run.handle.cancel().catch(() => undefined);
      await run.running;
    }
  }, 520_000);

  it('a run recorded before the pauses, its final tables refused: retried as that run expects (not paused, not failed), every row ok once', async () => {
    const bucket = 'fold';
    const outputDir = await bed.dataset(bucket);
    const input = testInput({ runId: `faults-${bucket}`, inputPath: `s3://${bucket}/data/rows.csv`, outputDir, window: 4 });
    const common = { connection: bed.env.nativeConnection, namespace: 'default', shutdownGraceTime: '1 second' as const };
    const [provider] = await createWorkers({
      ...common,
      env: bed.workerEnv,
      queues: [providerQueue('openai')],
      workerOptions: { shutdownGraceTime: '1 second' },
    });
    const providerRun = provider!.run();
    // The run starts on the workflow code of the release before the pauses (upgrade.test.ts's bundle),
    // so its history has no `atelier-store-pause-lifts` marker; today's code takes it over mid-run.
    const oldOrchestrator = await Worker.create({
      ...common,
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowBundle: { code: gunzipSync(readFileSync(OLD_BUNDLE)).toString('utf8') },
      activities: { ...createOrchestrationActivities(), ...createGpuRowActivities() },
      // No cached run may outlive this worker: the next one must replay the history.
      maxCachedWorkflows: 0,
    });
    const oldRun = oldOrchestrator.run();
    let current: Worker | undefined;
    let currentRun: Promise<void> | undefined;
    try {
      const handle = await bed.env.client.workflow.start('datasetWorkflow', {
        taskQueue: ORCHESTRATOR_QUEUE,
        workflowId: input.runId,
        args: [input],
      });
      const run: RunHandle = { handle, done: handle.result() as Promise<DatasetRunSummary> };
      let failed: unknown;
      run.done.catch((err: unknown) => void (failed = err));
      await until(run, (p) => p.ok >= 2);
      oldOrchestrator.shutdown();
      await oldRun;

      refuseTables(bucket);
      [current] = await createWorkers({
        ...common,
        env: bed.workerEnv,
        queues: [ORCHESTRATOR_QUEUE],
        workerOptions: { shutdownGraceTime: '1 second' },
      });
      currentRun = current!.run();
      // Wait until the final tables (phase writing-results: the live refreshes are over) have failed
      // on the store and are being retried: a second attempt of writeResults is pending.
      const pauses = new Set<string>();
      let lastFailure: string | undefined;
      const deadline = Date.now() + 240_000;
      for (;;) {
        if (failed) throw failed;
        const query = handle.query('progress') as Promise<ProgressSnapshot>;
        query.catch(() => undefined);
        const p = await Promise.race([
          query,
          run.done.then(
            () => undefined,
            () => undefined,
          ),
        ]);
        if (p?.paused) pauses.add(p.paused.reason);
        if (p?.phase === 'writing-results') {
          const { raw } = await handle.describe();
          const retry = raw.pendingActivities?.find((a) => a.activityType?.name === 'writeResults' && (a.attempt ?? 0) >= 2);
          if (retry) {
            lastFailure = retry.lastFailure?.message ?? undefined;
            break;
          }
        }
        if (Date.now() > deadline) throw new Error(`the final tables were not retried in time: ${JSON.stringify(p)}`);
        await sleep(250);
      }
      console.info(`old run, tables refused: retried after ${JSON.stringify(lastFailure)}; pauses: ${JSON.stringify([...pauses])}`);
      expect(lastFailure).toMatch(/refused this worker's credentials/);
      expect([...pauses], 'pauses of the old run').toEqual([]);
      bed.proxy.clearFaults();
      const summary = await run.done;
      await bed.expectWhole(bucket, summary);

      // It ran as a run recorded before the patch: no execution of it holds the marker.
      const history = await handle.fetchHistory();
      const markers = history.events!.flatMap((e) =>
        Object.values(e.markerRecordedEventAttributes?.details ?? {}).flatMap((d) =>
          (d.payloads ?? []).map((pl) => Buffer.from(pl.data ?? []).toString()),
        ),
      );
      expect(markers.some((m) => m.includes(PATCH.storePauseLifts))).toBe(false);
    } finally {
      current?.shutdown();
      await currentRun;
      if (oldOrchestrator.getState() === 'RUNNING') oldOrchestrator.shutdown();
      await oldRun.catch(() => undefined);
      provider!.shutdown();
      await providerRun;
    }
  }, 400_000);
});
