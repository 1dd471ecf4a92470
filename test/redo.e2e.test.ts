import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLedgerEntry } from '../lib/run/ledger';
import { rowSeed } from '../lib/gpuContract';
import { writeReviewMark } from '../lib/run/review';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';

// `atelier retry --redo / --rejected`: done rows made again through the built CLI (embedded dev
// server, the openai SDK against the stand-in): the old output kept as history, the results
// showing the generation, a new seed where the backend takes one, and a retry that reports only
// its own rows and cost, or says that no row matched.

const API_KEY = 'sk-test-redo-0b6e2f8d4c1a9753';
let standin: OpenAIStandin;

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
  delete e.TEMPORAL_ADDRESS;
  return e;
}

async function runOf(prefix: string, extra: string[]): Promise<{ outputDir: string; stateDir: string; runId: string }> {
  const dir = tempDir(`atelier-redo-${prefix}-`);
  await writePng(join(dir, 'a.png'), '#ff0000', 32);
  writeText(join(dir, 'edits.csv'), ['input_images,instruction', ...[0, 1, 2].map((i) => `a.png,${prefix}-${i} edit it`)].join('\n'));
  const outputDir = join(dir, 'out');
  const stateDir = join(dir, 'state');
  const run = await atelier(
    ['edit', '--input', join(dir, 'edits.csv'), '--output-dir', outputDir, '--backend', 'openai', '--state-dir', stateDir, ...extra],
    env(),
  );
  expect(run.code, run.stderr).toBe(0);
  const runId = (JSON.parse(readFileSync(join(outputDir, '.atelier', 'run.json'), 'utf8')) as { runId: string }).runId;
  return { outputDir, stateDir, runId };
}

function jsonl(outputDir: string): Array<Record<string, unknown>> {
  return readFileSync(join(outputDir, 'results.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

beforeAll(async () => {
  assertBuilt();
  // A user's --base-url diffusion server (the seed test) on the same stand-in: it plays an
  // OpenAI-compatible server listing the two models these tests use.
  standin = await startOpenAIStandin({ compatible: { models: ['gpt-image-2', 'Qwen/Qwen-Image-Edit-2511'] } });
});
afterAll(async () => standin?.close());

describe('atelier retry --redo', () => {
  it('makes rejected rows again, keeps the old output as history, reports only this retry and its cost', async () => {
    const { outputDir, stateDir, runId } = await runOf('rej', ['--model', 'gpt-image-2']);
    const before = (await readLedgerEntry(outputDir, 1))!;
    const oldBytes = readFileSync(join(outputDir, '000001.png'));
    await writeReviewMark(outputDir, {
      index: 1,
      verdict: 'rejected',
      outputImages: before.outputImages!,
      entryFinishedAt: before.finishedAt,
      at: new Date().toISOString(),
    });

    const redo = await atelier(['retry', runId, '--rejected', '--state-dir', stateDir], env());
    expect(redo.code, redo.stderr).toBe(0);
    expect(redo.stdout).toMatch(/^1 done row\(s\) rejected in the viewer matched/m);
    expect(redo.stdout).toMatch(/retried 1 row\(s\): ok 1, failed 0/);
    const after = (await readLedgerEntry(outputDir, 1))!;
    // Only the redone row's cost, not the run's three rows.
    expect(redo.stdout).toContain(`this retry's estimated cost: $${after.costUsd!.toFixed(4)}`);
    expect(redo.stdout).toMatch(/the run now: rows: 3 {2}ok: 3 {2}failed: 0/);
    expect(standin.callsFor('rej-1 ')).toHaveLength(2);
    expect(standin.callsFor('rej-0 ')).toHaveLength(1);

    expect(after.status).toBe('ok');
    expect(after.history).toHaveLength(1);
    expect(after.history![0]).toMatchObject({
      generation: 1,
      originalImages: ['000001.png'],
      finishedAt: before.finishedAt,
      costUsd: before.costUsd,
      reason: 'rejected in the viewer',
    });
    expect(readFileSync(join(outputDir, after.history![0]!.outputImages[0]!)).equals(oldBytes)).toBe(true);
    const row1 = jsonl(outputDir)[1]!;
    expect(row1).toMatchObject({ status: 'ok', generation: 2, output_image: ['000001.png'] });
    expect(row1.history).toEqual([
      { generation: 1, output_image: after.history![0]!.outputImages, cost_usd: before.costUsd, reason: 'rejected in the viewer' },
    ]);

    // The rejection judged the old output: the new one is unmarked, so nothing matches any more.
    const again = await atelier(['retry', runId, '--rejected', '--state-dir', stateDir], env());
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/no done row\(s\) rejected in the viewer in run /);
  });

  it('a plain retry on done rows says no row matched and exits 1; --redo on rows out of range too', async () => {
    const { stateDir, runId } = await runOf('none', ['--model', 'gpt-image-2']);
    const plain = await atelier(['retry', runId, '--rows', '0,2', '--state-dir', stateDir], env());
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(
      /no failed row\(s\) at --rows 0,2 in run \S+: nothing to retry \(done rows are made again only with --redo\)/,
    );
    expect(plain.stdout).not.toMatch(/estimated cost/);
    const outOfRange = await atelier(['retry', runId, '--redo', '--rows', '5:9', '--state-dir', stateDir], env());
    expect(outOfRange.code).toBe(1);
    expect(outOfRange.stderr).toMatch(/no done row\(s\) at --rows 5:9/);
    const noRows = await atelier(['retry', runId, '--redo', '--state-dir', stateDir], env());
    expect(noRows.code).toBe(1);
    expect(noRows.stderr).toMatch(/--redo needs --rows 3,7, --rejected and\/or --score-below X/);
    expect(standin.callsFor('none-')).toHaveLength(3);
  });

  it('a seeded backend gets a new seed for the redone row', async () => {
    const { stateDir, runId } = await runOf('seed', [
      '--model',
      'Qwen/Qwen-Image-Edit-2511',
      '--base-url',
      standin.baseURL,
      '--seed',
      '42',
    ]);
    const redo = await atelier(['retry', runId, '--redo', '--rows', '0', '--state-dir', stateDir], env());
    expect(redo.code, redo.stderr).toBe(0);
    const seeds = standin.callsFor('seed-0 ').map((c) => c.fields.seed);
    expect(seeds).toHaveLength(2);
    expect(seeds[0]).toBe(String(rowSeed(42, 0, 0)));
    expect(seeds[1]).not.toBe(seeds[0]);
    // Rows not redone keep their seeds.
    expect(standin.callsFor('seed-1 ').map((c) => c.fields.seed)).toEqual([String(rowSeed(42, 1, 0))]);
  });
});
