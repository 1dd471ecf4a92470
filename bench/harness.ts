// Shared set-up for the benchmarks: a project dev server (the pinned CLI, SQLite on disk, as
// `atelier edit` runs it), a dataset of N rows on one small image, and the project's real workers.
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
