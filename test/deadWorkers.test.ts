import { join } from 'node:path';
import { hostname } from 'node:os';
import { Context } from '@temporalio/activity';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endDeadWorkersActivities } from '../lib/temporal/deadWorkers';
import type { HoldActivities } from './helpers/sweepWorkflows';
import { startTestServer, startTestWorker } from './helpers/temporalEnv';

// The dead workers' sweep (lib/temporal/deadWorkers.ts) against a real dev server and worker: the
// worker holds attempt 1 of an activity with a 2-minute heartbeat timeout; the sweep is told that
// worker's pid is gone (`alive`), as it would find after a kill -9, and must end the attempt so the
// retry runs at once, handed the details attempt 1 heartbeated (what the fal and ModelScope
// adapters keep there: the ids of requests already paid for).

const QUEUE = 'dead-workers-test';
let env: TestWorkflowEnvironment;
let worker: { stop(): Promise<void> } | undefined;

beforeAll(async () => {
  ({ env } = await startTestServer());
  const activities: HoldActivities = {
    async hold(paid) {
      const ctx = Context.current();
      if (ctx.info.attempt > 1) return ctx.info.heartbeatDetails as unknown;
      ctx.heartbeat({ paid });
      // Holds like a worker that stopped answering, until the server's answer to a heartbeat cancels it.
      for (;;) {
        await ctx.sleep(500);
        ctx.heartbeat({ paid });
      }
    },
  };
  worker = await startTestWorker(env, { taskQueue: QUEUE, workflowsPath: join(__dirname, 'helpers', 'sweepWorkflows.ts'), activities });
}, 120_000);

afterAll(async () => {
  await worker?.stop();
  await env?.teardown();
});

async function startedAttempt(workflowId: string): Promise<temporal.api.workflow.v1.IPendingActivityInfo> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const described = await env.client.workflowService.describeWorkflowExecution({
      namespace: env.namespace ?? 'default',
      execution: { workflowId },
    });
    const pending = described.pendingActivities?.[0];
    if (pending?.state === temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED && pending.heartbeatDetails)
      return pending;
    if (Date.now() > deadline) throw new Error(`no started, heartbeating attempt for ${workflowId}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('the dead workers sweep', () => {
  it("ends a dead worker's started attempt at once; the retry gets its heartbeat details", async () => {
    const handle = await env.client.workflow.start('holdWorkflow', { taskQueue: QUEUE, workflowId: 'sweep-dead', args: ['request-77'] });
    const attempt = await startedAttempt('sweep-dead');
    expect(attempt.lastWorkerIdentity).toBe(`${process.pid}@${hostname()}`);

    // A live worker, or one of another host, is never touched.
    expect(await endDeadWorkersActivities(env.client, { alive: () => true })).toEqual([]);
    expect(await endDeadWorkersActivities(env.client, { alive: () => false, host: 'another-host' })).toEqual([]);
    expect((await startedAttempt('sweep-dead')).attempt).toBe(1);

    const started = Date.now();
    const ended = await endDeadWorkersActivities(env.client, { alive: (pid) => pid !== process.pid });
    expect(ended).toEqual([{ workflowId: 'sweep-dead', activityType: 'hold', worker: attempt.lastWorkerIdentity }]);
    // Attempt 2 returns what attempt 1 heartbeated, well before the 2-minute heartbeat timeout.
    expect(await handle.result()).toEqual({ paid: 'request-77' });
    expect(Date.now() - started).toBeLessThan(60_000);
  }, 180_000);
});
