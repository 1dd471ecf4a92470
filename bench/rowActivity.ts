// The row activity alone: the real `editRow` (openai adapter, local run folder) run row after row
// in the SDK's mock activity environment, against the stand-in in a process of its own, so this
// process's CPU time is the activity's. Sequential, no server and no workflow threads: far less
// noisy than bench/perRowCost on a loaded machine, for before/after comparisons of the row's own
// work (the attempt fence's server check is skipped here: the mock has no client).
//   npm run build && node dist/bench/rowActivity.js [--rows 500] [--warmup 50]
//   (node --cpu-prof dist/bench/rowActivity.js … to profile it)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { flag, startStandinProcess } from './harness';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createModelActivities } from '../activities/editRow';
import { createOrchestrationActivities } from '../activities/orchestration';
import { providerFromEnv } from '../activities/providers/registry';
import { readPlanRows, taskPlanRow } from '../lib/run/plan';
import type { DatasetWorkflowInput, RowTask } from '../lib/shared/types';
import { benchInput, writeBenchDataset } from './harness';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const rows = Number(flag(args, '--rows', '500'));
  const warmup = Number(flag(args, '--warmup', '50'));
  const dir = mkdtempSync(join(tmpdir(), 'atelier-rowbench-'));
  const standin = await startStandinProcess();
  try {
    const csv = await writeBenchDataset(dir, warmup + rows, 'row');
    const env = new MockActivityEnvironment();
    const { input } = (await env.run(createOrchestrationActivities().planRun, benchInput('row-bench', csv, join(dir, 'out'), 1))) as {
      input: DatasetWorkflowInput;
    };
    const activities = createModelActivities(
      await providerFromEnv('openai', { OPENAI_API_KEY: 'sk-bench', OPENAI_BASE_URL: standin.baseURL }),
    );
    // The tasks as the workflow sends them: the page's plan line and freshness travel with the row.
    const plan = await readPlanRows(input.outputDir, 0, warmup + rows);
    const tasks: RowTask[] = plan.map((row, position) => ({
      runId: input.runId,
      outputDir: input.outputDir,
      position,
      index: row.index,
      backend: input.backend,
      model: input.model,
      params: input.params,
      numImages: input.numImages,
      encoding: input.encoding,
      imageCacheDir: input.imageCacheDir!,
      row: taskPlanRow(row)!,
      fresh: true,
    }));
    const run = async (task: RowTask) => {
      // An environment per row, as the worker makes a context (and a cancellation signal) per activity.
      const outcome = (await new MockActivityEnvironment().run(activities.editRow, task)) as { status: string };
      if (outcome.status !== 'ok') throw new Error(`row ${task.index}: ${JSON.stringify(outcome)}`);
    };
    for (const task of tasks.slice(0, warmup)) await run(task);
    const cpu = process.cpuUsage();
    const start = performance.now();
    for (const task of tasks.slice(warmup)) await run(task);
    const used = process.cpuUsage(cpu);
    const wall = performance.now() - start;
    console.log(
      `row activity alone, ${rows} rows (after ${warmup}): ${((used.user + used.system) / 1000 / rows).toFixed(2)} CPU ms per row ` +
        `(user ${(used.user / 1000 / rows).toFixed(2)}, system ${(used.system / 1000 / rows).toFixed(2)}), ${(wall / rows).toFixed(2)} ms wall per row`,
    );
  } finally {
    standin.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
