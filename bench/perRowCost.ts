// Per-row cost benchmark: what orchestration costs a row, against the least a row can cost in this
// design: a child workflow that runs one no-op activity on a second task queue, in the same sliding
// window, through the same dev server, in the same run. The stand-in answers at once and runs in a
// process of its own, so this process's CPU time is the workers' (and the client's) alone.
// Reports rows/s and their ratio (Atelier ÷ baseline; goal ≥ 0.9), and per row: history events
// (row children and parent runs together), workflow tasks, and CPU ms of this process.
//   npm run build && node dist/bench/perRowCost.js [--rows 1000,10000] [--window 32] [--sample 1000]
//     [--only atelier|baseline]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { flag, startStandinProcess } from './harness';
import type { Client } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import type { DatasetRunSummary } from '../lib/shared/types';
import { createWorkers, runWorkersUntil } from '../workers';
import { NOOP_ACTIVITY_QUEUE } from './baselineWorkflows';
import { benchInput, startBenchServer, writeBenchDataset, type BenchServer } from './harness';

interface Cost {
  seconds: number;
  cpuMs: number;
  /** CPU ms by thread name (Linux: from /proc), to tell the workflow threads from the activities' main thread. */
  threads: Record<string, number>;
  events: number;
  workflowTasks: number;
}

/**
 * History events and workflow tasks of the given workflows: events from the visibility listing (all
 * of them), workflow tasks counted in the histories of `sample` of them, scaled to all.
 */
async function historyCost(client: Client, query: string, sample: number): Promise<{ events: number; workflowTasks: number }> {
  const executions: { workflowId: string; runId: string; historyLength: number }[] = [];
  for await (const wf of client.workflow.list({ query }))
    executions.push({ workflowId: wf.workflowId, runId: wf.runId, historyLength: wf.historyLength });
  const events = executions.reduce((n, e) => n + e.historyLength, 0);
  const step = Math.max(1, Math.floor(executions.length / sample));
  const sampled = executions.filter((_, i) => i % step === 0);
  let tasks = 0;
  let sampledEvents = 0;
  for (const e of sampled) {
    const history = await client.workflow.getHandle(e.workflowId, e.runId).fetchHistory();
    const list = history.events ?? [];
    sampledEvents += list.length;
    tasks += list.filter((ev) => ev.workflowTaskCompletedEventAttributes).length;
  }
  return { events, workflowTasks: sampledEvents ? (tasks * events) / sampledEvents : 0 };
}

/** CPU ms of each live thread of this process, by thread id, with its name (empty where /proc is absent). */
function threadTimes(): Map<string, { name: string; ms: number }> {
  const times = new Map<string, { name: string; ms: number }>();
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return times;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const name = tid === String(process.pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, close);
      const fields = stat.slice(close + 2).split(' ');
      // utime and stime (fields 14 and 15 of stat), in clock ticks of 10 ms.
      times.set(tid, { name, ms: (Number(fields[11]) + Number(fields[12])) * 10 });
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return times;
}

async function measure<T>(run: () => Promise<T>): Promise<{ value: T; seconds: number; cpuMs: number; threads: Record<string, number> }> {
  const cpu = process.cpuUsage();
  const before = threadTimes();
  // Threads that end during the run (the workflow threads end with their worker) are sampled while
  // they live; the last sample of each counts.
  const seen = new Map<string, { name: string; ms: number }>();
  const sample = () => {
    for (const [tid, t] of threadTimes()) seen.set(tid, t);
  };
  const sampler = setInterval(sample, 250);
  const start = performance.now();
  try {
    const value = await run();
    const used = process.cpuUsage(cpu);
    sample();
    const threads: Record<string, number> = {};
    for (const [tid, t] of seen) {
      // Node names no thread of its own: "node" threads that were there before are V8's and libuv's
      // pools; those started during the run are the workers' workflow threads.
      const name =
        t.name === 'node' && !before.has(tid) ? 'node (new: workflow threads)' : t.name === 'node' ? 'node (V8, libuv pools)' : t.name;
      threads[name] = (threads[name] ?? 0) + t.ms - (before.get(tid)?.ms ?? 0);
    }
    return { value, seconds: (performance.now() - start) / 1000, cpuMs: (used.user + used.system) / 1000, threads };
  } finally {
    clearInterval(sampler);
  }
}

