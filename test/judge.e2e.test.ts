import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parquetReadObjects } from 'hyparquet';
import { readJudgeRecord } from '../lib/run/judgeScores';
import { startViewer, type RowSummary } from '../web/server';
import { JUDGE_ANSWERS, startJudgeStandin } from '../standins/judge';
import type { ChatStandin } from '../activities/providers/openrouter/standin';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';

// `atelier judge` through the built CLI (embedded dev server, in-process workers): the judge
// workflow on its own queue calls the stand-in judge (chat completions with image_url parts)
// through the real openai SDK; scores land in the run's folder, the results tables, and drive
// `retry --redo --score-below`.

const EDIT_KEY = 'sk-test-judge-edit-6a0c1e9f3b7d2485';
const JUDGE_KEY = 'sk-test-judge-own-9d4b7f1a2c6e8035';
let images: OpenAIStandin;
let judge: ChatStandin;
let dir: string;
let outputDir: string;
let stateDir: string;

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = {
    ...process.env,
    OPENAI_API_KEY: EDIT_KEY,
    OPENAI_BASE_URL: images.baseURL,
    ATELIER_JUDGE_API_KEY: JUDGE_KEY,
    ATELIER_JUDGE_BASE_URL: judge.baseURL,
  };
  delete e.TEMPORAL_ADDRESS;
  return e;
}

