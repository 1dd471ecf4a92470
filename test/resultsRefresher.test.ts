import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finishedSignal, stopSignal, type ProbeActivities } from './helpers/refresherWorkflows';
import { waitUntil } from './helpers/cli';
import { startTestServer, startTestWorker } from './helpers/temporalEnv';

// The results refresher (workflows/dataset/resultsRefresh.ts) in a real worker against a real dev
// server. After a rewrite it waits for the time the run took to finish 4.5 % of its rows at its
// recent rate, capped at 25 rewrites' time; when the run speeds up meanwhile and 5 % of the rows
// finish sooner, it used to sleep on regardless, and the tables fell behind by both a minute and 5 %
// of the rows (bench/scale at 30,000 rows: a gap 5 s and 69 rows past both). Now, once the minute
// is over (aimed 10 % early, less the rewrite's own time), it wakes at the step; within it, never.

const QUEUE = 'results-refresher-test';
const WRITE_MS = 6000; // 25 × 6 s: the wait after a slow start's rewrite is 150 s
let env: TestWorkflowEnvironment;
let worker: { stop(): Promise<void> } | undefined;
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
  worker = await startTestWorker(env, { taskQueue: QUEUE, workflowsPath: join(__dirname, 'helpers', 'refresherWorkflows.ts'), activities });
}, 120_000);

afterAll(async () => {
  await worker?.stop();
  await env?.teardown();
});

describe('the results refresher', () => {
  it(
    'rewrites once a minute has passed and 5 % more rows finished, not at the end of a wait paced by a slower rate',
    { timeout: 300_000 },
    async () => {
      // 2,000 rows: the step is 100. A slow start: 10 rows in the first minute, so the first rewrite
      // comes at the minute (54 s), and the pace it sets is the time 90 rows take at that rate (486 s),
      // capped at 25 rewrites' time (150 s).
      const handle = await env.client.workflow.start('refresherProbe', {
        taskQueue: QUEUE,
        workflowId: `probe-${Date.now()}`,
        args: [2000, WRITE_MS],
      });
      await handle.signal(finishedSignal, 10);
      await waitUntil(() => writes.length >= 1, 120_000, 'the first rewrite');
      // The run speeds up: 5 % more rows 20 s after the rewrite. Within the minute that is in time.
      await new Promise((r) => setTimeout(r, 20_000));
      await handle.signal(finishedSignal, 110);
      await waitUntil(() => writes.length >= 2, 200_000, 'the second rewrite');
      const after = writes[1]!.began - writes[0]!.ended;
      // A minute less the margin (54 s) and less the rewrite's own 6 s: 48 s after it ended.
      expect(after, 'the second rewrite began this long after the first ended').toBeGreaterThanOrEqual(45_000);
      expect(after).toBeLessThan(90_000);
      await handle.signal(stopSignal);
      await handle.result();
    },
  );
});
