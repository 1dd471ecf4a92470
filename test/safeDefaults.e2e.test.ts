import { spawn } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, serverReachable } from '../lib/temporal/devServer';
import { findTemporalCli } from '../lib/temporal/temporalCli';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier, BIN, CliProcess, REPO, waitUntil } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';

// Safe by default (issue 24), through real processes: `atelier server`, `atelier worker` and the
// CLI against the OpenAI stand-in. A run goes only where the user pointed it.

const API_KEY = 'sk-test-safe-3f1e9a7c5b2d';
let standin: OpenAIStandin;

beforeAll(async () => {
  assertBuilt();
  standin = await startOpenAIStandin();
});
afterAll(async () => standin?.close());

/** `atelier server` on a fresh state dir (a few UI ports tried: a free port can be taken meanwhile). */
async function startServer(stateDir: string): Promise<{ server: CliProcess; address: string; uiPort: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    let uiPort = await freePort();
    while (uiPort === port) uiPort = await freePort();
    const server = new CliProcess(['server', '--state-dir', stateDir, '--port', String(port), '--ui-port', String(uiPort)], {
      ...process.env,
    });
    try {
      await server.waitForOutput(/address: 127\.0\.0\.1:\d+/);
      return { server, address: `127.0.0.1:${port}`, uiPort };
    } catch (err) {
      await server.stop();
      if (attempt >= 3) throw err;
    }
  }
}

async function dataset(rows: number, tag: string): Promise<{ dir: string; csv: string; outputDir: string }> {
  const dir = tempDir('atelier-safe-data-');
  await writePng(join(dir, 'in.png'));
  const csv = join(dir, 'rows.csv');
  writeText(csv, ['image,instruction', ...Array.from({ length: rows }, (_, i) => `in.png,${tag}-${i} edit`)].join('\n'));
  return { dir, csv, outputDir: join(dir, 'out') };
}

/** The CLI's environment: no TEMPORAL_ADDRESS (the state dir's server is found), no provider settings. */
function cliEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY };
  delete env.TEMPORAL_ADDRESS;
  delete env.OPENAI_BASE_URL;
  return env;
}

describe('--base-url is part of what a run asks for', () => {
  it('a run pointed at an endpoint no worker serves is not served by another endpoint, and says so within seconds', async () => {
    const stateDir = tempDir('atelier-safe-state-');
    const { server, address } = await startServer(stateDir);
    // The only worker reaches the stand-in: it must not serve a run that asked for another endpoint.
    const worker = new CliProcess(['worker', '--concurrency', '4'], {
      ...process.env,
      TEMPORAL_ADDRESS: address,
      OPENAI_API_KEY: API_KEY,
      OPENAI_BASE_URL: standin.baseURL,
    });
    try {
      await worker.waitForOutput(/serving atelier-orchestrator/);
      // The worker's log: readable lines by default, not pino's JSON (`--log-format json` for that).
      await worker.waitForOutput(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}Worker state changed {2}.*state=RUNNING/m);
      expect(worker.output).not.toMatch(/^\{/m);
      const deadPort = await freePort();
      const deadUrl = `http://127.0.0.1:${deadPort}/v1`;
      const elsewhere = await dataset(3, 'safe-dead');
      const started = Date.now();
      const detached = await atelier(
        ['edit', '--input', elsewhere.csv, '--output-dir', elsewhere.outputDir, '--model', 'gpt-image-2', '--state-dir', stateDir].concat([
          '--base-url',
          deadUrl,
          '--detach',
        ]),
        cliEnv(),
      );
      expect(detached.code, detached.stderr).toBe(0);
      const tookMs = Date.now() - started;
      // Give the worker every chance to (wrongly) pick the rows up: none reaches the stand-in.
      await new Promise((resolve) => setTimeout(resolve, 4000));
      expect(standin.callsFor('safe-dead-')).toHaveLength(0);
      // Said at once, naming the endpoint and the worker command that would serve it.
      console.log(`edit --detach against an unserved endpoint: ${tookMs} ms`);
      expect(tookMs).toBeLessThan(60_000);
      expect(detached.stderr).toMatch(/no worker serves the activity queue api-openai@[0-9a-f]{12}/);
      expect(detached.stderr).toContain(`OPENAI_BASE_URL=${deadUrl}`);
      expect(detached.stderr).toMatch(/atelier worker/);

      // The same endpoint as the worker's: served, and a different run (the endpoint is in its id).
      const here = await dataset(2, 'safe-here');
      const served = await atelier(
        ['edit', '--input', here.csv, '--output-dir', here.outputDir, '--model', 'gpt-image-2', '--state-dir', stateDir].concat([
          '--base-url',
          standin.baseURL,
        ]),
        cliEnv(),
      );
      expect(served.code, served.stderr).toBe(0);
      expect(served.stdout).toMatch(/ok: 2/);
      expect(served.stderr).not.toMatch(/no worker serves/);
      expect(standin.callsFor('safe-here-')).toHaveLength(2);
    } finally {
      await worker.stop();
      await server.stop();
    }
  }, 240_000);
});

