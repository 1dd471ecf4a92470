// Scale benchmark: one long dataset run (default 100,000 rows) through the project's own worker
// process (`atelier worker`, as users run it) on a dev server, against the zero-latency OpenAI
// stand-in. Reports the parent's history events per run (continue-as-new must keep every run under
// ~10k events), how many runs it took, the worker process's peak RSS (VmHWM, must stay under 1 GB)
// and the rows/s it got. Progress goes to stderr every 30 s.
// It also reports the results tables' share of the wall time (every writeResults activity, from the histories)
// and the longest gap between refreshes, in seconds and in rows finished meanwhile (issue 21: at least
// every minute or 5 % of rows throughout), from the refreshes' close times and progress sampled every 5 s.
//   npm run build && node dist/bench/scale.js [rows]   (default 100000)
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import type { DatasetRunSummary, ProgressSnapshot } from '../lib/shared/types';
import { startOpenAIStandin } from '../activities/providers/openai/standin';
import { activityTime, benchInput, historyLengths, startBenchServer, writeBenchDataset } from './harness';

const WINDOW = 32;

/** Peak and current resident set of a process, from /proc (Linux). */
function memoryOf(pid: number): { peakMb: number; nowMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { peakMb: kb('VmHWM') / 1024, nowMb: kb('VmRSS') / 1024 };
}

/** Rows finished at `at`, interpolated between the progress samples around it. */
function doneAt(progress: { at: number; done: number }[], at: number): number {
  let before = progress[0]!;
  for (const p of progress) {
    if (p.at <= at) before = p;
    else return Math.round(before.done + ((p.done - before.done) * (at - before.at)) / Math.max(1, p.at - before.at));
  }
  return before.done;
}

/**
 * The gaps between consecutive results writes (the first from the run's start): the longest in
 * seconds, the most rows finished within one, and how many were over both one minute and 5 % of
 * the rows (the bound is "every minute or 5 % of rows", so those are the misses).
 */
function refreshGaps(
  startedAt: number,
  completedAt: number[],
  progress: { at: number; done: number }[],
  rows: number,
): { longestSeconds: number; mostRows: number; overBoth: number } {
  const sorted = [...progress].sort((a, b) => a.at - b.at);
  const points = [startedAt, ...completedAt];
  let longestSeconds = 0;
  let mostRows = 0;
  let overBoth = 0;
  for (let i = 1; i < points.length; i += 1) {
    const seconds = (points[i]! - points[i - 1]!) / 1000;
    const finished = doneAt(sorted, points[i]!) - doneAt(sorted, points[i - 1]!);
    longestSeconds = Math.max(longestSeconds, seconds);
    mostRows = Math.max(mostRows, finished);
    if (seconds > 60 && finished > 0.05 * rows) overBoth += 1;
  }
  return { longestSeconds, mostRows, overBoth };
}

async function main(): Promise<void> {
  const rows = Number(process.argv[2] ?? 100_000);
  const standin = await startOpenAIStandin();
  const bench = await startBenchServer();
  const worker = spawn(process.execPath, [join(__dirname, '..', '..', 'bin', 'atelier.js'), 'worker', '--concurrency', String(WINDOW)], {
    env: {
      ...process.env,
      ATELIER_WORKER_LOG: join(bench.dir, 'worker.log'),
      TEMPORAL_ADDRESS: bench.server.address,
      OPENAI_API_KEY: 'sk-bench',
      OPENAI_BASE_URL: standin.baseURL,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const workerExited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  try {
    const csv = await writeBenchDataset(bench.dir, rows, `scale${rows}`);
    const input = benchInput(`scale-${rows}`, csv, join(bench.dir, `out-${rows}`), WINDOW);
    const start = performance.now();
    const startedAt = Date.now();
    // (epoch ms, rows finished) every 5 s, and the load average seen: for the gaps between refreshes.
    const progress: { at: number; done: number }[] = [{ at: startedAt, done: 0 }];
    const loads: number[] = [loadavg()[0]!];
    const handle = await bench.client.workflow.start('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: input.runId,
      args: [input],
    });
    let peakMb = 0;
    const sample = setInterval(() => {
      if (worker.pid !== undefined && worker.exitCode === null) peakMb = Math.max(peakMb, memoryOf(worker.pid).peakMb);
    }, 1000);
    const progressSample = setInterval(() => {
      loads.push(loadavg()[0]!);
      void handle
        .query<ProgressSnapshot>('progress')
        .then((p) => progress.push({ at: Date.now(), done: p.ok + p.failed }))
        .catch(() => undefined);
    }, 5_000);
    const report = setInterval(() => {
      void handle
        .query<ProgressSnapshot>('progress')
        .then((p) => {
          const seconds = (performance.now() - start) / 1000;
          const rss = worker.pid !== undefined ? memoryOf(worker.pid).nowMb : 0;
          console.error(
            `  ${seconds.toFixed(0)} s: ${p.ok + p.failed}/${p.total} rows, ${p.continuedAsNew} continue-as-new, worker RSS ${rss.toFixed(0)} MB`,
          );
        })
        .catch(() => undefined);
    }, 30_000);
    const summary = (await handle.result()) as DatasetRunSummary;
    const seconds = (performance.now() - start) / 1000;
    clearInterval(sample);
    clearInterval(report);
    clearInterval(progressSample);
    progress.push({ at: Date.now(), done: rows });
    if (worker.pid !== undefined) peakMb = Math.max(peakMb, memoryOf(worker.pid).peakMb);
    if (summary.ok !== rows) throw new Error(`expected ${rows} ok rows, got ${summary.ok}`);

    const lengths = await historyLengths(bench.client, input.runId);
    // The results tables' share of the run: every writeResults (the refreshes and the final write).
    const results = await activityTime(bench.client, input.runId, 'writeResults');
    const gaps = refreshGaps(startedAt, results.completedAt, progress, rows);
    console.log(
      [
        `${rows} rows (window ${WINDOW}), one \`atelier worker\` process:`,
        `  ${(rows / seconds).toFixed(1)} rows/s (${(seconds / 60).toFixed(1)} min), ${summary.ok} ok`,
        `  parent runs ${lengths.length}, history events per run max ${Math.max(...lengths)}, mean ${(lengths.reduce((a, b) => a + b, 0) / lengths.length).toFixed(0)}`,
        `  worker process peak RSS ${peakMb.toFixed(0)} MB`,
        `  results tables: ${results.count} writes (refreshes + final), ${results.seconds.toFixed(1)} s in all, longest ${results.longest.toFixed(2)} s: ` +
          `${((100 * results.seconds) / seconds).toFixed(1)} % of the run's wall time (load average ${loadavg()[0]!.toFixed(1)} at the end)`,
        `  gaps between refreshes (from the run's start): longest ${gaps.longestSeconds.toFixed(0)} s, most rows between two ${gaps.mostRows} ` +
          `(${((100 * gaps.mostRows) / rows).toFixed(1)} %); gaps over both 1 min and 5 % of rows: ${gaps.overBoth}`,
        `  load average (1 min) during the run: ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}`,
      ].join('\n'),
    );
  } finally {
    worker.kill('SIGINT');
    await Promise.race([workerExited, new Promise((resolve) => setTimeout(resolve, 15_000))]);
    if (worker.exitCode === null) worker.kill('SIGKILL');
    await bench.close();
    await standin.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
