// S3 requests per row, counted by the store itself: an s3 → s3 run (dataset, its image and every
// output in versitygw, the provider answering at once) and a re-run of the finished run, with the
// requests read from versitygw's own access log (every request the SDK really sent, retries and
// all), per row and by operation. Issue 21 measured 17.6 per row for a first run and 6.2 for a
// re-run on 2026-12-06, and asks for ≤ 6 and ≤ 1.5; on 2026-12-07 this gave 12.73 and 3.26, then
// 4.45 and 0.33 (docs/benchmarks.md).
//   npm run build && node dist/bench/s3Requests.js [rows]   (default 100)
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import type { DatasetRunSummary, DatasetWorkflowInput } from '../lib/shared/types';
import { startOpenAIStandin } from '../activities/providers/openai/standin';
import { startS3Server, type S3AccessLogEntry, type S3TestServer } from '../testing/versitygw';
import { createWorkers, runWorkersUntil } from '../workers';
import { benchInput, startBenchServer, writeBenchDataset, type BenchServer } from './harness';

const WINDOW = 16;

/** The log's entries once it has stopped growing (the server writes a line after answering). */
async function settledRequests(s3: S3TestServer): Promise<S3AccessLogEntry[]> {
  let last = -1;
  for (;;) {
    const entries = s3.requests();
    if (entries.length === last) return entries;
    last = entries.length;
    await new Promise((r) => setTimeout(r, 500));
  }
}

export interface RequestCount {
  total: number;
  perRow: number;
  byOperation: Record<string, number>;
  /** By operation and kind of object (the key with its numbers and hashes folded), e.g. `GetObject out/.atelier/ledger/#.json`. */
  byObject: Record<string, number>;
}

function count(entries: S3AccessLogEntry[], rows: number): RequestCount {
  const byOperation: Record<string, number> = {};
  const byObject: Record<string, number> = {};
  for (const e of entries) {
    byOperation[e.operation] = (byOperation[e.operation] ?? 0) + 1;
    const kind = `${e.operation.replace(/^s3_/, '')} ${decodeURIComponent(e.key).replace(/[0-9a-f]{12,}|\d+/g, '#')}`;
    byObject[kind] = (byObject[kind] ?? 0) + 1;
  }
  return { total: entries.length, perRow: entries.length / rows, byOperation, byObject };
}

/** Runs `input` to the end twice (a first run, then a re-run finding every row done) and counts each. */
export async function countRequests(
  bench: BenchServer,
  s3: S3TestServer,
  env: Record<string, string>,
  input: DatasetWorkflowInput,
  rows: number,
): Promise<{ first: RequestCount; rerun: RequestCount }> {
  const once = async (attempt: number): Promise<RequestCount> => {
    const before = (await settledRequests(s3)).length;
    const workers = await createWorkers({ connection: bench.nativeConnection, namespace: 'default', env, concurrency: WINDOW });
    const run = bench.client.workflow.execute('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: `${input.runId}-${attempt}`,
      args: [input],
    }) as Promise<DatasetRunSummary>;
    const summary = await runWorkersUntil(workers, run);
    if (summary.ok !== summary.total) throw new Error(`${input.outputDir}: ${summary.ok}/${summary.total} rows ok`);
    return count((await settledRequests(s3)).slice(before), rows);
  };
  const first = await once(1);
  const rerun = await once(2);
  return { first, rerun };
}

async function main(): Promise<void> {
  const rows = Number(process.argv[2] ?? 100);
  const s3 = await startS3Server({ accessLog: true });
  Object.assign(process.env, s3.env);
  await s3.createBucket('bench');
  const standin = await startOpenAIStandin();
  const bench = await startBenchServer();
  const env = { OPENAI_API_KEY: 'sk-bench', OPENAI_BASE_URL: standin.baseURL, ...s3.env };
  try {
    await writeBenchDataset(bench.dir, rows, `rq${rows}`);
    const client = new S3Client({ region: s3.env.AWS_REGION, endpoint: s3.endpoint, forcePathStyle: true });
    for (const name of [`rq${rows}.csv`, 'in.png']) {
      await client.send(new PutObjectCommand({ Bucket: 'bench', Key: `data/${name}`, Body: readFileSync(join(bench.dir, name)) }));
    }
    client.destroy();
    const input = benchInput(`s3-requests-${rows}`, `s3://bench/data/rq${rows}.csv`, 's3://bench/out', WINDOW);
    const { first, rerun } = await countRequests(bench, s3, env, input, rows);
    const ops = (c: RequestCount) =>
      Object.entries(c.byOperation)
        .sort((a, b) => b[1] - a[1])
        .map(([op, n]) => `${op.replace(/^s3_/, '')} ${(n / rows).toFixed(2)}`)
        .join(', ');
    const objects = (c: RequestCount) =>
      Object.entries(c.byObject)
        .sort((a, b) => b[1] - a[1])
        .filter(([, n]) => n / rows >= 0.05)
        .map(([kind, n]) => `    ${(n / rows).toFixed(2).padStart(5)}  ${kind}`)
        .join('\n');
    console.log(`s3 requests (versitygw access log): ${rows} rows s3 → s3, window ${WINDOW} (${new Date().toISOString().slice(0, 10)})`);
    console.log(
      `first run: ${first.total} requests, ${first.perRow.toFixed(2)} per row (goal ≤ 6; 17.6 on 2026-12-06, 4.45 on 2026-12-07)`,
    );
    console.log(`  per row by operation: ${ops(first)}`);
    console.log(objects(first));
    console.log(
      `re-run:    ${rerun.total} requests, ${rerun.perRow.toFixed(2)} per row (goal ≤ 1.5; 6.2 on 2026-12-06, 0.33 on 2026-12-07)`,
    );
    console.log(`  per row by operation: ${ops(rerun)}`);
    console.log(objects(rerun));
  } finally {
    await bench.close();
    await standin.close();
    await s3.stop();
  }
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
