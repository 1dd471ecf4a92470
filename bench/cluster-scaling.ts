// Scaling benchmark on a real cluster: rows/s with 1, 2 and 4 `atelier worker` processes (each the
// same fixed --concurrency) against Temporal v1.32.1 on PostgreSQL (testing/localCluster), the OpenAI
// stand-in answering every call after a fixed latency (default 1 s), so the provider call, not the
// orchestration, is what each worker is busy with. Rows scale with N so every run lasts about as
// long. Prints each rate and its ratio to N × the 1-worker rate (goal: at least 0.9).
//   npm run build && node dist/bench/cluster-scaling.js [concurrency=4] [latencyMs=1000] [rowsPerWorker=80]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import { startLocalCluster } from '../testing/localCluster';
import type { DatasetRunSummary } from '../lib/shared/types';
import { startOpenAIStandin } from '../activities/providers/openai/standin';
import { benchInput, writeBenchDataset } from './harness';

const BIN = join(__dirname, '..', '..', 'bin', 'atelier.js');

function startWorker(env: NodeJS.ProcessEnv, concurrency: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [BIN, 'worker', '--concurrency', String(concurrency)], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (/serving atelier-orchestrator/.test(err)) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before serving:\n${err}`)));
  });
}

async function stopWorkers(workers: ChildProcess[]): Promise<void> {
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.exitCode !== null) return resolve();
          w.once('exit', () => resolve());
          w.kill('SIGINT');
          setTimeout(() => w.kill('SIGKILL'), 15_000).unref();
        }),
    ),
  );
}

async function main(): Promise<void> {
  const concurrency = Number(process.argv[2] ?? 4);
  const latencyMs = Number(process.argv[3] ?? 1000);
  const rowsPerWorker = Number(process.argv[4] ?? 80);
  const dir = mkdtempSync(join(tmpdir(), 'atelier-bench-cluster-'));
  const standin = await startOpenAIStandin({ latencyMs });
  const cluster = await startLocalCluster({ log: (l) => console.error(`[cluster] ${l}`) });
  const connection = await Connection.connect({ address: cluster.address });
  const client = new Client({ connection, namespace: cluster.namespace });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TEMPORAL_ADDRESS: cluster.address,
    TEMPORAL_NAMESPACE: cluster.namespace,
    OPENAI_API_KEY: 'sk-bench',
    OPENAI_BASE_URL: standin.baseURL,
  };
  delete env.TEMPORAL_API_KEY;
  delete env.TEMPORAL_TLS;
  const results: Array<{ n: number; rows: number; seconds: number; rate: number }> = [];
  try {
    for (const n of [1, 2, 4]) {
      const workers: ChildProcess[] = [];
      try {
        for (let i = 0; i < n; i++)
          workers.push(await startWorker({ ...env, ATELIER_WORKER_LOG: join(dir, `worker-${n}-${i}.log`) }, concurrency));
        const rows = rowsPerWorker * n;
        const csv = await writeBenchDataset(dir, rows, `scale${n}`);
        // The window (row children in flight) exceeds the calls all workers can make at once, so
        // the workers' concurrency is the limit being measured.
        const input = benchInput(`cluster-scaling-${n}`, csv, join(dir, `out-${n}`), Math.max(32, 4 * n * concurrency));
        const start = performance.now();
        const handle = await client.workflow.start('datasetWorkflow', {
          taskQueue: ORCHESTRATOR_QUEUE,
          workflowId: input.runId,
          args: [input],
        });
        const summary = (await handle.result()) as DatasetRunSummary;
        const seconds = (performance.now() - start) / 1000;
        if (summary.ok !== rows) throw new Error(`${n} workers: expected ${rows} ok rows, got ${summary.ok}`);
        results.push({ n, rows, seconds, rate: rows / seconds });
        console.error(`  ${n} worker(s): ${rows} rows in ${seconds.toFixed(1)} s`);
      } finally {
        await stopWorkers(workers);
      }
    }
  } finally {
    await connection.close();
    await cluster.close();
    await standin.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const base = results[0]!.rate;
  console.log(`Temporal v1.32.1 on PostgreSQL, stand-in latency ${latencyMs} ms, --concurrency ${concurrency} per worker process:`);
  for (const r of results) {
    const ideal = r.n * base;
    console.log(
      `  ${r.n} worker(s): ${r.rate.toFixed(2)} rows/s (${r.rows} rows, ${r.seconds.toFixed(1)} s); ${(r.rate / ideal).toFixed(2)} × ${r.n} × the 1-worker rate`,
    );
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
