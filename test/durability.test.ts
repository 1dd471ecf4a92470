import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../lib/temporal/devServer';
import { findTemporalCli } from '../lib/temporal/temporalCli';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier, CliProcess, waitUntil } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';

// Exactly-once in effect, through real processes: `atelier server`, `atelier worker` and the CLI,
// against the stand-in provider with some latency so that rows are in flight when things break.

const API_KEY = 'sk-test-durability-0a9b8c7d6e5f';
let standin: OpenAIStandin;

beforeAll(async () => {
  assertBuilt();
  standin = await startOpenAIStandin({ latencyMs: 60 });
});
afterAll(async () => standin?.close());

interface Cluster {
  stateDir: string;
  port: number;
  address: string;
  env: NodeJS.ProcessEnv;
  server: CliProcess;
}

async function startServer(stateDir: string, port: number): Promise<CliProcess> {
  // A free port can be taken again between asking and binding: try a few UI ports.
  for (let attempt = 1; ; attempt++) {
    let uiPort = await freePort();
    while (uiPort === port) uiPort = await freePort();
    const server = new CliProcess(['server', '--state-dir', stateDir, '--port', String(port), '--ui-port', String(uiPort)], {
      ...process.env,
    });
    try {
      await server.waitForOutput(/address: 127\.0\.0\.1:\d+/);
      return server;
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
}

async function startCluster(): Promise<Cluster> {
  const stateDir = tempDir('atelier-dur-state-');
  const port = await freePort();
  const server = await startServer(stateDir, port);
  const address = `127.0.0.1:${port}`;
  const env: NodeJS.ProcessEnv = { ...process.env, TEMPORAL_ADDRESS: address, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
  return { stateDir, port, address, env, server };
}

async function startWorker(cluster: Cluster): Promise<CliProcess> {
  const worker = new CliProcess(['worker', '--concurrency', '8'], cluster.env);
  await worker.waitForOutput(/serving atelier-orchestrator/);
  return worker;
}

async function dataset(rows: number, tag: string): Promise<{ dir: string; csv: string; outputDir: string }> {
  const dir = tempDir('atelier-dur-data-');
  await writePng(join(dir, 'in.png'));
  const csv = join(dir, 'rows.csv');
  writeText(csv, ['image,instruction', ...Array.from({ length: rows }, (_, i) => `in.png,${tag}-${i} edit`)].join('\n'));
  return { dir, csv, outputDir: join(dir, 'out') };
}

function ledgerCount(outputDir: string): number {
  const dir = join(outputDir, '.atelier', 'ledger');
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')).length : 0;
}

function checkResults(outputDir: string, rows: number, tag: string): void {
  const results = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
  expect(results).toHaveLength(rows);
  const notOk = results.filter((r) => r.status !== 'ok').map((r) => `${r.instruction}: ${r.status} ${r.error}`);
  expect(notOk, notOk.slice(0, 5).join('\n')).toEqual([]);
  expect(new Set(results.map((r) => r.instruction)).size).toBe(rows);
  expect(new Set(results.map((r) => r.output_image)).size).toBe(rows);
  const pngs = readdirSync(outputDir).filter((f) => f.endsWith('.png'));
  expect(pngs).toHaveLength(rows);
  // Every row's prompt reached the provider at least once.
  const prompts = new Set(standin.callsFor(`${tag}-`).map((c) => c.prompt));
  expect(prompts.size).toBe(rows);
}

function editArgs(csv: string, outputDir: string, cluster: Cluster, extra: string[] = []): string[] {
  return [
    'edit',
    '--input',
    csv,
    '--output-dir',
    outputDir,
    '--model',
    'gpt-image-2',
    '--state-dir',
    cluster.stateDir,
    '--window',
    '16',
    '--heartbeat-timeout',
    '3',
    '--retry-initial-ms',
    '200',
    ...extra,
  ];
}

describe('exactly-once in effect', () => {
  it('SIGKILL of every worker at half of a 300-row run: new workers finish it, each row once', async () => {
    const cluster = await startCluster();
    const worker = await startWorker(cluster);
    const { csv, outputDir } = await dataset(300, 'kill');
    try {
      const started = await atelier(editArgs(csv, outputDir, cluster, ['--detach']), cluster.env);
      expect(started.code, started.stderr).toBe(0);
      const runId = started.stdout.trim().split('\n').pop()!;
      expect(runId).toMatch(/^atelier-rows-[0-9a-f]{12}$/);

      await waitUntil(() => standin.callsFor('kill-').length >= 150, 120_000, '150 calls');
      worker.child.kill('SIGKILL');
      await worker.exited;
      const callsAtKill = standin.callsFor('kill-').length;
      const inFlightAtKill = callsAtKill - ledgerCount(outputDir);

      const replacement = await startWorker(cluster);
      try {
        const watched = await atelier(['watch', runId, '--state-dir', cluster.stateDir], cluster.env);
        expect(watched.code, watched.stderr).toBe(0);
        expect(watched.stdout).toMatch(/rows: 300 {2}ok: 300 {2}failed: 0/);
        checkResults(outputDir, 300, 'kill');
        expect(standin.callsFor('kill-').length).toBeLessThanOrEqual(300 + inFlightAtKill);

        // Re-running the finished run makes no provider call.
        const before = standin.calls.length;
        const again = await atelier(editArgs(csv, outputDir, cluster), cluster.env);
        expect(again.code, again.stderr).toBe(0);
        expect(standin.calls.length).toBe(before);
      } finally {
        await replacement.stop();
      }
    } finally {
      await cluster.server.stop();
    }
  });

  it('a Temporal server restart mid-run on the same state dir: the run completes, each row once', async () => {
    const cluster = await startCluster();
    const worker = await startWorker(cluster);
    const { csv, outputDir } = await dataset(300, 'restart');
    try {
      const started = await atelier(editArgs(csv, outputDir, cluster, ['--detach']), cluster.env);
      expect(started.code, started.stderr).toBe(0);
      const runId = started.stdout.trim().split('\n').pop()!;
      await waitUntil(() => standin.callsFor('restart-').length >= 150, 120_000, '150 calls');
      expect(await cluster.server.stop()).toBe(0);
      const callsAtStop = standin.callsFor('restart-').length;
      const inFlightAtStop = callsAtStop - ledgerCount(outputDir);
      await sleep(2000);
      cluster.server = await startServer(cluster.stateDir, cluster.port);

      const watched = await atelier(['watch', runId, '--state-dir', cluster.stateDir], cluster.env);
      expect(watched.code, `${watched.stderr}\nworker:\n${worker.output.slice(-3000)}`).toBe(0);
      checkResults(outputDir, 300, 'restart');
      expect(standin.callsFor('restart-').length).toBeLessThanOrEqual(300 + inFlightAtStop);
      // The worker rode out the restart.
      expect(worker.child.exitCode).toBeNull();
    } finally {
      await worker.stop();
      await cluster.server.stop();
    }
  });

  it('submitting the same run twice at once gives one execution', async () => {
    const cluster = await startCluster();
    const { csv, outputDir } = await dataset(3, 'twice');
    try {
      // No worker yet: the run stays open while both submits race.
      const [a, b] = await Promise.all([
        atelier(editArgs(csv, outputDir, cluster, ['--detach']), cluster.env),
        atelier(editArgs(csv, outputDir, cluster, ['--detach']), cluster.env),
      ]);
      expect([a.code, b.code]).toEqual([0, 0]);
      const runId = a.stdout.trim().split('\n').pop()!;
      expect(b.stdout.trim().split('\n').pop()).toBe(runId);
      const connection = await Connection.connect({ address: cluster.address });
      try {
        const client = new Client({ connection });
        const executions = [];
        for await (const wf of client.workflow.list({ query: `WorkflowId = '${runId}'` })) executions.push(wf);
        expect(executions).toHaveLength(1);
      } finally {
        await connection.close();
      }
      const worker = await startWorker(cluster);
      try {
        const watched = await atelier(['watch', runId, '--state-dir', cluster.stateDir], cluster.env);
        expect(watched.code).toBe(0);
      } finally {
        await worker.stop();
      }
    } finally {
      await cluster.server.stop();
    }
  });
});

describe('run management', () => {
  let cluster: Cluster;
  let worker: CliProcess;
  beforeAll(async () => {
    cluster = await startCluster();
    worker = await startWorker(cluster);
  });
  afterAll(async () => {
    await worker?.stop();
    await cluster?.server.stop();
  });

  it("the README's `temporal workflow start` example runs a dataset with `atelier worker`", async () => {
    const { csv, outputDir } = await dataset(4, 'bycli');
    const input = {
      runId: 'by-hand-1',
      inputPath: csv,
      outputDir,
      backend: 'openai',
      model: 'gpt-image-2',
    };
    execFileSync(findTemporalCli(), [
      'workflow',
      'start',
      '--address',
      cluster.address,
      '--type',
      'datasetWorkflow',
      '--task-queue',
      'atelier-orchestrator',
      '--workflow-id',
      'by-hand-1',
      '--input',
      JSON.stringify(input),
    ]);
    const watched = await atelier(['watch', 'by-hand-1', '--state-dir', cluster.stateDir], cluster.env);
    expect(watched.code, watched.stderr).toBe(0);
    checkResults(outputDir, 4, 'bycli');
  });

  it('pause stops dispatching, status reports it, resume finishes; retry runs failed rows of open and closed runs', async () => {
    const { csv, outputDir } = await dataset(40, 'mgmt');
    // Row 5 is refused once, then accepted; rows 7 fails on every attempt of its first run.
    standin.script('mgmt-5 ', [
      {
        status: 400,
        body: {
          error: {
            message: 'Your request was rejected by the safety system.',
            type: 'image_generation_user_error',
            code: 'moderation_blocked',
            param: null,
          },
        },
      },
    ]);
    standin.script('mgmt-7 ', [
      { status: 400, body: { error: { message: 'bad thing', type: 'invalid_request_error', code: null, param: null } } },
    ]);
    const started = await atelier(editArgs(csv, outputDir, cluster, ['--detach', '--window', '2']), cluster.env);
    const runId = started.stdout.trim().split('\n').pop()!;
    const paused = await atelier(['pause', runId, '--state-dir', cluster.stateDir], cluster.env);
    expect(paused.code, paused.stderr).toBe(0);
    await sleep(1500);
    const callsWhilePaused = standin.callsFor('mgmt-').length;
    await sleep(1500);
    expect(standin.callsFor('mgmt-').length).toBe(callsWhilePaused);
    const status = await atelier(['status', runId, '--state-dir', cluster.stateDir], cluster.env);
    expect(status.stdout).toMatch(/state: paused \(paused with `atelier pause`/);
    expect(status.stdout).toMatch(/rows: 40 {2}ok: \d+ {2}failed: \d+ {2}in flight: \d+ {2}pending: \d+/);
    // No rate or ETA while paused (they would describe a run that is not moving).
    expect(status.stdout).toMatch(/rate: paused {2}eta: none while paused/);

    const list = await atelier(['list', '--state-dir', cluster.stateDir], cluster.env);
    expect(list.stdout).toMatch(new RegExp(`${runId} {2}RUNNING`));

    expect((await atelier(['resume', runId, '--state-dir', cluster.stateDir], cluster.env)).code).toBe(0);
    const first = await atelier(['watch', runId, '--state-dir', cluster.stateDir], cluster.env);
    expect(first.code).toBe(2);
    expect(first.stdout).toMatch(/rows: 40 {2}ok: 38 {2}failed: 2/);
    const closedStatus = await atelier(['status', runId, '--state-dir', cluster.stateDir], cluster.env);
    expect(closedStatus.stdout).toMatch(/failed Blocked: 1/);
    expect(closedStatus.stdout).toMatch(/failed InvalidRequest: 1/);

    // A closed run: a new execution runs only the selected failed rows (here: Blocked ones).
    const calls5 = standin.callsFor('mgmt-5 ').length;
    const calls7 = standin.callsFor('mgmt-7 ').length;
    const retried = await atelier(['retry', runId, '--error-type', 'blocked', '--state-dir', cluster.stateDir], cluster.env);
    expect(retried.code, retried.stderr).toBe(0); // its own row (5) succeeded; row 7, not asked for, stays failed
    expect(retried.stdout).toMatch(/rows: 40 {2}ok: 39 {2}failed: 1/);
    expect(standin.callsFor('mgmt-5 ')).toHaveLength(calls5 + 1);
    expect(standin.callsFor('mgmt-7 ')).toHaveLength(calls7);

    const bad = await atelier(['retry', runId, '--error-type', 'nonsense', '--state-dir', cluster.stateDir], cluster.env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/unknown class "nonsense"/);
    const none = await atelier(['retry', runId, '--state-dir', cluster.stateDir], cluster.env);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/--failed, --rows/);
  });

  it('retry on an open run goes through the update and runs the rows in the same execution', async () => {
    const { csv, outputDir } = await dataset(6, 'openretry');
    standin.script('openretry-1 ', [
      { status: 400, body: { error: { message: 'nope', type: 'invalid_request_error', code: null, param: null } } },
    ]);
    // Row 3 waits out a 429 (Retry-After 4 s), which keeps the run open while we retry row 1.
    standin.script('openretry-3 ', [faults.rateLimited(4)]);
    const started = await atelier(editArgs(csv, outputDir, cluster, ['--detach', '--window', '1']), cluster.env);
    const runId = started.stdout.trim().split('\n').pop()!;
    await waitUntil(
      () => standin.callsFor('openretry-1 ').length === 1 && standin.callsFor('openretry-3 ').length === 1,
      60_000,
      'row 3 started',
    );
    // Row 1 has failed by now and the run is still going: queue it again.
    await waitUntil(() => ledgerCount(outputDir) >= 2, 30_000, 'row 1 recorded');
    const retried = await atelier(['retry', runId, '--failed', '--state-dir', cluster.stateDir], cluster.env);
    expect(retried.stdout).toMatch(/1 row\(s\) queued to run again/);
    const watched = await atelier(['watch', runId, '--state-dir', cluster.stateDir], cluster.env);
    expect(watched.code, watched.stdout + watched.stderr).toBe(0);
    expect(standin.callsFor('openretry-1 ')).toHaveLength(2);
  });

  it('cancel stops the run and its rows', async () => {
    const { csv, outputDir } = await dataset(30, 'cancel');
    const started = await atelier(editArgs(csv, outputDir, cluster, ['--detach', '--window', '2']), cluster.env);
    const runId = started.stdout.trim().split('\n').pop()!;
    await waitUntil(() => standin.callsFor('cancel-').length >= 2, 30_000, 'rows started');
    const cancelled = await atelier(['cancel', runId, '--state-dir', cluster.stateDir], cluster.env);
    expect(cancelled.code, cancelled.stderr).toBe(0);
    await sleep(2000);
    const after = standin.callsFor('cancel-').length;
    await sleep(1500);
    expect(standin.callsFor('cancel-').length).toBe(after);
    expect(after).toBeLessThan(30);
    const status = await atelier(['status', runId, '--state-dir', cluster.stateDir], cluster.env);
    expect(status.stdout).toMatch(/not running/);
  });
});