describe('a state dir uses only the server it started', () => {
  it('`atelier server --port P` refuses a port a stranger holds, naming it; a record pointing at a stranger is not adopted', async () => {
    const strangerDir = tempDir('atelier-safe-stranger-');
    const port = await freePort();
    const stranger = spawn(
      findTemporalCli(),
      ['server', 'start-dev', '--headless', '--ip', '127.0.0.1', '--port', String(port), '--db-filename', join(strangerDir, 'x.db')],
      { stdio: 'ignore' },
    );
    try {
      await waitUntil(() => serverReachable(`127.0.0.1:${port}`, 1000), 90_000, 'the stranger server');
      const stateDir = tempDir('atelier-safe-state-');
      const uiPort = await freePort();
      const started = Date.now();
      const refused = await atelier(['server', '--state-dir', stateDir, '--port', String(port), '--ui-port', String(uiPort)], cliEnv());
      expect(refused.code, refused.stderr).toBe(1);
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(refused.stderr).toContain(`port ${port} is in use by pid ${stranger.pid}`);
      expect(refused.stderr).toMatch(/temporal server start-dev/);
      expect(existsSync(join(stateDir, 'server.json'))).toBe(false);

      // A record naming the stranger (its port taken over after our server went, or written by hand):
      // neither an old record (pid only) nor one with a token is taken for this state dir's server.
      for (const record of [
        { pid: stranger.pid, address: `127.0.0.1:${port}`, owner: 'server' },
        { pid: stranger.pid, address: `127.0.0.1:${port}`, owner: 'server', token: '0123456789abcdef' },
      ]) {
        writeFileSync(join(stateDir, 'server.json'), JSON.stringify(record));
        // `list` finds no server of its own: it lists what the state dir records, not the stranger's runs.
        const listed = await atelier(['list', '--state-dir', stateDir], cliEnv());
        expect(listed.code, listed.stdout + listed.stderr).toBe(0);
        expect(listed.stdout).toMatch(/^no runs: no server is up for state dir /);
        const status = await atelier(['status', 'atelier-rows-000000000000', '--state-dir', stateDir], cliEnv());
        expect(status.code, status.stdout + status.stderr).toBe(1);
        expect(status.stderr).toMatch(/no run atelier-rows-000000000000 is running/);
      }
      // The stranger is untouched (not stopped as an orphan, retention unchanged by us).
      expect(stranger.exitCode).toBeNull();
    } finally {
      stranger.kill('SIGTERM');
    }
  }, 180_000);
});

describe('a server with no workers', () => {
  it('edit says which worker to start; Ctrl-C exits within 2 s; status answers from the ledger', async () => {
    const stateDir = tempDir('atelier-safe-state-');
    const { server } = await startServer(stateDir);
    try {
      const data = await dataset(2, 'safe-noworker');
      const edit = new CliProcess(
        ['edit', '--input', data.csv, '--output-dir', data.outputDir, '--model', 'gpt-image-2', '--state-dir', stateDir],
        cliEnv(),
      );
      await edit.waitForOutput(/no worker serves the workflow queue atelier-orchestrator/, 60_000);
      expect(edit.output).toMatch(/TEMPORAL_ADDRESS=127\.0\.0\.1:\d+ npx atelier worker/);
      expect(edit.output).toMatch(/no worker serves the activity queue api-openai/);
      const runId = /run (atelier-\S+)/.exec(edit.output)![1]!;
      // Let the progress display start querying (nobody answers), then interrupt.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      const interruptedAt = Date.now();
      const code = await edit.stop('SIGINT');
      const exitMs = Date.now() - interruptedAt;
      console.log(`Ctrl-C to exit with no worker: ${exitMs} ms`);
      expect(code).toBe(130);
      expect(exitMs).toBeLessThan(2000);

      const statusAt = Date.now();
      const status = await atelier(['status', runId, '--state-dir', stateDir], cliEnv());
      console.log(`status with no worker: ${Date.now() - statusAt} ms`);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toMatch(/no worker answered its progress query/);
      expect(status.stdout + status.stderr).not.toMatch(/DEADLINE_EXCEEDED/);
      // The server gone, the state dir still knows the run.
      await server.stop();
      const offline = await atelier(['status', runId, '--state-dir', stateDir], cliEnv());
      expect(offline.code, offline.stderr).toBe(0);
      expect(offline.stdout).toMatch(/counts from the ledger/);
    } finally {
      await server.stop();
    }
  }, 180_000);
});

