import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevServer } from '../lib/temporal/devServer';
import { findTemporalCli } from '../lib/temporal/temporalCli';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { filesContaining } from './helpers/scan';

// These tests run the built CLI (`node bin/atelier.js`, as `npx atelier` does) as a separate
// process: embedded dev server, in-process workers, the real openai SDK against the stand-in.

const REPO = join(__dirname, '..');
const BIN = join(REPO, 'bin', 'atelier.js');
const API_KEY = 'sk-test-cli-5be2d8c0a1f94e77';

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

let standin: OpenAIStandin;

beforeAll(async () => {
  if (!existsSync(join(REPO, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does)');
  standin = await startOpenAIStandin();
});
afterAll(async () => standin?.close());

function cliEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
  delete env.TEMPORAL_ADDRESS;
  Object.assign(env, extra);
  for (const [k, v] of Object.entries(extra)) if (v === undefined) delete env[k];
  return env;
}

function atelier(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; whileRunning?: (child: ReturnType<typeof spawn>) => void } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO, env: options.env ?? cliEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    options.whileRunning?.(child);
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function makeDataset(rows: string[], images: string[] = ['a.png']): Promise<{ dir: string; csv: string }> {
  const dir = tempDir('atelier-cli-data-');
  for (const name of images) await writePng(join(dir, 'imgs', name));
  const csv = join(dir, 'edits.csv');
  writeText(csv, ['input_images,instruction', ...rows].join('\n'));
  return { dir, csv };
}

function results(outputDir: string): Record<string, string>[] {
  return parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
}

describe('atelier edit (CLI, end to end)', () => {
  it('runs a mixed dataset: exit 2, every row in results.csv, outputs on disk; a re-run calls only failed rows', async () => {
    const { dir, csv } = await makeDataset([
      'imgs/a.png,cli-ok-1 brighten',
      'imgs/a.png,cli-flaky-2 add snow',
      'imgs/a.png,cli-refused-3 refuse me',
      'imgs/nope.png,cli-missing-4 never sent',
    ]);
    standin.script('cli-flaky-2', [faults.serverError(), faults.rateLimited(1)]);
    standin.script('cli-refused-3', [faults.moderationBlocked()], { repeat: true });
    const outputDir = join(dir, 'out');
    const stateDir = join(dir, 'state');
    const args = [
      'edit',
      '--input',
      csv,
      '--output-dir',
      outputDir,
      '--backend',
      'openai',
      '--model',
      'gpt-image-2',
      '--state-dir',
      stateDir,
      '--retry-initial-ms',
      '100',
    ];

    const first = await atelier(args);
    expect(first.stderr).toMatch(/Temporal UI: http:\/\/127\.0\.0\.1:\d+/);
    expect(first.code).toBe(2);
    expect(first.stdout).toMatch(/rows: 4 {2}ok: 2 {2}failed: 2/);
    const rows = results(outputDir);
    expect(rows.map((r) => [r.instruction?.split(' ')[0], r.status, r.output_image])).toEqual([
      ['cli-ok-1', 'ok', '000000.png'],
      ['cli-flaky-2', 'ok', '000001.png'],
      ['cli-refused-3', 'failed', ''],
      ['cli-missing-4', 'failed', ''],
    ]);
    expect(existsSync(join(outputDir, '000000.png')) && existsSync(join(outputDir, '000001.png'))).toBe(true);
    expect(readdirSync(outputDir).filter((f) => f.endsWith('.png'))).toEqual(['000000.png', '000001.png']);
    expect(standin.callsFor('cli-flaky-2').map((c) => c.status)).toEqual([500, 429, 200]);
    expect(standin.callsFor('cli-refused-3')).toHaveLength(1);
    expect(standin.callsFor('cli-missing-4')).toHaveLength(0);

    const before = standin.calls.length;
    const second = await atelier(args);
    expect(second.code).toBe(2);
    const again = standin.calls.slice(before).map((c) => c.prompt.split(' ')[0]);
    expect(again).toEqual(['cli-refused-3']);
    expect(results(outputDir)).toEqual(rows);

    // The key lives in the worker's environment only: not in the server state, logs or outputs.
    expect(filesContaining(stateDir, 'cli-ok-1').length).toBeGreaterThan(0); // the scan can see history
    expect(filesContaining(stateDir, API_KEY)).toEqual([]);
    expect(filesContaining(outputDir, API_KEY)).toEqual([]);
  });

  it('exits 0 when every row is ok', async () => {
    const { dir, csv } = await makeDataset(['imgs/a.png,cli-allgood-1 x', 'imgs/a.png,cli-allgood-2 y']);
    const run = await atelier([
      'edit',
      '--input',
      csv,
      '--output-dir',
      join(dir, 'out'),
      '--model',
      'gpt-image-2',
      '--state-dir',
      join(dir, 'state'),
    ]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/estimated cost: \$0\.0695\n/); // 2 x (50*5 + 323*8 + 1056*30 + 24*10) / 1e6
    expect(results(join(dir, 'out')).map((r) => r.status)).toEqual(['ok', 'ok']);
  });

  it("--run-id with settings other than the run's is refused before anything is sent, naming each difference; the same settings resume", async () => {
    const { dir, csv } = await makeDataset(['imgs/a.png,cli-runid-0 x']);
    const state = join(dir, 'state');
    const out = join(dir, 'out');
    const edit = (extra: string[], stateDir = state) =>
      atelier(['edit', '--input', csv, '--state-dir', stateDir, '--run-id', 'cli-runid-x', ...extra]);
    const first = await edit(['--output-dir', out, '--model', 'gpt-image-2']);
    expect(first.code, first.stderr).toBe(0);
    const calls = standin.callsFor('cli-runid').length;
    expect(calls).toBe(1);

    // Recorded in this state dir's registry.
    const elsewhere = join(dir, 'elsewhere');
    const other = await edit(['--output-dir', elsewhere, '--model', 'gpt-image-2', '--quality', 'high']);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(
      `--run-id cli-runid-x names a run with other settings (recorded in ${join(state, 'runs', 'cli-runid-x.json')})`,
    );
    expect(other.stderr).toContain(`output dir: ${out} (the run) → ${elsewhere} (asked)`);
    expect(other.stderr).toContain('model parameters: (none) (the run) → {"quality":"high"} (asked)');
    expect(other.stdout).not.toMatch(/rows: /);
    expect(existsSync(elsewhere)).toBe(false);

    // Without that record: the run's workflow on the server says what the run is.
    rmSync(join(state, 'runs', 'cli-runid-x.json'));
    const otherModel = await edit(['--output-dir', out, '--model', 'gpt-image-2.6-flare']);
    expect(otherModel.code).toBe(1);
    expect(otherModel.stderr).toContain('(recorded in its workflow on the Temporal server)');
    expect(otherModel.stderr).toContain('model: gpt-image-2 (the run) → gpt-image-2.6-flare (asked)');

    // Another server altogether: the output dir's claim still names the run's model.
    const fresh = await edit(['--output-dir', out, '--model', 'gpt-image-2.6-flare'], join(dir, 'state-2'));
    expect(fresh.code).toBe(1);
    expect(fresh.stderr).toContain(`(recorded in ${out}/.atelier/run.json)`);
    expect(fresh.stderr).toContain('model: gpt-image-2 (the run) → gpt-image-2.6-flare (asked)');
    expect(standin.callsFor('cli-runid')).toHaveLength(calls);

    // The same settings: the run resumes, nothing is paid twice.
    const again = await edit(['--output-dir', out, '--model', 'gpt-image-2']);
    expect(again.code, again.stderr).toBe(0);
    expect(standin.callsFor('cli-runid')).toHaveLength(calls);
  });

  it('exits 1 with a message saying what to fix', async () => {
    const { dir, csv } = await makeDataset(['imgs/a.png,cli-usage x']);
    const state = join(dir, 'state');
    const noKey = await atelier(['edit', '--input', csv, '--output-dir', join(dir, 'o1'), '--model', 'm', '--state-dir', state], {
      env: cliEnv({ OPENAI_API_KEY: undefined }),
    });
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toMatch(/OPENAI_API_KEY is not set in the worker environment/);

    const missingInput = await atelier([
      'edit',
      '--input',
      join(dir, 'nope.csv'),
      '--output-dir',
      join(dir, 'o2'),
      '--model',
      'm',
      '--state-dir',
      state,
    ]);
    expect(missingInput.code).toBe(1);
    expect(missingInput.stderr).toMatch(/--input .*nope\.csv: no such file/);

    writeText(join(dir, 'bad.csv'), 'input_images,prompt\nimgs/a.png,cli-badcol\n');
    const badColumn = await atelier([
      'edit',
      '--input',
      join(dir, 'bad.csv'),
      '--output-dir',
      join(dir, 'o3'),
      '--model',
      'gpt-image-2',
      '--state-dir',
      state,
    ]);
    expect(badColumn.code).toBe(1);
    expect(badColumn.stderr).toMatch(/bad\.csv: no "instruction" column/);
    expect(standin.callsFor('cli-badcol')).toHaveLength(0);

    const noModel = await atelier(['edit', '--input', csv, '--output-dir', join(dir, 'o4')]);
    expect(noModel.code).toBe(1);
    expect(noModel.stderr).toMatch(/--model/);

    // An OpenAI-compatible server (a user's --base-url) that lists its own models.
    const server = await startOpenAIStandin({ compatible: { models: ['model-a', 'model-b'] } });
    try {
      const env = cliEnv({ OPENAI_BASE_URL: server.baseURL });
      // The same output dir with another model is another run: refused instead of mixing outputs.
      const okRun = await atelier(['edit', '--input', csv, '--output-dir', join(dir, 'o5'), '--model', 'model-a', '--state-dir', state], {
        env,
      });
      expect(okRun.code, okRun.stderr).toBe(0);
      // A model the server lists but the table cannot price: it runs, "price unknown" said once, and
      // the cost is unknown, not $0.
      expect(okRun.stderr.match(/price unknown/g)).toHaveLength(1);
      expect(okRun.stdout).toMatch(/estimated cost: unknown/);
      const otherModel = await atelier(
        ['edit', '--input', csv, '--output-dir', join(dir, 'o5'), '--model', 'model-b', '--state-dir', state],
        { env },
      );
      expect(otherModel.code).toBe(1);
      expect(otherModel.stderr).toMatch(/already holds run atelier-edits-[0-9a-f]+ .*--run-id/);
    } finally {
      await server.close();
    }
  });

  it('refuses a model the provider does not list before any edit call, with its words and a replacement', async () => {
    const { dir, csv } = await makeDataset(['imgs/a.png,cli-unlisted-1 x', 'imgs/a.png,cli-unlisted-2 y', 'imgs/a.png,cli-unlisted-3 z']);
    for (const [model, replacement] of [
      ['gpt-imag-2', 'gpt-image-2'],
      ['gpt-image-9', 'gpt-image-\\S+'],
    ] as const) {
      const out = join(dir, `out-${model}`);
      const run = await atelier(['edit', '--input', csv, '--output-dir', out, '--model', model, '--state-dir', join(dir, 'state')]);
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toMatch(
        new RegExp(
          `error: openai does not serve ${model} \\(OpenAI GET /v1/models does not list it; the API answers: "The model \`${model}\` does not exist or you do not have access to it\\."\\); use ${replacement} instead`,
        ),
      );
      expect(run.stdout).not.toMatch(/rows:/);
      expect(existsSync(join(out, 'results.csv'))).toBe(false);
    }
    // 0 edit calls.
    expect(standin.callsFor('cli-unlisted-')).toHaveLength(0);
  });

  it('refuses a retired model before any call, naming its replacement; a deprecated one past its shutdown counts as retired', async () => {
    const { dir, csv } = await makeDataset(['imgs/a.png,cli-retired x']);
    const retired = await atelier([
      'edit',
      '--input',
      csv,
      '--output-dir',
      join(dir, 'o1'),
      '--model',
      'gpt-image-1',
      '--state-dir',
      join(dir, 'state'),
    ]);
    expect(retired.code).toBe(1);
    expect(retired.stderr).toMatch(
      /error: gpt-image-1 was retired on 2026-10-23 and no longer answers; use gpt-image-2\.5-sunburst instead/,
    );
    const shutDown = await atelier(
      ['edit', '--input', csv, '--output-dir', join(dir, 'o2'), '--model', 'gpt-image-1.5', '--state-dir', join(dir, 'state')],
      {
        env: cliEnv({ ATELIER_NOW: '2026-12-01T08:00:00Z' }),
      },
    );
    expect(shutDown.code).toBe(1);
    expect(shutDown.stderr).toMatch(/gpt-image-1\.5 was retired on 2026-12-01 .*use gpt-image-2\.6-sunburst/);
    expect(standin.callsFor('cli-retired')).toHaveLength(0);
    // Refused before planning: no server was started, nothing was written.
    expect(existsSync(join(dir, 'o1')) || existsSync(join(dir, 'state'))).toBe(false);

    // --complexity: only models whose table takes it (gpt-image-2.6); refused before any call elsewhere.
    const complexity = await atelier([
      'edit',
      '--input',
      csv,
      '--output-dir',
      join(dir, 'o3'),
      '--model',
      'gpt-image-2',
      '--complexity',
      'low',
      '--state-dir',
      join(dir, 'state'),
    ]);
    expect(complexity.code).toBe(1);
    expect(complexity.stderr).toMatch(/error: gpt-image-2 does not take --complexity \(gpt-image-2\.6-flare, gpt-image-2\.6-sunburst do\)/);
    expect(standin.callsFor('cli-retired')).toHaveLength(0);
    expect(existsSync(join(dir, 'o3')) || existsSync(join(dir, 'state'))).toBe(false);

    // --dry-run (as `atelier estimate`): rows, calls and cost; nothing started, called or written.
    const dry = await atelier([
      'edit',
      '--dry-run',
      '--input',
      csv,
      '--output-dir',
      join(dir, 'o3'),
      '--model',
      'gpt-image-2',
      '--quality',
      'low',
      '--state-dir',
      join(dir, 'state'),
    ]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/rows: 1; to run: 1\nmodel calls: 1 {2}output images: 1 .*\nestimated cost: \$0\.0060 /);
    expect(standin.callsFor('cli-retired')).toHaveLength(0);
    expect(existsSync(join(dir, 'o3')) || existsSync(join(dir, 'state'))).toBe(false);
  });

  it('Ctrl-C stops waiting without cancelling; the same command resumes and finishes the run', async () => {
    const rows = Array.from({ length: 6 }, (_, i) => `imgs/a.png,cli-interrupt-${i} slow`);
    const { dir, csv } = await makeDataset(rows);
    const slow = await startOpenAIStandin({ latencyMs: 1500 });
    try {
      const env = cliEnv({ OPENAI_BASE_URL: slow.baseURL });
      const args = [
        'edit',
        '--input',
        csv,
        '--output-dir',
        join(dir, 'out'),
        '--model',
        'gpt-image-2',
        '--state-dir',
        join(dir, 'state'),
        '--window',
        '2',
      ];
      let signalled = false;
      const first = await atelier(args, {
        env,
        // Ctrl-C as soon as the first model call is in flight.
        whileRunning: (child) => {
          const timer = setInterval(() => {
            if (slow.calls.length > 0) {
              clearInterval(timer);
              signalled = true;
              child.kill('SIGINT');
            }
          }, 20);
          child.on('close', () => clearInterval(timer));
        },
      });
      expect(signalled).toBe(true);
      expect(first.code).toBe(130);
      expect(first.stderr).toMatch(/not cancelled.*same command again/);
      const callsAtInterrupt = slow.calls.length;
      expect(callsAtInterrupt).toBeLessThan(6);

      const second = await atelier(args, { env });
      expect(second.code).toBe(0);
      expect(results(join(dir, 'out')).map((r) => r.status)).toEqual(Array(6).fill('ok'));
      // Exactly-once in effect: at most the rows in flight at the interrupt are called twice.
      expect(slow.calls.length).toBeLessThanOrEqual(6 + 2);
    } finally {
      await slow.close();
    }
  });

  it('with TEMPORAL_ADDRESS, uses an external server served by `atelier worker`; keys stay in the worker', async () => {
    const { dir, csv } = await makeDataset(['imgs/a.png,cli-external-1 x', 'imgs/a.png,cli-external-2 y']);
    const server = await startDevServer({ temporalPath: findTemporalCli(), stateDir: join(dir, 'server'), headless: true });
    const workerEnv = cliEnv({ TEMPORAL_ADDRESS: server.address });
    const worker = spawn(process.execPath, [BIN, 'worker'], { cwd: REPO, env: workerEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let workerErr = '';
    worker.stderr.on('data', (d: Buffer) => (workerErr += d.toString()));
    const workerExit = new Promise<number | null>((resolve) => worker.on('close', resolve));
    try {
      // The client process has no provider key at all: only the worker does.
      const clientEnv = cliEnv({ TEMPORAL_ADDRESS: server.address, OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined });
      const run = await atelier(
        ['edit', '--input', csv, '--output-dir', join(dir, 'out'), '--model', 'gpt-image-2', '--state-dir', join(dir, 'client-state')],
        { env: clientEnv },
      );
      expect(run.stderr).toMatch(/rows are served by workers started with `npx atelier worker`/);
      expect(run.code, run.stderr).toBe(0);
      expect(results(join(dir, 'out')).map((r) => r.status)).toEqual(['ok', 'ok']);
      expect(standin.callsFor('cli-external-')).toHaveLength(2);
      expect(workerErr).toMatch(/serving atelier-orchestrator, api-openai/);
    } finally {
      worker.kill('SIGINT');
      const workerCode = await workerExit;
      expect(workerErr).not.toMatch(/error:/);
      expect(workerCode).toBe(0);
      await server.stop();
    }
  });
});
