// Rate benchmark: N rows through the stand-in OpenAI server limited to R requests/s (429 with
// Retry-After above that) answering after 1 s. Atelier runs them with --rpm R*60 (the provider
// queue's server-side rate limit) and retries; the baseline, measured in the same run, is a plain
// concurrent loop at the same concurrency that calls the same SDK once per row, as today's tools do.
// Reports achieved rate ÷ R (goal ≥ 0.95) and rows lost to 429 (goal 0).
//   npm run build && node dist/bench/rate.js [rows=1000] [R=10] [concurrency=16] [latencyMs=1000]
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import sharp from 'sharp';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import type { DatasetRunSummary } from '../lib/shared/types';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { createWorkers, runWorkersUntil } from '../workers';
import { benchInput, startBenchServer, writeBenchDataset } from './harness';

/**
 * Atelier is given --rpm at this share of the provider's limit: Temporal's queue limiter is a
 * token bucket that can let a second's worth of calls through at once, which a strict sliding-window
 * limit on the provider side answers with 429s. (Set LIMIT_SHARE=1 to see that.)
 */
const LIMIT_SHARE = Number(process.env.LIMIT_SHARE ?? 0.98);

interface Figures {
  ok: number;
  lost: number;
  calls: number;
  throttled: number;
  seconds: number;
}

function okRate(
  standin: OpenAIStandin,
  tag: string,
  start: number,
  end: number,
): { ok: number; calls: number; throttled: number; seconds: number } {
  const calls = standin.callsFor(tag);
  const ok = calls.filter((c) => c.status === 200).length;
  return { ok, calls: calls.length, throttled: calls.filter((c) => c.status === 429).length, seconds: (end - start) / 1000 };
}

async function baseline(standin: OpenAIStandin, rows: number, concurrency: number): Promise<Figures> {
  const client = new OpenAI({ apiKey: 'sk-bench', baseURL: standin.baseURL, maxRetries: 0 });
  const png = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#336699' } })
    .png()
    .toBuffer();
  let next = 0;
  let lost = 0;
  const start = Date.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < rows; i = next++) {
        try {
          await client.images.edit({
            model: 'gpt-image-2',
            prompt: `base row ${i}`,
            image: await toFile(png, 'in.png', { type: 'image/png' }),
          });
        } catch {
          lost += 1; // a plain loop has no retry: the row is lost
        }
      }
    }),
  );
  return { ...okRate(standin, 'base row ', start, Date.now()), lost };
}

async function main(): Promise<void> {
  const [rows = 1000, rps = 10, concurrency = 16, latencyMs = 1000] = process.argv.slice(2).map(Number);
  const standin = await startOpenAIStandin({ latencyMs, rateLimitPerSecond: rps });
  const bench = await startBenchServer();
  try {
    const base = await baseline(standin, rows, concurrency);

    const csv = await writeBenchDataset(bench.dir, rows, 'rate');
    const input = { ...benchInput('bench-rate', csv, join(bench.dir, 'out'), concurrency * 2), rateLimitPerSecond: rps * LIMIT_SHARE };
    const workers = await createWorkers({
      connection: bench.nativeConnection,
      namespace: 'default',
      queues: [ORCHESTRATOR_QUEUE, 'api-openai'],
      env: { OPENAI_API_KEY: 'sk-bench', OPENAI_BASE_URL: standin.baseURL },
      concurrency,
      rateLimitPerSecond: rps * LIMIT_SHARE,
    });
    const start = Date.now();
    const run = bench.client.workflow.execute('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: input.runId,
      args: [input],
    }) as Promise<DatasetRunSummary>;
    const summary = await runWorkersUntil(workers, run);
    const ours = { ...okRate(standin, 'rate row ', start, Date.now()), lost: summary.failed };

    const line = (name: string, f: Figures) =>
      `  ${name}: ${f.ok}/${rows} rows ok in ${f.seconds.toFixed(1)} s = ${(f.ok / f.seconds).toFixed(2)} rows/s = ${(f.ok / f.seconds / rps).toFixed(3)} of R; ` +
      `${f.lost} rows lost to 429; ${f.calls} calls, ${f.throttled} answered 429`;
    console.log(`${rows} rows, stand-in limited to R=${rps} req/s, ${latencyMs} ms latency, concurrency ${concurrency}:`);
    console.log(line(`atelier (--rpm ${LIMIT_SHARE}*R*60, retries)`, ours));
    console.log(line('plain concurrent loop', base));
  } finally {
    await bench.close();
    await standin.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