describe('usage errors', () => {
  it('a missing --model says so in a couple of lines, not the whole help', async () => {
    const run = await atelier(['edit', '--input', 'x.csv', '--output-dir', 'out'], cliEnv());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/required option '--model <name>' not specified/);
    expect(run.stderr.trim().split('\n').length).toBeLessThanOrEqual(3);
  });
});

describe('trying without keys', () => {
  it('`atelier standin openai` prints the environment that an edit runs against', async () => {
    const standinProcess = new CliProcess(['standin', 'openai'], cliEnv());
    try {
      await standinProcess.waitForOutput(/export OPENAI_BASE_URL=http:\/\/127\.0\.0\.1:\d+\/v1/);
      const exported = Object.fromEntries(
        [...standinProcess.output.matchAll(/^export (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!] as const),
      );
      expect(Object.keys(exported).sort()).toEqual(['OPENAI_API_KEY', 'OPENAI_BASE_URL']);
      const data = await dataset(2, 'safe-standin');
      const env: NodeJS.ProcessEnv = { ...cliEnv(), ...exported };
      const run = await atelier(
        ['edit', '--input', data.csv, '--output-dir', data.outputDir, '--model', 'gpt-image-2', '--state-dir', join(data.dir, 'state')],
        env,
      );
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/ok: 2/);
    } finally {
      expect(await standinProcess.stop()).toBe(0);
    }
  }, 180_000);
});

describe('a re-run of a finished run', () => {
  it('does not print the whole run’s cost as if this command spent it', async () => {
    const data = await dataset(2, 'safe-rerun');
    const args = [
      'edit',
      '--input',
      data.csv,
      '--output-dir',
      data.outputDir,
      '--model',
      'gpt-image-2',
      '--state-dir',
      join(data.dir, 'state'),
    ];
    const env = { ...cliEnv(), OPENAI_BASE_URL: standin.baseURL };
    const first = await atelier(args, env);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).not.toMatch(/this command made/);
    const again = await atelier(args, env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/estimated cost: \$\d+\.\d{4} \(all 2 done rows; this command made 0 of them: \$0\.0000\)/);
    expect(standin.callsFor('safe-rerun-')).toHaveLength(2);
  }, 180_000);
});

describe('the UI after a run', () => {
  it('edit says its UI stops with it and how to see the run again; `atelier server` on the state dir serves the closed run', async () => {
    const data = await dataset(2, 'safe-uiafter');
    const stateDir = join(data.dir, 'state');
    const edit = await atelier(
      ['edit', '--input', data.csv, '--output-dir', data.outputDir, '--model', 'gpt-image-2', '--state-dir', stateDir],
      { ...cliEnv(), OPENAI_BASE_URL: standin.baseURL },
    );
    expect(edit.code, edit.stderr).toBe(0);
    const runId = /run (atelier-\S+)/.exec(edit.stderr)![1]!;
    expect(edit.stderr).toMatch(/Temporal UI: http:\/\/127\.0\.0\.1:\d+ \(while this command runs\)/);
    expect(edit.stderr).toContain('the Temporal UI above is served by the server this command started, and stops with it');
    expect(edit.stderr).toContain(`npx atelier server --state-dir ${stateDir}`);
    expect(edit.stderr).toContain(`npx atelier status ${runId} --state-dir ${stateDir}`);

    // What the note says works: the state dir's own server serves the closed run's page again,
    // its outcome (the counts) in the run's result.
    const { server, uiPort } = await startServer(stateDir);
    try {
      const api = `http://127.0.0.1:${uiPort}/api/v1/namespaces/default/workflows/${runId}`;
      // The UI's backend dials the server's port on its own schedule: asked until it answers.
      let described: { workflowExecutionInfo?: { status?: string } } = {};
      await waitUntil(
        async () => {
          described = (await (await fetch(api)).json()) as typeof described;
          return described.workflowExecutionInfo !== undefined;
        },
        60_000,
        'the UI serving the run',
      );
      expect(described.workflowExecutionInfo?.status).toBe('WORKFLOW_EXECUTION_STATUS_COMPLETED');
      const history = await (
        await fetch(`${api}/history?maximumPageSize=1&historyEventFilterType=HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT`)
      ).text();
      expect(history).toContain('workflowExecutionCompletedEventAttributes');
    } finally {
      await server.stop();
    }
  }, 180_000);
});

describe('nothing written where it was not asked for', () => {
  it('`atelier demo` from another folder works and writes nothing there nor into the checkout', async () => {
    const elsewhere = tempDir('atelier-safe-cwd-');
    const before = readdirSync(REPO).sort();
    const env = cliEnv();
    delete env.OPENAI_API_KEY;
    const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, 'demo'], { cwd: elsewhere, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/demo: outputs in \S+atelier-demo-/);
    expect(readdirSync(elsewhere)).toEqual([]);
    expect(readdirSync(REPO).sort()).toEqual(before);
  }, 180_000);
});
