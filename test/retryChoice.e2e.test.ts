import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLedgerEntry } from '../lib/run/ledger';
import { writeJudgeRecord } from '../lib/run/judgeScores';
import { writeReviewMark } from '../lib/run/review';
import type { ReviewVerdict } from '../lib/run/review';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';

// Human review vs the judge (issue 24), through the built CLI: `--rejected --score-below` pick
// either kind of row; a row a person accepted is not redone for a low score unless asked, and the
// retry says so; a retry whose own rows all succeeded exits 0 even if the run has other failures.

const API_KEY = 'sk-test-retry-choice-6c2d9e1f0a3b';
let standin: OpenAIStandin;

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
  delete e.TEMPORAL_ADDRESS;
  return e;
}

beforeAll(async () => {
  assertBuilt();
  standin = await startOpenAIStandin();
});
afterAll(async () => standin?.close());

async function mark(outputDir: string, index: number, score: number | undefined, verdict?: ReviewVerdict): Promise<void> {
  const entry = (await readLedgerEntry(outputDir, index))!;
  const at = new Date().toISOString();
  if (verdict)
    await writeReviewMark(outputDir, { index, verdict, outputImages: entry.outputImages!, entryFinishedAt: entry.finishedAt, at });
  if (score !== undefined)
    await writeJudgeRecord(outputDir, {
      index,
      model: 'judge-model',
      entryFinishedAt: entry.finishedAt,
      scores: { instructionFollowing: score, preservation: score, quality: score, overall: score },
      reason: 'test',
      at,
    });
}

describe('atelier retry: review and judge together', () => {
  it('--rejected --score-below is either; accepted rows are kept and reported; exit 0 when its own rows succeed', async () => {
    const dir = tempDir('atelier-retry-choice-');
    await writePng(join(dir, 'a.png'), '#00ff00', 32);
    writeText(join(dir, 'edits.csv'), ['input_images,instruction', ...[0, 1, 2, 3, 4].map((i) => `a.png,choice-${i} edit it`)].join('\n'));
    standin.script('choice-4 ', [faults.moderationBlocked()], { repeat: true });
    const outputDir = join(dir, 'out');
    const stateDir = join(dir, 'state');
    const run = await atelier(
      ['edit', '--input', join(dir, 'edits.csv'), '--output-dir', outputDir, '--model', 'gpt-image-2', '--state-dir', stateDir],
      env(),
    );
    expect(run.code, run.stderr).toBe(2); // row 4 refused
    const runId = (JSON.parse(readFileSync(join(outputDir, '.atelier', 'run.json'), 'utf8')) as { runId: string }).runId;

    await mark(outputDir, 0, 9, 'rejected'); // rejected, scored well: redone (rejected)
    await mark(outputDir, 1, 3, 'accepted'); // scored low, accepted by a person: kept
    await mark(outputDir, 2, 2); // scored low: redone
    await mark(outputDir, 3, 8); // fine: kept

    const redo = await atelier(['retry', runId, '--rejected', '--score-below', '5', '--state-dir', stateDir], env());
    expect(redo.stdout).toMatch(/^2 done row\(s\) rejected in the viewer or scored below 5 matched/m);
    expect(redo.stderr).toMatch(/1 row\(s\) scored below 5 were accepted in the viewer and are kept \(positions 1;/);
    expect(redo.stdout).toMatch(/retried 2 row\(s\): ok 2, failed 0/);
    // Row 4 still failed in the run, but not among this retry's rows.
    expect(redo.stdout).toMatch(/the run now: rows: 5 {2}ok: 4 {2}failed: 1/);
    expect(redo.code, redo.stderr).toBe(0);
    expect(standin.callsFor('choice-0 ')).toHaveLength(2);
    expect(standin.callsFor('choice-1 ')).toHaveLength(1);
    expect(standin.callsFor('choice-2 ')).toHaveLength(2);
    expect(standin.callsFor('choice-3 ')).toHaveLength(1);

    // Asked for, the accepted row is redone too.
    const withAccepted = await atelier(['retry', runId, '--score-below', '5', '--include-accepted', '--state-dir', stateDir], env());
    expect(withAccepted.stdout).toMatch(/^1 done row\(s\) scored below 5 matched/m);
    expect(withAccepted.code, withAccepted.stderr).toBe(0);
    expect(standin.callsFor('choice-1 ')).toHaveLength(2);
  }, 300_000);
});
