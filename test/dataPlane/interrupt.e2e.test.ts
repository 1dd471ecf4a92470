import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processAlive, readServerRecord, serverReachable, startDevServer } from '../../lib/devServer';
import { findTemporalCli } from '../../lib/temporalCli';
import { startOpenAIStandin, type OpenAIStandin } from '../../standins/openai';
import { assertBuilt, atelier, BIN, REPO, waitUntil } from '../helpers/cli';
import { tempDir, writePng, writeText } from '../helpers/fixtures';

// Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the CLI and, unless it
// runs in a group of its own, the embedded Temporal server. A server that dies at once cannot
// record the model calls still in flight, so the re-run waited out their heartbeat timeout (60 s by
// default) before it could call those rows again. The server must outlive the signal until the
// workers have drained, and the re-run must take about as long as the calls that remain.

const API_KEY = 'sk-test-interrupt-7f3e1a9c5b2d4068';
const LATENCY_MS = 1000;
const ROWS = 100;
const CONCURRENCY = 16;
let standin: OpenAIStandin;

beforeAll(async () => {
  assertBuilt();
  standin = await startOpenAIStandin({ latencyMs: LATENCY_MS });
});
afterAll(async () => standin?.close());

describe('Ctrl-C of `atelier edit` in a terminal (SIGINT to its process group)', () => {
  it('lets the rows in flight report before the embedded server stops; the re-run finishes the rest without waiting out heartbeats', async () => {
    const dir = tempDir('atelier-interrupt-');
    await writePng(join(dir, 'a.png'));
    writeText(join(dir, 'rows.csv'), ['input_images,instruction', ...Array.from({ length: ROWS }, (_, i) => `a.png,interrupt row ${i}`)].join('\n'));
    const env: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
    delete env.TEMPORAL_ADDRESS;
    const stateDir = join(dir, 'state');
    const args = ['edit', '--input', join(dir, 'rows.csv'), '--output-dir', join(dir, 'out'), '--backend', 'openai', '--model', 'gpt-image-2', '--state-dir', stateDir, '--concurrency', String(CONCURRENCY)];

    // The CLI leads a process group of its own, as a shell's foreground job does.
    const first = spawn(process.execPath, [BIN, ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    first.stdout.on('data', (d: Buffer) => (output += d.toString()));
    first.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const firstExit = new Promise<number | null>((resolve) => first.on('close', resolve));
    await waitUntil(() => standin.callsFor('interrupt row').length >= 40, 90_000, '40 calls');
    const server = readServerRecord(stateDir)!;
    process.kill(-first.pid!, 'SIGINT');
    expect(await firstExit, output).toBe(130);
    // The server was stopped by the command, after the drain, not killed by the signal.
    await waitUntil(() => !processAlive(server.pid), 15_000, 'the embedded server to stop');
    const callsBefore = standin.callsFor('interrupt row').length;
    expect(callsBefore).toBeLessThan(ROWS);

    const started = Date.now();
    const second = await atelier(args, env);
    const seconds = (Date.now() - started) / 1000;
    expect(second.code, second.stdout + second.stderr).toBe(0);
    const calls = standin.callsFor('interrupt row');
    // Every row paid exactly once: the rows in flight at the interrupt finished and were recorded.
    expect(new Set(calls.map((c) => c.prompt)).size).toBe(ROWS);
    expect(calls).toHaveLength(ROWS);
    // The remaining calls need ceil(remaining / concurrency) latencies; start-up and results on top.
    // Waiting out even one heartbeat timeout (60 s) would blow this bound.
    const remainingSeconds = Math.ceil((ROWS - callsBefore) / CONCURRENCY) * (LATENCY_MS / 1000);
    console.log(`re-run: ${ROWS - callsBefore} calls left (${remainingSeconds} s of calls at concurrency ${CONCURRENCY}), finished in ${seconds.toFixed(1)} s`);
    expect(seconds).toBeLessThan(remainingSeconds + 15);
    const rows = readFileSync(join(dir, 'out', 'results.csv'), 'utf8').trim().split('\n').slice(1);
    expect(rows).toHaveLength(ROWS);
    expect(rows.every((r) => r.includes(',ok,'))).toBe(true);
  });
});

describe('a released embedded server', () => {
  it('shuts down after its command has exited, and the next server on its state dir waits for it', async () => {
    const stateDir = join(tempDir('atelier-release-'), 'state');
    const first = await startDevServer({ temporalPath: findTemporalCli(), stateDir, headless: true });
    const firstPid = readServerRecord(stateDir)!.pid;
    await first.release();
    // Released, not waited for: it is still shutting down (about a second) when release returns.
    expect(processAlive(firstPid)).toBe(true);
    expect(readServerRecord(stateDir)).toBeUndefined();
    const second = await startDevServer({ temporalPath: findTemporalCli(), stateDir, headless: true });
    try {
      // One database, one server: the first was gone before the second started on it.
      expect(processAlive(firstPid)).toBe(false);
      expect(await serverReachable(second.address)).toBe(true);
    } finally {
      await second.stop();
    }
  });
});
