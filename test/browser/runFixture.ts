import { linkSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeResultsTables } from '../../activities/resultsTables';
import { overallScore, writeJudgeRecord } from '../../lib/run/judgeScores';
import { writeLedgerEntry } from '../../lib/run/ledger';
import { PlanWriter } from '../../lib/run/plan';
import type { LedgerEntry } from '../../lib/run/records';
import { writeReviewMark } from '../../lib/run/review';
import { layout } from '../../lib/run/runStore';

// A run folder written directly with the run's own writers (plan, ledger commit, judge records,
// review marks), as a finished run leaves it, without making a provider call per row: the viewer
// tests need runs of known shape, and one of 20,000 rows. Every input is one small red image and
// every output a hard link to one small blue image, so a split compare shows red | blue.

export const FIXTURE_RUN_ID = 'viewer-fixture';
export const INPUT_RGB = { r: 220, g: 30, b: 30 };
export const OUTPUT_RGB = { r: 30, g: 60, b: 220 };
/** Row MULTI_ROW has two inputs (red, green) and two turns, each with its output (blue, then yellow). */
export const MULTI_ROW = 1;
export const INPUT2_RGB = { r: 30, g: 190, b: 60 };
export const OUTPUT2_RGB = { r: 230, g: 210, b: 40 };
export const MULTI_TURN = 'then sharpen it';

const SUBJECTS = ['cat', 'lighthouse', 'bicycle', 'teapot', 'mountain', 'robot', 'violin'];
const EDITS = [
  'Make the sky purple behind the',
  'Turn into a watercolour painting the',
  'Add snow around the',
  'Remove the background of the',
];

/** What row `i` of a fixture run is; the tests compute expectations from the same rules. */
export function fixtureRow(i: number): {
  instruction: string;
  status: 'ok' | 'failed' | 'pending';
  errorType?: string;
  costUsd?: number;
  latencyMs?: number;
  score?: number;
  review?: 'accepted' | 'rejected';
} {
  const instruction = `${EDITS[i % EDITS.length]} ${SUBJECTS[i % SUBJECTS.length]} (row ${i})`;
  if (i % 10 === 9) return { instruction, status: 'failed', errorType: i % 20 === 9 ? 'Blocked' : 'RateLimited' };
  if (i % 10 === 8) return { instruction, status: 'pending' };
  // Every other done row is judged: scores spread over 0-10, with a fixed point for each row.
  const score = i % 2 === 0 ? Math.round((((i * 37) % 101) / 10) * 100) / 100 : undefined;
  return {
    instruction,
    status: 'ok',
    costUsd: ((i * 37) % 100) / 1000 + 0.001,
    latencyMs: 1000 + ((i * 7919) % 9000),
    ...(score !== undefined ? { score } : {}),
    // Every seventh done row accepted, every eleventh rejected: some accepted rows score low (conflicts).
    ...(i % 7 === 0 ? { review: 'accepted' as const } : i % 11 === 0 ? { review: 'rejected' as const } : {}),
  };
}

async function solidPng(rgb: { r: number; g: number; b: number }): Promise<Buffer> {
  return sharp({ create: { width: 64, height: 64, channels: 3, background: rgb } })
    .png()
    .toBuffer();
}

/** Runs `work` over 0..n-1, `concurrency` at a time. */
async function each(n: number, concurrency: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await work(next++);
    }),
  );
}

/** `results`: the run's results tables too, as its final results write leaves them. */
export async function writeFixtureRun(dir: string, rows: number, { results = false }: { results?: boolean } = {}): Promise<string> {
  const outputDir = join(dir, 'out');
  mkdirSync(join(outputDir, 'images'), { recursive: true });
  const input = join(dir, 'red.png');
  writeFileSync(input, await solidPng(INPUT_RGB));
  const output = join(dir, 'blue.png');
  writeFileSync(output, await solidPng(OUTPUT_RGB));
  const input2 = join(dir, 'green.png');
  writeFileSync(input2, await solidPng(INPUT2_RGB));
  const output2 = join(dir, 'yellow.png');
  writeFileSync(output2, await solidPng(OUTPUT2_RGB));
  const outputsOf = (i: number): string[] => {
    const path = `images/${String(i).padStart(6, '0')}.png`;
    return i === MULTI_ROW ? [path, `images/${String(i).padStart(6, '0')}_1.png`] : [path];
  };
  writeFileSync(join(dir, 'data.csv'), 'image,instruction\n');

  const plan = new PlanWriter(outputDir);
  await plan.open();
  for (let i = 0; i < rows; i++) {
    const { instruction } = fixtureRow(i);
    await plan.add({
      position: i,
      index: i,
      where: `data.csv line ${i + 2}`,
      turns: i === MULTI_ROW ? [instruction, MULTI_TURN] : [instruction],
      images:
        i === MULTI_ROW
          ? [
              { kind: 'file', source: input },
              { kind: 'file', source: input2 },
            ]
          : [{ kind: 'file', source: input }],
      record: { image: 'red.png', instruction },
      outputs: outputsOf(i).map((path) => ({ path, format: 'png' })),
    });
  }
  await plan.commit({
    runId: FIXTURE_RUN_ID,
    inputPath: join(dir, 'data.csv'),
    selectedRows: rows,
    columns: ['image', 'instruction'],
    imageKey: 'image',
    instructionKey: 'instruction',
  });
  writeFileSync(
    join(outputDir, ...layout.run.split('/')),
    JSON.stringify({ runId: FIXTURE_RUN_ID, inputPath: join(dir, 'data.csv'), backend: 'openai', model: 'gpt-image-2' }),
  );

  const finishedAt = '2026-12-07T08:00:00.000Z';
  await each(rows, 32, async (i) => {
    const row = fixtureRow(i);
    if (row.status === 'pending') return;
    const base = { index: i, position: i, runId: FIXTURE_RUN_ID, model: 'gpt-image-2', attempts: 1, finishedAt };
    if (row.status === 'failed') {
      await writeLedgerEntry(outputDir, { ...base, status: 'failed', errorType: row.errorType!, error: `scripted ${row.errorType}` });
      return;
    }
    const paths = outputsOf(i);
    const path = paths[0]!;
    linkSync(output, join(outputDir, path));
    if (paths[1]) linkSync(output2, join(outputDir, paths[1]));
    const entry: LedgerEntry = {
      ...base,
      status: 'ok',
      outputImages: paths,
      costUsd: row.costUsd!,
      latencyMs: row.latencyMs!,
      requestIds: [`req_${i}`],
    };
    // The entry alone (no done-marker): what readers consult, and half the files for 20,000 rows.
    await writeLedgerEntry(outputDir, entry);
    if (row.score !== undefined) {
      await writeJudgeRecord(outputDir, {
        index: i,
        model: 'judge-fixture',
        entryFinishedAt: finishedAt,
        scores: {
          instructionFollowing: row.score,
          preservation: row.score,
          quality: row.score,
          overall: overallScore(row.score, row.score, row.score),
        },
        reason: `scripted ${row.score}`,
        at: finishedAt,
      });
    }
    if (row.review)
      await writeReviewMark(outputDir, {
        index: i,
        verdict: row.review,
        outputImages: paths,
        entryFinishedAt: finishedAt,
        at: finishedAt,
      });
  });
  if (results) await writeResultsTables({ runId: FIXTURE_RUN_ID, outputDir });
  return outputDir;
}
