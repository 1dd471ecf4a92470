// Shared set-up for the benchmarks: a project dev server (the pinned CLI, SQLite on disk, as
// `atelier edit` runs it), a dataset of N rows on one small image, and the project's real workers.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Runtime, DefaultLogger } from '@temporalio/worker';
import sharp from 'sharp';
import { startDevServer, type DevServerHandle } from '../lib/temporal/devServer';
import { findTemporalCli } from '../lib/temporal/temporalCli';
import type { DatasetWorkflowInput } from '../lib/shared/types';

export interface BenchServer {
  dir: string;
  server: DevServerHandle;
  client: Client;
  nativeConnection: NativeConnection;
  close(): Promise<void>;
}

let runtimeInstalled = false;

export async function startBenchServer(): Promise<BenchServer> {
  if (!runtimeInstalled) {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    runtimeInstalled = true;
  }
  const dir = mkdtempSync(join(tmpdir(), 'atelier-bench-'));
  const server = await startDevServer({ temporalPath: findTemporalCli(), stateDir: join(dir, 'state'), headless: true });
  const connection = await Connection.connect({ address: server.address });
  const nativeConnection = await NativeConnection.connect({ address: server.address });
  return {
    dir,
    server,
    client: new Client({ connection }),
    nativeConnection,
    async close() {
      await nativeConnection.close();
      await connection.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function writeBenchDataset(dir: string, rows: number, tag: string): Promise<string> {
  await sharp({ create: { width: 16, height: 16, channels: 3, background: '#336699' } })
    .png()
    .toFile(join(dir, 'in.png'));
  const csv = join(dir, `${tag}.csv`);
  const lines = ['image,instruction'];
  for (let i = 0; i < rows; i++) lines.push(`in.png,${tag} row ${i}`);
  writeFileSync(csv, `${lines.join('\n')}\n`);
  return csv;
}

export function benchInput(runId: string, inputPath: string, outputDir: string, window: number): DatasetWorkflowInput {
  return {
    runId,
    inputPath,
    outputDir,
    backend: 'openai',
    model: 'gpt-image-2',
    params: {},
    instructionKey: 'instruction',
    numImages: 1,
    encoding: { jpegQuality: 95, webpQuality: 95 },
    window,
    retry: { maxAttempts: 10, initialIntervalMs: 500, maximumIntervalMs: 5000 },
  };
}

/** The history length of every run (continue-as-new) of a workflow id. */
export async function historyLengths(client: Client, workflowId: string): Promise<number[]> {
  const lengths: number[] = [];
  for await (const wf of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) lengths.push(wf.historyLength);
  return lengths;
}

/**
 * One activity type's time in a workflow chain (every execution of the id): how many ran, their
 * summed and longest start-to-close seconds, and how many started before the chain's last
 * execution closed its dispatching (the results refreshes, against the final write).
 */
export async function activityTime(
  client: Client,
  workflowId: string,
  type: string,
): Promise<{ count: number; seconds: number; longest: number; completedAt: number[]; durations: number[] }> {
  let count = 0;
  let seconds = 0;
  let longest = 0;
  // Each execution's close (epoch ms) and seconds, in close order: for the gaps between refreshes.
  const closed: Array<{ at: number; took: number }> = [];
  for await (const wf of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    const history = await client.workflow.getHandle(workflowId, wf.runId).fetchHistory();
    const scheduled = new Map<string, boolean>();
    const started = new Map<string, number>();
    const ms = (t: unknown) => {
      const { seconds: s, nanos } = t as { seconds?: { toNumber(): number } | number | null; nanos?: number | null };
      return (typeof s === 'number' ? s : (s?.toNumber() ?? 0)) * 1000 + (nanos ?? 0) / 1e6;
    };
    for (const e of history.events ?? []) {
      const id = String(e.eventId);
      if (e.activityTaskScheduledEventAttributes?.activityType?.name === type) scheduled.set(id, true);
      const start = e.activityTaskStartedEventAttributes;
      if (start && scheduled.has(String(start.scheduledEventId))) started.set(String(start.scheduledEventId), ms(e.eventTime));
      const done = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes;
      const at = done ? started.get(String(done.scheduledEventId)) : undefined;
      if (done && at !== undefined) {
        const took = (ms(e.eventTime) - at) / 1000;
        count += 1;
        seconds += took;
        longest = Math.max(longest, took);
        closed.push({ at: ms(e.eventTime), took });
      }
    }
  }
  closed.sort((a, b) => a.at - b.at);
  return { count, seconds, longest, completedAt: closed.map((c) => c.at), durations: closed.map((c) => c.took) };
}

export function peakRssSampler(): { stop(): number } {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 200);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage().rss);
    },
  };
}

/**
 * Plans `inputPath` with the real planning activity (no server, no workers), as the planning
 * benches measure it: seconds taken and peak RSS growth (sampled every 20 ms, after a GC where
 * `--expose-gc` allows), and fails unless the plan holds `expectedRows` rows.
 */
export async function timePlanning(
  runId: string,
  inputPath: string,
  outputDir: string,
  expectedRows: number,
): Promise<{ planSeconds: number; peakRssGrowthMb: number }> {
  // Loaded here, not at the top: the server benches that import this file never plan in-process.
  const { createOrchestrationActivities } = await import('../activities/orchestration');
  global.gc?.();
  const rssBefore = process.memoryUsage().rss;
  let peak = rssBefore;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const input = {
    ...benchInput(runId, inputPath, outputDir, 16),
    model: 'bench',
    retry: { maxAttempts: 1, initialIntervalMs: 1000, maximumIntervalMs: 1000 },
  };
  const start = performance.now();
  let result;
  try {
    result = await createOrchestrationActivities().planRun(input);
  } finally {
    clearInterval(sampler);
  }
  const planSeconds = (performance.now() - start) / 1000;
  peak = Math.max(peak, process.memoryUsage().rss);
  if (result.totalRows !== expectedRows) throw new Error(`planned ${result.totalRows} rows, expected ${expectedRows}`);
  return { planSeconds, peakRssGrowthMb: (peak - rssBefore) / 2 ** 20 };
}

/** `n` distinct small PNGs (`side` pixels square, a pattern per index) for datasets with embedded images. */
export async function patternedPngs(n: number, side: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const raw = Buffer.alloc(side * side * 3);
    for (let j = 0; j < raw.length; j++) raw[j] = (i * 131 + j * 17 + ((j * j) % 251)) & 0xff;
    out.push(
      await sharp(raw, { raw: { width: side, height: side, channels: 3 } })
        .png()
        .toBuffer(),
    );
  }
  return out;
}

/** A `--name value` option of a bench command line, or `fallback`. */
export function flag(args: string[], name: string, fallback: string): string {
  const at = args.indexOf(name);
  return at >= 0 && args[at + 1] !== undefined ? args[at + 1]! : fallback;
}

/** The OpenAI stand-in in a process of its own (its CPU is not the bench process's). */
export async function startStandinProcess(): Promise<{ baseURL: string; stop(): void }> {
  const child = spawn(process.execPath, [join(__dirname, 'standinProcess.js'), '0'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const baseURL = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /ready (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`stand-in process exited (${code})`)));
  });
  return { baseURL, stop: () => child.kill('SIGTERM') };
}
