// Storage benchmark: the same dataset run with its outputs (plan, ledger, stored answers, images,
// results) on the local disk and in object storage (versitygw on loopback), measured in the same
// run, with the ratio s3 ÷ local. The dataset itself is read from the same backend as the outputs.
// The stand-in answers after --latency ms (default 0: the storage cost shows in full).
//   npm run build && node dist/bench/storage.js [rows] [--latency ms]   (default 500 rows)
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import type { DatasetRunSummary, DatasetWorkflowInput } from '../lib/shared/types';
import { startS3Server } from '../testing/versitygw';
import { startOpenAIStandin } from '../activities/providers/openai/standin';
import { createWorkers, runWorkersUntil } from '../workers';
import { benchInput, startBenchServer, writeBenchDataset, type BenchServer } from './harness';

const WINDOW = 32;

async function timedRun(
  bench: BenchServer,
  env: Record<string, string>,
  input: DatasetWorkflowInput,
): Promise<{ seconds: number; rerunSeconds: number }> {
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
  const seconds = await once();
  // A re-run of the finished run: every row is found done in the ledger (no call).
  const rerunSeconds = await once();
  return { seconds, rerunSeconds };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const latencyAt = args.indexOf('--latency');
  const latencyMs = latencyAt >= 0 ? Number(args[latencyAt + 1]) : 0;
  const rows = Number(args.find((a, i) => /^\d+$/.test(a) && i !== latencyAt + 1) ?? 500);
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
    const local = await timedRun(bench, env, benchInput(`storage-local-${rows}`, csv, join(bench.dir, 'out-local'), WINDOW));
    const remote = await timedRun(bench, env, benchInput(`storage-s3-${rows}`, `s3://bench/data/st${rows}.csv`, 's3://bench/out', WINDOW));
    const line = (name: string, r: { seconds: number; rerunSeconds: number }) =>
      `${name.padEnd(6)} ${r.seconds.toFixed(1).padStart(6)} s  ${(rows / r.seconds).toFixed(1).padStart(7)} rows/s   re-run ${r.rerunSeconds.toFixed(1)} s`;
    console.log(`storage: ${rows} rows, window ${WINDOW}, stand-in latency ${latencyMs} ms (${new Date().toISOString().slice(0, 10)})`);
    console.log(line('local', local));
    console.log(line('s3', remote));
    console.log(
      `ratio s3 ÷ local (rows/s): ${(local.seconds / remote.seconds).toFixed(2)}   re-run: ${(local.rerunSeconds / remote.rerunSeconds).toFixed(2)}`,
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
