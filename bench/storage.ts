// Storage benchmark: the same dataset run with its outputs (plan, ledger, stored answers, images,
// results) on the local disk and in object storage (versitygw on loopback), measured in the same
// run, with the ratio s3 ÷ local. The dataset itself is read from the same backend as the outputs.
// The stand-in answers after --latency ms (default 0: the storage cost shows in full).
// With --repeat N the two backends alternate N times (fresh output folders each time) and the
// ratio is given per pair and as the median: on a shared machine the load drifts between runs.
//   npm run build && node dist/bench/storage.js [rows] [--latency ms] [--repeat N]   (default 500 rows, 1 repeat)
import { readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import type { DatasetRunSummary, DatasetWorkflowInput } from '../lib/shared/types';
import { startS3Server } from '../testing/versitygw';
import { startOpenAIStandin } from '../activities/providers/openai/standin';
import { createWorkers, runWorkersUntil } from '../workers';
import { benchInput, startBenchServer, writeBenchDataset, type BenchServer } from './harness';

const WINDOW = 32;

/**
 * CPU seconds a process has used (user + system), from /proc (Linux; 0 elsewhere): the share of the
 * 2 cores a run really costs, which a loaded machine stretches far less than the wall time.
 */
function cpuSecondsOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime (fields 14, 15), clock ticks
  } catch {
    return 0;
  }
}

/** The versitygw process serving `port` (the test server does not expose its pid), from /proc. */
function versitygwPid(port: string): number | undefined {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (cmd.includes(`127.0.0.1:${port}`) && cmd.includes('posix')) return Number(name);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

interface RunFigures {
  seconds: number;
  rerunSeconds: number;
  /** CPU ms per row of the first run: this process (workers, stand-in, client) and the S3 server. */
  cpuMsPerRow: number;
  storeCpuMsPerRow: number;
}

async function timedRun(
  bench: BenchServer,
  env: Record<string, string>,
  input: DatasetWorkflowInput,
  storePid: number | undefined,
  rows: number,
): Promise<RunFigures> {
  const once = async (): Promise<number> => {
    const workers = await createWorkers({ connection: bench.nativeConnection, namespace: 'default', env, concurrency: WINDOW });
    const start = performance.now();
    const run = bench.client.workflow.execute('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: `${input.runId}-${Math.round(start)}`,
      args: [input],
    }) as Promise<DatasetRunSummary>;
    const summary = await runWorkersUntil(workers, run);
    if (summary.ok !== summary.total) throw new Error(`${input.outputDir}: ${summary.ok}/${summary.total} rows ok`);
    return (performance.now() - start) / 1000;
  };
  const cpuBefore = process.cpuUsage();
  const storeBefore = cpuSecondsOf(storePid);
  const seconds = await once();
  const cpu = process.cpuUsage(cpuBefore);
  const cpuMsPerRow = (cpu.user + cpu.system) / 1000 / rows;
  const storeCpuMsPerRow = ((cpuSecondsOf(storePid) - storeBefore) * 1000) / rows;
  // A re-run of the finished run: every row is found done in the ledger (no call).
  const rerunSeconds = await once();
  return { seconds, rerunSeconds, cpuMsPerRow, storeCpuMsPerRow };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const latencyAt = args.indexOf('--latency');
  const latencyMs = latencyAt >= 0 ? Number(args[latencyAt + 1]) : 0;
  const repeatAt = args.indexOf('--repeat');
  const repeat = repeatAt >= 0 ? Number(args[repeatAt + 1]) : 1;
  const rows = Number(args.find((a, i) => /^\d+$/.test(a) && i !== latencyAt + 1 && i !== repeatAt + 1) ?? 500);
  const s3 = await startS3Server();
  Object.assign(process.env, s3.env);
  await s3.createBucket('bench');
  const standin = await startOpenAIStandin({ latencyMs });
  const bench = await startBenchServer();
  const env = { OPENAI_API_KEY: 'sk-bench', OPENAI_BASE_URL: standin.baseURL, ...s3.env };
  try {
    const csv = await writeBenchDataset(bench.dir, rows, `st${rows}`);
    const client = new S3Client({ region: s3.env.AWS_REGION, endpoint: s3.endpoint, forcePathStyle: true });
    for (const name of [`st${rows}.csv`, 'in.png']) {
      await client.send(new PutObjectCommand({ Bucket: 'bench', Key: `data/${name}`, Body: readFileSync(join(bench.dir, name)) }));
    }
    client.destroy();
    const storePid = versitygwPid(new URL(s3.endpoint).port);
    const line = (name: string, r: RunFigures) =>
      `${name.padEnd(6)} ${r.seconds.toFixed(1).padStart(6)} s  ${(rows / r.seconds).toFixed(1).padStart(7)} rows/s   re-run ${r.rerunSeconds.toFixed(1)} s` +
      `   CPU per row: this process ${r.cpuMsPerRow.toFixed(1)} ms, versitygw ${r.storeCpuMsPerRow.toFixed(1)} ms`;
    const load = () => loadavg()[0]!.toFixed(1);
    console.log(`storage: ${rows} rows, window ${WINDOW}, stand-in latency ${latencyMs} ms (${new Date().toISOString().slice(0, 10)})`);
    const ratios: number[] = [];
    for (let n = 1; n <= repeat; n++) {
      const loadBefore = load();
      const local = await timedRun(
        bench,
        env,
        benchInput(`storage-local-${rows}-${n}`, csv, join(bench.dir, `out-local-${n}`), WINDOW),
        storePid,
        rows,
      );
      const remote = await timedRun(
        bench,
        env,
        benchInput(`storage-s3-${rows}-${n}`, `s3://bench/data/st${rows}.csv`, `s3://bench/out-${n}`, WINDOW),
        storePid,
        rows,
      );
      ratios.push(local.seconds / remote.seconds);
      console.log(`repeat ${n} (load average ${loadBefore} → ${load()}):`);
      console.log(line('local', local));
      console.log(line('s3', remote));
      console.log(
        `ratio s3 ÷ local (rows/s): ${(local.seconds / remote.seconds).toFixed(2)}   re-run: ${(local.rerunSeconds / remote.rerunSeconds).toFixed(2)}`,
      );
    }
    const sorted = [...ratios].sort((a, b) => a - b);
    if (repeat > 1)
      console.log(
        `median ratio s3 ÷ local over ${repeat} pairs: ${sorted[Math.floor((repeat - 1) / 2)]!.toFixed(2)} (${ratios.map((r) => r.toFixed(2)).join(', ')})`,
      );
  } finally {
    await bench.close();
    await standin.close();
    await s3.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
