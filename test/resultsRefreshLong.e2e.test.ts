import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrchestrationActivities } from '../activities/orchestration';
import { commitLedgerEntry } from '../lib/run/ledger';
import { readPlanRows } from '../lib/run/plan';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import type { DatasetRunSummary } from '../lib/shared/types';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { createWorkers, runWorkersUntil } from '../workers';
import { waitUntil } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { startTestServer, testInput } from './helpers/temporalEnv';

// A run long enough to continue as new several times, each execution finishing fewer rows than the
// refresh step (5 %) in well under a minute: the results tables must still be refreshed while it
// goes. The refresher used to start afresh in every execution (its count and its one-minute clock
// were not carried), so such a run wrote its tables only at the very end. Here a 2,000-row dataset
// has all but 130 rows done already (a resumed large run): the step is 100 rows, an execution
// finishes about 30, and the 130 rows take over a minute.

const API_KEY = 'sk-test-refresh-long-7d1f0a93c2b8e456';
const ROWS = 2000;
const TO_RUN = 130;
let env: TestWorkflowEnvironment;
let standin: OpenAIStandin;

beforeAll(async () => {
  ({ env } = await startTestServer());
  standin = await startOpenAIStandin({ latencyMs: 1500 });
});
afterAll(async () => {
  await standin?.close();
  await env?.teardown();
});

async function executions(workflowId: string): Promise<Array<{ runId: string }>> {
  const runs: Array<{ runId: string }> = [];
  for await (const wf of env.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) runs.push({ runId: wf.runId });
  return runs;
}

describe('results of a run that continues as new', () => {
  it('refreshes the tables while the run goes, across continue-as-new', { timeout: 900_000 }, async () => {
    const dir = tempDir('atelier-refresh-long-');
    await writePng(join(dir, 'a.png'));
    writeText(
      join(dir, 'rows.csv'),
      ['input_images,instruction', ...Array.from({ length: ROWS }, (_, i) => `a.png,long-${i} edit`)].join('\n'),
    );
    const outputDir = join(dir, 'out');
    // The smallest history cap: each execution finishes about 30 rows, under the 5 % step (100).
    const input = testInput({ runId: 'refresh-long', inputPath: join(dir, 'rows.csv'), outputDir, window: 4, maxHistoryEvents: 200 });
    // Rows done by an earlier run: outputs on disk and ledger entries for what the rows ask now.
    await createOrchestrationActivities().planRun(input);
    const plan = await readPlanRows(outputDir, 0, ROWS);
    for (const row of plan.slice(0, ROWS - TO_RUN)) {
      const output = row.outputs[0]!.path;
      writeFileSync(join(outputDir, output), 'done before');
      const base = { index: row.index, position: row.position, runId: input.runId, model: input.model, digest: row.digest! };
      await commitLedgerEntry(
        outputDir,
        { ...base, status: 'ok', outputImages: [output], finishedAt: new Date().toISOString() },
        undefined,
      );
    }
    const workers = await createWorkers({
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      env: { OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL },
      workerOptions: { shutdownGraceTime: '1 second' },
    });
    let ended = false;
    const result = (
      env.client.workflow.execute('datasetWorkflow', {
        taskQueue: ORCHESTRATOR_QUEUE,
        workflowId: input.runId,
        args: [input],
      }) as Promise<DatasetRunSummary>
    ).finally(() => (ended = true));
    const run = runWorkersUntil(workers, result);
    const csv = join(outputDir, 'results.csv');
    // Either the table appears while the run goes, or the run ends first (the defect).
    await waitUntil(() => existsSync(csv) || ended, 600_000, 'a results table or the end of the run');
    const endedFirst = ended;
    const okThen = endedFirst
      ? ROWS
      : (parse(readFileSync(csv), { columns: true }) as Array<{ status: string }>).filter((r) => r.status === 'ok').length;
    const callsThen = standin.callsFor('long-').length;
    const executionsThen = (await executions(input.runId)).length;
    const summary = await run;
    console.log(`table at ${okThen} ok rows, ${executionsThen} executions; ${(await executions(input.runId)).length} executions in all`);

    expect(endedFirst, 'the run ended before any results table was written').toBe(false);
    expect(okThen).toBeLessThan(ROWS);
    expect(callsThen).toBeLessThan(TO_RUN); // the run was still going
    expect(standin.callsFor('long-')).toHaveLength(TO_RUN);
    expect(executionsThen).toBeGreaterThan(1);
    expect(summary).toMatchObject({ total: ROWS, ok: ROWS });
    const final = parse(readFileSync(csv), { columns: true }) as Array<{ status: string }>;
    expect(final.filter((r) => r.status === 'ok')).toHaveLength(ROWS);
    // Each execution was short: on average it finished fewer rows than the 5 % step on its own.
    const runs = await executions(input.runId);
    expect(runs.length).toBeGreaterThan(TO_RUN / Math.ceil(ROWS * 0.05));
    // Refreshes ran in several executions, not only the final write.
    let refreshes = 0;
    for (const { runId } of runs) {
      const history = await env.client.workflow.getHandle(input.runId, runId).fetchHistory();
      refreshes += (history.events ?? []).filter(
        (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'writeResults',
      ).length;
    }
    expect(refreshes).toBeGreaterThan(1);
  });
});