async function baseline(
  bench: BenchServer,
  bundle: WorkflowBundleWithSourceMap,
  rows: number,
  window: number,
  sample: number,
): Promise<Cost> {
  const workflowId = `cost-baseline-${rows}-${Date.now()}`;
  const m = await measure(async () => {
    const workers = [
      await Worker.create({ connection: bench.nativeConnection, taskQueue: 'bench-bare', workflowBundle: bundle }),
      await Worker.create({
        connection: bench.nativeConnection,
        taskQueue: NOOP_ACTIVITY_QUEUE,
        activities: { noop: async () => undefined },
        maxConcurrentActivityTaskExecutions: window,
      }),
    ];
    const done = bench.client.workflow.execute('bareParentWorkflow', {
      taskQueue: 'bench-bare',
      workflowId,
      args: [rows, window, 'one-activity'],
      workflowIdConflictPolicy: 'FAIL',
    });
    return runWorkersUntil(workers, done);
  });
  // Children are `<rows>-one-activity-<i>`; each baseline run uses a fresh server-side id space below.
  const children = await historyCost(bench.client, `WorkflowType = 'oneActivityChildWorkflow'`, sample);
  const parent = await historyCost(bench.client, `WorkflowId = '${workflowId}'`, sample);
  return {
    seconds: m.seconds,
    cpuMs: m.cpuMs,
    threads: m.threads,
    events: children.events + parent.events,
    workflowTasks: children.workflowTasks + parent.workflowTasks,
  };
}

async function atelier(bench: BenchServer, baseURL: string, rows: number, window: number, sample: number): Promise<Cost> {
  const csv = await writeBenchDataset(bench.dir, rows, `cost${rows}`);
  const input = benchInput(`cost-${rows}`, csv, join(bench.dir, `out-${rows}`), window);
  const m = await measure(async () => {
    const workers = await createWorkers({
      connection: bench.nativeConnection,
      namespace: 'default',
      env: { OPENAI_API_KEY: 'sk-bench', OPENAI_BASE_URL: baseURL },
      concurrency: window,
    });
    const run = bench.client.workflow.execute('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: input.runId,
      args: [input],
    }) as Promise<DatasetRunSummary>;
    return runWorkersUntil(workers, run);
  });
  if (m.value.ok !== rows) throw new Error(`expected ${rows} ok rows, got ${m.value.ok}`);
  const children = await historyCost(bench.client, `WorkflowType = 'rowWorkflow'`, sample);
  const parent = await historyCost(bench.client, `WorkflowId = '${input.runId}'`, sample);
  return {
    seconds: m.seconds,
    cpuMs: m.cpuMs,
    threads: m.threads,
    events: children.events + parent.events,
    workflowTasks: children.workflowTasks + parent.workflowTasks,
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const sizes = flag(args, '--rows', '1000').split(',').map(Number);
  const window = Number(flag(args, '--window', '32'));
  const sample = Number(flag(args, '--sample', '1000'));
  // --only atelier|baseline: one side alone (to profile it, e.g. under node --cpu-prof); no ratio.
  const only = flag(args, '--only', '');
  const standin = await startStandinProcess();
  const bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('./baselineWorkflows'), logger: new DefaultLogger('ERROR') });
  const lines: string[] = [];
  try {
    for (const rows of sizes) {
      // A server per size, so the visibility queries see only this size's workflows.
      const bench = await startBenchServer();
      try {
        const base = only === 'atelier' ? undefined : await baseline(bench, bundle, rows, window, sample);
        const ours = only === 'baseline' ? undefined : await atelier(bench, standin.baseURL, rows, window, sample);
        const per = (c: Cost) =>
          `${(rows / c.seconds).toFixed(1)} rows/s (${c.seconds.toFixed(1)} s), per row ${(c.events / rows).toFixed(1)} events, ${(c.workflowTasks / rows).toFixed(2)} workflow tasks, ${(c.cpuMs / rows).toFixed(1)} CPU ms`;
        const byThread = (c: Cost) =>
          Object.entries(c.threads)
            .filter(([, ms]) => ms / rows >= 0.05)
            .sort((a, b) => b[1] - a[1])
            .map(([name, ms]) => `${name} ${(ms / rows).toFixed(1)}`)
            .join(', ');
        if (ours) console.log(`  ${rows} rows, window ${window}: atelier ${per(ours)}\n    CPU ms per row by thread: ${byThread(ours)}`);
        if (base)
          console.log(
            `  ${rows} rows, window ${window}: one-activity children ${per(base)}\n    CPU ms per row by thread: ${byThread(base)}`,
          );
        if (ours && base) {
          lines.push(
            `per-row cost ${new Date().toISOString().slice(0, 10)}: ${rows} rows, window ${window}: atelier ÷ one-activity children ${(base.seconds / ours.seconds).toFixed(2)} (rows/s); CPU ms per row ${(ours.cpuMs / rows).toFixed(1)} vs ${(base.cpuMs / rows).toFixed(1)} (${(ours.cpuMs / base.cpuMs).toFixed(2)}×; goal ≤ 1.5×); events per row ${(ours.events / rows).toFixed(1)} vs ${(base.events / rows).toFixed(1)}; workflow tasks per row ${(ours.workflowTasks / rows).toFixed(2)} vs ${(base.workflowTasks / rows).toFixed(2)}`,
          );
        }
      } finally {
        await bench.close();
      }
    }
  } finally {
    standin.stop();
  }
  for (const line of lines) console.log(line);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
