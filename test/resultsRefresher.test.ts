import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finishedSignal, stopSignal, type ProbeActivities } from './helpers/refresherWorkflows';
import { startTestServer } from './helpers/temporalEnv';

// The results refresher (workflows/dataset/resultsRefresh.ts) in a real worker against a real dev
// server. After a rewrite it waits up to a minute (or 25 rewrites' time) for the next; when the run
// speeds up meanwhile and 5 % of the rows finish before that, it used to sleep on regardless, and
// the tables fell behind by both a minute and 5 % of the rows (bench/scale at 30,000 rows: a gap
// 5 s and 69 rows past both). Now it wakes at the step, but never sooner than 10 s after a rewrite.

const QUEUE = 'results-refresher-test';
const WRITE_MS = 3000; // 25 × 3 s is over a minute: the wait after a rewrite is the minute
let env: TestWorkflowEnvironment;
let worker: Worker;
let running: Promise<void>;
const writes: Array<{ began: number; ended: number }> = [];

beforeAll(async () => {
  ({ env } = await startTestServer());
  const activities: ProbeActivities = {
    async probeWrite(ms) {
      const began = Date.now();
      await new Promise((r) => setTimeout(r, ms));
      writes.push({ began, ended: Date.now() });
    },
  };
  worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue: QUEUE,
    workflowsPath: join(__dirname, 'helpers', 'refresherWorkflows.ts'),
    activities,
  });
  running = worker.run();
}, 120_000);

afterAll(async () => {
  worker?.shutdown();
  await running?.catch(() => undefined);
  await env?.teardown();
});

async function until(what: string, ok: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('the results refresher', () => {
  it(
    'rewrites once 5 % more rows finish after a rewrite, not a minute later, and never within 10 s of one',
    { timeout: 180_000 },
    async () => {
      // 2,000 rows: the step is 100.
      const handle = await env.client.workflow.start('refresherProbe', {
        taskQueue: QUEUE,
        workflowId: `probe-${Date.now()}`,
        args: [2000, WRITE_MS],
      });
      await handle.signal(finishedSignal, 100);
      await until('the first rewrite', () => writes.length >= 1, 60_000);
      // The run speeds up: 5 % more rows 12 s after the rewrite (its wait: a minute).
      await new Promise((r) => setTimeout(r, 12_000));
      await handle.signal(finishedSignal, 200);
      await until('the second rewrite', () => writes.length >= 2, 90_000);
      const afterFirst = writes[1]!.began - writes[0]!.ended;
      expect(afterFirst, 'the second rewrite began this long after the first ended').toBeGreaterThanOrEqual(11_000);
      expect(afterFirst).toBeLessThan(30_000);
      // 5 % more at once: the next rewrite still waits 10 s after this one.
      await handle.signal(finishedSignal, 300);
      await until('the third rewrite', () => writes.length >= 3, 90_000);
      const afterSecond = writes[2]!.began - writes[1]!.ended;
      expect(afterSecond).toBeGreaterThanOrEqual(9_500);
      expect(afterSecond).toBeLessThan(30_000);
      await handle.signal(stopSignal);
      await handle.result();
    },
  );
});
