import { createHash } from 'node:crypto';
import { cpSync, readdirSync, readFileSync, rmSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier, REPO } from './helpers/cli';
import { tempDir } from './helpers/fixtures';

// A run folder written by an earlier release resumes on today's code. The fixture is the folder
// `atelier edit` of commit 92684ae (the last release before the run store) left after
// `--filter-rows 0:5` over the 6 rows of rows.csv: rows 0, 1, 2 and 4 ok, row 3 failed (its image
// is missing), row 5 never attempted. Its plan, ledger and results name absolute paths, so it is
// restored at the path it was written at (recorded: see test/fixtures/runs/README.md).

const RECORDED_AT = '/tmp/atelier-fixture-92684ae';
const FIXTURE = join(REPO, 'test', 'fixtures', 'runs', '92684ae');
const API_KEY = 'sk-test-oldrun-0c4b7d1e9f2a';
/** The inputs' modification time when the fixture was recorded: a local image stands for its bytes by size and mtime. */
const INPUTS_MTIME = new Date('2026-12-07T00:00:00Z');

let standin: OpenAIStandin;
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

beforeAll(async () => {
  assertBuilt();
  standin = await startOpenAIStandin();
});
afterAll(async () => {
  await standin?.close();
  rmSync(RECORDED_AT, { recursive: true, force: true });
});

describe('a run folder written by release 92684ae', () => {
  it('resumes on today’s code: finished rows are kept and not paid again, the rest are done', async () => {
    rmSync(RECORDED_AT, { recursive: true, force: true });
    cpSync(FIXTURE, RECORDED_AT, { recursive: true });
    // A checkout gives files the time of the checkout; the run recorded its inputs at INPUTS_MTIME.
    for (const image of ['a.png', 'b.png']) utimesSync(join(RECORDED_AT, image), INPUTS_MTIME, INPUTS_MTIME);
    const out = join(RECORDED_AT, 'out');
    const kept = Object.fromEntries(['000000.png', '000001.png', '000002.png', '000004.png'].map((f) => [f, sha(join(out, f))]));

    const run = await atelier(
      [
        'edit',
        '--input',
        join(RECORDED_AT, 'rows.csv'),
        '--output-dir',
        out,
        '--backend',
        'openai',
        '--model',
        'gpt-image-2',
        '--run-id',
        'oldrun-fixture',
        '--state-dir',
        tempDir('atelier-oldrun-state-'),
      ],
      { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL },
    );
    const said = `${run.stdout}\n${run.stderr}`;

    // Only row 5 is paid for: the four ok rows are done, row 3's image is still missing (no call).
    expect(
      standin.calls.map((c) => c.prompt),
      said,
    ).toEqual(['make it a sketch']);
    expect(said).toMatch(/ok: 5\s+failed: 1/);
    for (const [file, digest] of Object.entries(kept)) expect(sha(join(out, file)), file).toBe(digest);
    expect(
      readdirSync(out)
        .filter((f) => f.endsWith('.png'))
        .sort(),
    ).toEqual(['000000.png', '000001.png', '000002.png', '000004.png', '000005.png']);
    const rows = parse(readFileSync(join(out, 'results.csv')), { columns: true }) as Array<Record<string, string>>;
    expect(rows.map((r) => r.status)).toEqual(['ok', 'ok', 'ok', 'failed', 'ok', 'ok']);
    expect(rows[3]!.error).toMatch(/missing\.png/);
  }, 300_000);
});
