import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGpuRowActivities } from '../../activities/gpuRow';
import { createOrchestrationActivities } from '../../activities/orchestration';
import { ORCHESTRATOR_QUEUE, providerQueue } from '../../lib/shared/constants';
import type { DatasetRunSummary, ProgressSnapshot } from '../../lib/shared/types';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { createWorkers } from '../../workers';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { startTestServer, testInput } from '../helpers/temporalEnv';

// Upgrading the workers while a run is in flight: the run starts on the workflow code of the
// release before this round (the bundle of 6964dbc, kept as a fixture), the orchestrator worker is
// stopped mid-run and one with today's code takes over. Today's code must replay the old history
// (the upgrade rule: commands change only behind patched()) and finish the run.

const OLD_BUNDLE = join(__dirname, 'fixtures', 'bundles', 'workflow-bundle-6964dbc.js.gz');

let env: TestWorkflowEnvironment;
let openai: OpenAIStandin;

beforeAll(async () => {
  ({ env } = await startTestServer());
  openai = await startOpenAIStandin({ latencyMs: 150 });
});
afterAll(async () => {
  await openai?.close();
  await env?.teardown();
});

describe('workers upgraded mid-run', () => {
  it('a run started on the previous release finishes on today’s code, with no workflow task failing', async () => {
    const dir = tempDir('atelier-upgrade-');
    await writePng(join(dir, 'a.png'));
    writeText(join(dir, 'rows.csv'), ['input_images,instruction', ...Array.from({ length: 30 }, (_, i) => `a.png,up-${i} x`)].join('\n'));
    const input = testInput({
      runId: 'upgrade-run',
      inputPath: join(dir, 'rows.csv'),
      outputDir: join(dir, 'out'),
      window: 3,
      maxHistoryEvents: 200,
    });
    const workerEnv = { OPENAI_API_KEY: 'sk-upgrade-test', OPENAI_BASE_URL: openai.baseURL };
    const common = { connection: env.nativeConnection, namespace: 'default', shutdownGraceTime: '1 second' as const };

    const [provider] = await createWorkers({
      ...common,
      env: workerEnv,
      queues: [providerQueue('openai')],
      workerOptions: { shutdownGraceTime: '1 second' },
    });
    const providerRun = provider!.run();
    const oldOrchestrator = await Worker.create({
      ...common,
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowBundle: { code: gunzipSync(readFileSync(OLD_BUNDLE)).toString('utf8') },
      activities: { ...createOrchestrationActivities(), ...createGpuRowActivities() },
      // No cached run may outlive this worker: the next one must replay the history.
      maxCachedWorkflows: 0,
    });
    const oldRun = oldOrchestrator.run();
    const handle = await env.client.workflow.start('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: input.runId,
      args: [input],
    });
    try {
      for (let i = 0; i < 400; i++) {
        const p = (await handle.query('progress')) as ProgressSnapshot;
        if (p.ok >= 8) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      oldOrchestrator.shutdown();
      await oldRun;
      const okBefore = openai.calls.length;
      expect(okBefore).toBeGreaterThanOrEqual(8);
      expect(okBefore).toBeLessThan(30);

      const [current] = await createWorkers({
        ...common,
        env: workerEnv,
        queues: [ORCHESTRATOR_QUEUE],
        workerOptions: { shutdownGraceTime: '1 second' },
      });
      const summary = (await current!.runUntil(handle.result())) as DatasetRunSummary;
      expect(summary).toMatchObject({ total: 30, ok: 30, failed: 0 });
      expect(openai.calls).toHaveLength(30); // nothing paid twice across the upgrade

      // Every run of the chain (continue-as-new) completed its workflow tasks without a failure.
      // One kind is not a failure of our code: UNHANDLED_COMMAND is the server refusing a
      // completion (here the continue-as-new) because a new event, such as a child's result,
      // arrived while the task ran; the worker replays with that event and goes on. It depends
      // on timing alone (CI saw 3 of them once), so it is left out; every other cause, above all
      // nondeterminism, still fails the test.
      for await (const execution of env.client.workflow.list({ query: `WorkflowId = '${input.runId}'` })) {
        const history = await env.client.workflow.getHandle(input.runId, execution.runId).fetchHistory();
        const failedTasks = history
          .events!.map((e) => e.workflowTaskFailedEventAttributes)
          .filter((a): a is NonNullable<typeof a> => a != null)
          .filter((a) => a.cause !== temporal.api.enums.v1.WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND);
        expect(failedTasks.map((a) => `${a.cause}: ${a.failure?.message}`)).toEqual([]);
      }
    } finally {
      provider!.shutdown();
      await providerRun;
    }
  });
});
