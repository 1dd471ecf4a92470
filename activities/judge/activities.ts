import { ApplicationFailure, Context } from '@temporalio/activity';
import sharp from 'sharp';
import { openStorage } from '../../storage';
import { layout } from '../../lib/run/runStore';
import { boundedMessage, ClassifiedError } from '../../lib/shared/errors';
import { rowSelector } from '../../lib/shared/filterRows';
import { loadInputImage } from '../../lib/images';
import { readJudgeRecords, scoreStillHolds, readJudgeRecord, writeJudgeRecord, type JudgeRecord } from '../../lib/run/judgeScores';
import { completedEntry, ledgerReader } from '../../lib/run/ledger';
import { childLocation, readPlanRow, readPlanRows } from '../../lib/run/plan';
import { redactSecrets } from '../../lib/redact';
import type { ProviderImage } from '../providers/provider';
import { toApplicationFailure } from '../editRow';
import type { JudgeClient } from './client';

// The judge's activities. `listJudgeRows` (orchestrator queue) pages through the plan for done
// rows not yet scored for their current output; `judgeRow` (the judge's own queue, so --rpm and
// concurrency apply to it alone) sends one row to the judge model and records the answer. A row
// already scored for its current output is never sent again (no answer paid for twice).

// The judge's task queue: in lib/shared/constants so the CLI names it without loading the judge.
export { JUDGE_QUEUE } from '../../lib/shared/constants';

/** Images are sent at most this many pixels a side: judging needs no more, and tokens cost. */
const JUDGE_MAX_SIDE = 1024;

export interface JudgeRowTask {
  outputDir: string;
  index: number;
  position: number;
  model: string;
  rescore?: boolean;
}

export interface JudgeRowResult {
  index: number;
  status: 'scored' | 'kept' | 'not-done';
  overall?: number;
  costUsd?: number;
}

export interface JudgeRowsPage {
  rows: Array<{ index: number; position: number }>;
  /** Rows of the page this model already scored for their current output (not listed), and their overall scores' sum. */
  kept: number;
  keptOverallSum: number;
  nextCursor: number | null;
}

async function forJudge(png: Buffer): Promise<ProviderImage> {
  const data = await sharp(png)
    .resize(JUDGE_MAX_SIDE, JUDGE_MAX_SIDE, { fit: 'inside', withoutEnlargement: true })
    .jpeg({ quality: 90 })
    .toBuffer();
  return { data, mimeType: 'image/jpeg' };
}

/** Whether a record answers for this entry and model already. */
function alreadyScored(record: JudgeRecord | undefined, entry: { finishedAt: string } | undefined, model: string): boolean {
  return scoreStillHolds(record, entry)?.model === model;
}

export function createJudgeListActivities() {
  return {
    /** Done rows from `cursor` (within `rows`, a --filter-rows spec) that this model has not scored for their current output. */
    async listJudgeRows(args: {
      outputDir: string;
      cursor: number;
      limit: number;
      model: string;
      rows?: string;
      rescore?: boolean;
    }): Promise<JudgeRowsPage> {
      const selected = rowSelector(args.rows);
      const plan = await readPlanRows(args.outputDir, args.cursor, args.limit);
      const stateOf = await ledgerReader(args.outputDir);
      const records = args.rescore ? new Map<number, JudgeRecord>() : await readJudgeRecords(args.outputDir);
      const wanted = plan.filter((row) => selected(row.position));
      await stateOf.prefetch(wanted);
      const rows: JudgeRowsPage['rows'] = [];
      let kept = 0;
      let keptOverallSum = 0;
      for (const row of wanted) {
        const state = await stateOf(row);
        if (state.status !== 'ok') continue;
        const record = records.get(row.index);
        if (alreadyScored(record, state.entry, args.model)) {
          kept += 1;
          keptOverallSum += record!.scores.overall;
          continue;
        }
        rows.push({ index: row.index, position: row.position });
      }
      return { rows, kept, keptOverallSum, nextCursor: plan.length < args.limit ? null : args.cursor + plan.length };
    },
  };
}

export function createJudgeActivities(client: JudgeClient) {
  return {
    async judgeRow(task: JudgeRowTask): Promise<JudgeRowResult> {
      const signal = Context.current().cancellationSignal;
      try {
        const row = await readPlanRow(task.outputDir, task.position);
        const entry = await completedEntry(task.outputDir, task.index, row.digest);
        // Redone or changed since it was listed: nothing to judge now.
        if (!entry) return { index: task.index, status: 'not-done' };
        const existing = await readJudgeRecord(task.outputDir, task.index);
        if (!task.rescore && alreadyScored(existing, entry, task.model))
          return { index: task.index, status: 'kept', overall: existing!.scores.overall };
        const storage = openStorage(task.outputDir);
        const sources: ProviderImage[] = [];
        const imageSources = { cacheDir: childLocation(task.outputDir, layout.imageCache), runDir: task.outputDir, signal };
        for (const ref of row.images) sources.push(await forJudge((await loadInputImage(ref, imageSources)).png));
        const last = entry.outputImages!.at(-1)!;
        const output = await storage.read(last);
        if (!output) throw new ClassifiedError('retryable', `output ${storage.describe(last)} disappeared`);
        const answer = await client.judge(task.model, { turns: row.turns, sources, edited: await forJudge(output), signal });
        const record: JudgeRecord = {
          index: task.index,
          model: task.model,
          entryFinishedAt: entry.finishedAt,
          scores: answer.scores,
          reason: answer.reason,
          ...(answer.requestId ? { requestId: answer.requestId } : {}),
          ...(answer.usage ? { usage: answer.usage } : {}),
          ...(answer.costUsd !== undefined ? { costUsd: answer.costUsd } : {}),
          at: new Date().toISOString(),
        };
        await writeJudgeRecord(task.outputDir, record);
        return {
          index: task.index,
          status: 'scored',
          overall: answer.scores.overall,
          ...(answer.costUsd !== undefined ? { costUsd: answer.costUsd } : {}),
        };
      } catch (err) {
        if (err instanceof ClassifiedError) throw toApplicationFailure(err, client.secrets);
        if (signal.aborted) throw err;
        throw ApplicationFailure.create({
          type: 'Retryable',
          message: boundedMessage(redactSecrets((err as Error)?.message ?? String(err), client.secrets)),
        });
      }
    },
  };
}

export type JudgeActivities = ReturnType<typeof createJudgeActivities>;
export type JudgeListActivities = ReturnType<typeof createJudgeListActivities>;
