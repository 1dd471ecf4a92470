// Throughput benchmark: rows/s of a dataset run (dev server, zero-latency stand-in provider) next to
// baselines measured in the same run: the same sliding window of empty child workflows through the
// same server (the baseline the goal is set against), and of children that run one no-op activity
// on a second queue (the least a row with a model call can cost). Also reports the parent's history
// events per run (continue-as-new keeps them bounded) and a re-run of the finished run (0 calls).
//   npm run build && node dist/bench/throughput.js [rows ...]   (default 1000 10000)
import { join } from 'node:path';
import { bundleWorkflowCode, DefaultLogger, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import type { DatasetRunSummary } from '../lib/shared/types';
import { startOpenAIStandin } from '../activities/providers/openai/standin';
import { createWorkers, runWorkersUntil } from '../workers';
import type { BaselineChild } from './baselineWorkflows';
import { NOOP_ACTIVITY_QUEUE } from './baselineWorkflows';
import { benchInput, historyLengths, peakRssSampler, startBenchServer, writeBenchDataset, type BenchServer } from './harness';

const WINDOW = 32;

/** Seconds for `rows` baseline children of the given kind, through the same server. */
async function baselineSeconds(
  bench: BenchServer,
  bundle: WorkflowBundleWithSourceMap,
  rows: number,
  child: BaselineChild,
): Promise<number> {
  const workers = [
    await Worker.create({
      connection: bench.nativeConnection,
      taskQueue: 'bench-bare',
      workflowBundle: bundle,
      activities: { noop: async () => undefined },
    }),
    await Worker.create({
      connection: bench.nativeConnection,
      taskQueue: NOOP_ACTIVITY_QUEUE,
      activities: { noop: async () => undefined },
      maxConcurrentActivityTaskExecutions: WINDOW,
    }),
  ];
  const start = performance.now();
  const done = bench.client.workflow.execute('bareParentWorkflow', {
    taskQueue: 'bench-bare',
    workflowId: `bare-${child}-${rows}`,
    args: [rows, WINDOW, child],
  });
  await runWorkersUntil(workers, done);
  return (performance.now() - start) / 1000;
}

async function main(): Promise<void> {
  const sizes = process.argv
    .slice(2)
    .map(Number)
    .filter((n) => n > 0);
  const standin = await startOpenAIStandin();
  const bench = await startBenchServer();
  const env = { OPENAI_API_KEY: 'sk-bench', OPENAI_BASE_URL: standin.baseURL };
  const bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('./baselineWorkflows'), logger: new DefaultLogger('ERROR') });
  try {
    for (const rows of sizes.length ? sizes : [1000, 10000]) {
      // Baselines: same window, same server.
      const bareSeconds = await baselineSeconds(bench, bundle, rows, 'empty');
      const activitySeconds = await baselineSeconds(bench, bundle, rows, 'one-activity');
      const localSeconds = await baselineSeconds(bench, bundle, rows, 'one-local-activity');

      // Atelier: a real dataset run, the project's workers, the stand-in answering at once.
      const csv = await writeBenchDataset(bench.dir, rows, `tp${rows}`);
      const input = benchInput(`bench-${rows}`, csv, join(bench.dir, `out-${rows}`), WINDOW);
      const workers = await createWorkers({ connection: bench.nativeConnection, namespace: 'default', env, concurrency: WINDOW });
      const rss = peakRssSampler();
      const start = performance.now();
      const run = bench.client.workflow.execute('datasetWorkflow', {
        taskQueue: ORCHESTRATOR_QUEUE,
        workflowId: input.runId,
        args: [input],
      }) as Promise<DatasetRunSummary>;
      const summary = await runWorkersUntil(workers, run);
      const seconds = (performance.now() - start) / 1000;
      const peakMb = rss.stop() / 2 ** 20;
      if (summary.ok !== rows) throw new Error(`expected ${rows} ok rows, got ${summary.ok}`);
      const lengths = await historyLengths(bench.client, input.runId);

      // Re-run of the finished run: no provider call, and how long it takes.
      const callsBefore = standin.calls.length;
      const again = await createWorkers({ connection: bench.nativeConnection, namespace: 'default', env, concurrency: WINDOW });
      const rerunStart = performance.now();
      const rerun = bench.client.workflow.execute('datasetWorkflow', {
        taskQueue: ORCHESTRATOR_QUEUE,
        workflowId: input.runId,
        args: [input],
      }) as Promise<DatasetRunSummary>;
      await runWorkersUntil(again, rerun);
      const rerunSeconds = (performance.now() - rerunStart) / 1000;

      const rate = rows / seconds;
      const bareRate = rows / bareSeconds;
      const activityRate = rows / activitySeconds;
      const localRate = rows / localSeconds;
      console.log(
        [
          `${rows} rows (window ${WINDOW}):`,
          `  atelier ${rate.toFixed(1)} rows/s (${seconds.toFixed(1)} s); bare empty children ${bareRate.toFixed(1)} rows/s (${bareSeconds.toFixed(1)} s); ratio ${(rate / bareRate).toFixed(2)}`,
          `  children with one no-op activity ${activityRate.toFixed(1)} rows/s (${activitySeconds.toFixed(1)} s), ${(activityRate / bareRate).toFixed(2)} of bare; atelier ${(rate / activityRate).toFixed(2)} of it`,
          `  children with one no-op local activity ${localRate.toFixed(1)} rows/s (${localSeconds.toFixed(1)} s), ${(localRate / bareRate).toFixed(2)} of bare`,
          `  parent runs ${lengths.length}, history events per run max ${Math.max(...lengths)}; benchmark process (workers, stand-in, client) peak RSS ${peakMb.toFixed(0)} MB`,
          `  re-run of the finished run: ${standin.calls.length - callsBefore} provider calls, ${rerunSeconds.toFixed(1)} s`,
        ].join('\n'),
      );
    }
  } finally {
    await bench.close();
    await standin.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