function jsonl(): Array<Record<string, unknown>> {
  return readFileSync(join(outputDir, 'results.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

beforeAll(async () => {
  assertBuilt();
  images = await startOpenAIStandin();
  judge = await startJudgeStandin();
  dir = tempDir('atelier-judge-');
  await writePng(join(dir, 'a.png'), '#00ff00', 40);
  writeText(
    join(dir, 'edits.csv'),
    [
      'input_images,instruction',
      'a.png,jrow-0 make it red',
      'a.png,jrow-1 judge-low make it blue',
      'a.png,jrow-2 refused',
      'a.png,jrow-3 judge-garbage make it pink',
    ].join('\n'),
  );
  images.script('jrow-2 ', [faults.moderationBlocked()], { repeat: true });
  outputDir = join(dir, 'out');
  stateDir = join(dir, 'state');
  const run = await atelier(
    [
      'edit',
      '--input',
      join(dir, 'edits.csv'),
      '--output-dir',
      outputDir,
      '--backend',
      'openai',
      '--model',
      'gpt-image-2',
      '--state-dir',
      stateDir,
    ],
    env(),
  );
  expect(run.code, run.stderr).toBe(2);
});
afterAll(async () => {
  await images?.close();
  await judge?.close();
});

describe('atelier judge', () => {
  it('scores every done row with the judge model, VIEScore-style, into the run and its results', async () => {
    const run = await atelier(
      ['judge', outputDir, '--model', 'gpt-4.1-mini', '--rpm', '600', '--max-retries', '1', '--state-dir', stateDir],
      env(),
    );
    // Row 3's judge never answers with JSON: that row fails, the others are scored.
    expect(run.code, run.stderr).toBe(2);
    expect(run.stdout).toMatch(/judged with gpt-4\.1-mini: scored 2, already scored 0, failed 1/);
    expect(run.stdout).toMatch(/row 3: Retryable: the judge did not answer with a JSON object/);
    // Each call: the judge's own key, the source image and the edited one as image_url parts (JPEG data URLs).
    const calls = judge.calls.filter((c) => c.prompt.includes('jrow-0'));
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({
      model: 'gpt-4.1-mini',
      imageCount: 2,
      imageTypes: ['image/jpeg', 'image/jpeg'],
      authorization: `Bearer ${JUDGE_KEY}`,
    });
    expect(calls[0]!.imageSizes).toEqual([
      { width: 40, height: 40 },
      { width: 40, height: 40 },
    ]);
    expect(calls[0]!.system).toMatch(/instruction_following.*preservation.*quality/s);
    expect(judge.calls.every((c) => c.authorization === `Bearer ${JUDGE_KEY}`)).toBe(true);
    expect(judge.calls.filter((c) => c.prompt.includes('jrow-3'))).toHaveLength(2); // --max-retries 1
    expect(judge.calls.some((c) => c.prompt.includes('jrow-2'))).toBe(false); // failed rows are not judged

    const good = (await readJudgeRecord(outputDir, 0))!;
    const { good: g, low: l } = JUDGE_ANSWERS;
    expect(good.scores).toEqual({
      instructionFollowing: g.instruction_following,
      preservation: g.preservation,
      quality: g.quality,
      overall: Math.round(Math.sqrt(Math.min(8, 9) * 7) * 100) / 100,
    });
    expect(good.reason).toBe(g.reason);
    expect(good.costUsd).toBe(0.00002); // as the server reported it
    const rows = jsonl();
    expect(rows[0]).toMatchObject({
      score: good.scores.overall,
      score_instruction_following: 8,
      score_preservation: 9,
      score_quality: 7,
      judge_model: 'gpt-4.1-mini',
    });
    expect(rows[1]).toMatchObject({
      score: Math.round(Math.sqrt(Math.min(l.instruction_following, l.preservation) * l.quality) * 100) / 100,
      score_reason: l.reason,
    });
    expect(rows[2]!.score).toBeUndefined();
    // The judge's key is nowhere in the run's files or the judge workflow's history.
    for (const name of readdirSync(join(outputDir, '.atelier', 'judge')))
      expect(readFileSync(join(outputDir, '.atelier', 'judge', name), 'utf8')).not.toContain(JUDGE_KEY);
    expect(readFileSync(join(outputDir, 'results.jsonl'), 'utf8')).not.toContain(JUDGE_KEY);
  });

  it('the scores reach the viewer and `export --only score>=X`', async () => {
    const viewer = await startViewer({ outputDir, runId: 'judged' });
    try {
      const { rows } = (await (await fetch(`${viewer.url}api/rows`)).json()) as { rows: RowSummary[] };
      expect(rows[0]!.score).toMatchObject({ overall: 7.48, instructionFollowing: 8, preservation: 9, quality: 7, model: 'gpt-4.1-mini' });
      expect(rows[2]!.score).toBeUndefined();
    } finally {
      await viewer.close();
    }
    const out = join(dir, 'hf-scored');
    const exported = await atelier(['export', outputDir, '--out', out, '--only', 'score>=5'], env());
    expect(exported.code, exported.stderr).toBe(0);
    const [shard] = readdirSync(join(out, 'data'));
    const bytes = readFileSync(join(out, 'data', shard!));
    const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    const table = await parquetReadObjects({ file, columns: ['index', 'score', 'score_reason', 'judge_model'] });
    expect(table).toEqual([{ index: 0n, score: 7.48, score_reason: JUDGE_ANSWERS.good.reason, judge_model: 'gpt-4.1-mini' }]);
    const none = await atelier(['export', outputDir, '--out', join(dir, 'hf-none'), '--only', 'score>=9'], env());
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no row of .* matches --only score>=9: nothing to export \(scores come from `atelier judge`\)/);
  });

  it('a second judge run pays for nothing already scored; retry --redo --score-below redoes only the low rows', async () => {
    const before = judge.calls.length;
    const again = await atelier(['judge', outputDir, '--model', 'gpt-4.1-mini', '--rows', '0:2', '--state-dir', stateDir], env());
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/scored 0, already scored 2, failed 0/);
    expect(judge.calls.length).toBe(before);

    const redo = await atelier(
      [
        'retry',
        (JSON.parse(readFileSync(join(outputDir, '.atelier', 'run.json'), 'utf8')) as { runId: string }).runId,
        '--redo',
        '--score-below',
        '5',
        '--state-dir',
        stateDir,
      ],
      env(),
    );
    expect(redo.code, redo.stderr).toBe(0); // the retry's own rows decide: row 1 succeeded (row 2, refused, was not asked for)
    expect(redo.stdout).toMatch(/^1 done row\(s\) scored below 5 matched/m);
    expect(redo.stdout).toMatch(/retried 1 row\(s\): ok 1, failed 0/);
    expect(images.callsFor('jrow-1 ')).toHaveLength(2);
    expect(images.callsFor('jrow-0 ')).toHaveLength(1);
    // The new output is not scored yet.
    expect(jsonl()[1]).toMatchObject({ generation: 2 });
    expect(jsonl()[1]!.score).toBeUndefined();
    expect(existsSync(join(outputDir, '.atelier', 'judge', '000001.json'))).toBe(true);
  });

  it('GPT-5.x judges (no temperature, structured output); a model that refuses the request stops the judge with its reason, not row by row', async () => {
    // Before: `temperature: 0` made GPT-5.x answer 400 unsupported_value on every row.
    const gpt5 = await atelier(['judge', outputDir, '--model', 'gpt-5.2', '--rescore', '--rows', '0', '--state-dir', stateDir], env());
    expect(gpt5.code, gpt5.stderr).toBe(0);
    expect(gpt5.stdout).toMatch(/judged with gpt-5\.2: scored 1/);
    const last = judge.calls.filter((c) => c.model === 'gpt-5.2').at(-1)!;
    expect(last.extra.temperature).toBeUndefined();
    expect(last.extra.response_format).toMatchObject({ type: 'json_schema' });

    const refusing = await startJudgeStandin();
    refusing.script(
      'jrow-',
      [
        {
          status: 404,
          body: {
            error: {
              message: 'The model `gpt-9-vision` does not exist or you do not have access to it.',
              type: 'invalid_request_error',
              param: null,
              code: 'model_not_found',
            },
          },
        },
      ],
      { repeat: true },
    );
    try {
      const run = await atelier(['judge', outputDir, '--model', 'gpt-9-vision', '--rescore', '--window', '1', '--state-dir', stateDir], {
        ...env(),
        ATELIER_JUDGE_BASE_URL: refusing.baseURL,
      });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(
        /judging stopped after 1 row\(s\): the judge model gpt-9-vision refused the request \(404 model_not_found\): The model `gpt-9-vision` does not exist/,
      );
      // One call, not one per row (and not retried).
      expect(refusing.calls).toHaveLength(1);
    } finally {
      await refusing.close();
    }
  });
});
