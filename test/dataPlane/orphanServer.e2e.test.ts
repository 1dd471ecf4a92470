import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processAlive, readServerRecord } from '../../lib/temporal/devServer';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { assertBuilt, atelier, CliProcess, waitUntil } from '../helpers/cli';
import { tempDir, writePng, writeText } from '../helpers/fixtures';

// `kill -9` of `atelier edit` leaves its embedded dev server running with no workers. Re-running
// the same command, as the CLI advises, must recognise that orphan instead of waiting on it forever.

const API_KEY = 'sk-test-orphan-0b7d4c2e9f8a6153';
let standin: OpenAIStandin;

beforeAll(async () => {
  assertBuilt();
  standin = await startOpenAIStandin({ latencyMs: 1000 });
});
afterAll(async () => standin?.close());

describe('the embedded server of a killed edit', () => {
  it('is stopped and started afresh by the re-run, which finishes every row without paying any twice', async () => {
    const dir = tempDir('atelier-orphan-');
    await writePng(join(dir, 'a.png'));
    writeText(join(dir, 'rows.csv'), ['input_images,instruction', ...[0, 1, 2, 3, 4, 5].map((i) => `a.png,orphan row ${i}`)].join('\n'));
    const env: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
    delete env.TEMPORAL_ADDRESS;
    const stateDir = join(dir, 'state');
    const args = [
      'edit',
      '--input',
      join(dir, 'rows.csv'),
      '--output-dir',
      join(dir, 'out'),
      '--backend',
      'openai',
      '--model',
      'gpt-image-2',
      '--state-dir',
      stateDir,
      '--window',
      '1',
      '--concurrency',
      '1',
      '--heartbeat-timeout',
      '5',
    ];

    const first = new CliProcess(args, env);
    await waitUntil(() => standin.callsFor('orphan row').length >= 2, 60_000, 'two calls');
    first.child.kill('SIGKILL');
    await first.exited;
    const orphan = readServerRecord(stateDir)!;
    expect(orphan.owner).toBe('edit');
    expect(processAlive(orphan.pid)).toBe(true);

    const started = Date.now();
    const second = await atelier(args, env);
    expect(second.code, second.stdout + second.stderr).toBe(0);
    // Bounded: the server restart, plus the heartbeat timeout for the row in flight at the kill.
    expect(Date.now() - started).toBeLessThan(45_000);
    expect(second.stdout + second.stderr).toMatch(/stopping the embedded Temporal server an earlier command left running/);
    expect(processAlive(orphan.pid)).toBe(false);
    // The re-run's own server stopped with it.
    expect(existsSync(join(stateDir, 'server.json'))).toBe(false);
    const rows = readFileSync(join(dir, 'out', 'results.csv'), 'utf8')
      .trim()
      .split('\n')
      .slice(1);
    expect(rows).toHaveLength(6);
    expect(rows.every((r) => r.includes(',ok,'))).toBe(true);
    // Each row paid once, except at most the one in flight at the kill.
    const calls = standin.callsFor('orphan row');
    expect(calls.length).toBeGreaterThanOrEqual(6);
    expect(calls.length).toBeLessThanOrEqual(7);
  });

  it("runs a killed command's row again at once, not after the row's heartbeat timeout", async () => {
    // A row's call still in flight at the kill (the stand-in answers after 5 s) with a heartbeat
    // timeout of 2 minutes: the re-run finds the dead worker's started attempt and fails it, so the
    // row goes on within seconds. Before, the re-run waited out the 2 minutes (and as long for a
    // results refresh a kill caught in flight, whose heartbeat timeout is also 2 minutes).
    const slow = await startOpenAIStandin({ latencyMs: 5000 });
    try {
      const dir = tempDir('atelier-orphan-');
      await writePng(join(dir, 'a.png'));
      writeText(join(dir, 'rows.csv'), ['input_images,instruction', 'a.png,in-flight row 0', 'a.png,in-flight row 1'].join('\n'));
      const env: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: slow.baseURL };
      delete env.TEMPORAL_ADDRESS;
      const args = [
        'edit',
        '--input',
        join(dir, 'rows.csv'),
        '--output-dir',
        join(dir, 'out'),
        '--backend',
        'openai',
        '--model',
        'gpt-image-2',
        '--state-dir',
        join(dir, 'state'),
        '--window',
        '1',
        '--concurrency',
        '1',
        '--heartbeat-timeout',
        '120',
      ];
      const first = new CliProcess(args, env);
      await waitUntil(() => slow.callsFor('in-flight row').length >= 1, 60_000, 'the first call');
      first.child.kill('SIGKILL');
      await first.exited;

      const started = Date.now();
      const second = await atelier(args, env);
      expect(second.code, second.stdout + second.stderr).toBe(0);
      expect(second.stdout + second.stderr).toMatch(
        /ended 1 task\(s\) a stopped worker left started, so their retries need not wait for a heartbeat timeout: editRow/,
      );
      // Two rows of 5 s each, the server's restart and the row's retry back-off: well under the 120 s.
      expect(Date.now() - started).toBeLessThan(60_000);
      const rows = readFileSync(join(dir, 'out', 'results.csv'), 'utf8')
        .trim()
        .split('\n')
        .slice(1);
      expect(rows).toHaveLength(2);
      expect(rows.every((r) => r.includes(',ok,'))).toBe(true);
      // The row in flight at the kill was paid once more (its answer died with the worker); no other.
      expect(slow.callsFor('in-flight row')).toHaveLength(3);
    } finally {
      await slow.close();
    }
  });

  it('stops with the command on a second Ctrl-C, leaving no server behind', async () => {
    const dir = tempDir('atelier-orphan-');
    await writePng(join(dir, 'a.png'));
    writeText(join(dir, 'rows.csv'), ['input_images,instruction', 'a.png,orphan-ctrlc row 0', 'a.png,orphan-ctrlc row 1'].join('\n'));
    const env: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
    delete env.TEMPORAL_ADDRESS;
    const stateDir = join(dir, 'state');
    const run = new CliProcess(
      [
        'edit',
        '--input',
        join(dir, 'rows.csv'),
        '--output-dir',
        join(dir, 'out'),
        '--backend',
        'openai',
        '--model',
        'gpt-image-2',
        '--state-dir',
        stateDir,
      ],
      env,
    );
    await waitUntil(() => standin.callsFor('orphan-ctrlc').length >= 1, 60_000, 'a call');
    const server = readServerRecord(stateDir)!;
    run.child.kill('SIGINT');
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(130);
    await waitUntil(() => !processAlive(server.pid), 15_000, 'the embedded server to stop');
  });
});
