import { ledgerReader, type LedgerEntry } from './ledger';
import { readPlanMeta, readPlanRows, type PlanMeta, type PlanRow } from './plan';
import { markStillHolds, readReviewMarks, type ReviewMark } from './review';
import { readJudgeRecords, scoreStillHolds, type JudgeRecord } from './judgeScores';

// One pass over a run's rows as its plan, ledger and review marks describe them: what the results
// tables, `atelier export` and `atelier view` show. Reads a chunk of the plan at a time and the
// ledger entries of that chunk concurrently, so it works the same on a disk and on S3.

export type RowStatus = 'ok' | 'failed' | 'pending' | 'changed';

export interface RunRowView {
  row: PlanRow;
  status: RowStatus;
  /** The ledger entry behind the status (none for rows never attempted; none for `changed` rows). */
  entry?: LedgerEntry;
  errorType?: string;
  /** `Class: reason`, for failed rows. */
  error?: string;
  /** The person's mark, while it still holds for the row's current output. */
  review?: ReviewMark;
  /** The judge's scores, while they still hold for the row's current output. */
  score?: JudgeRecord;
}

const CHUNK = 500;

export async function* runRows(outputDir: string, meta?: PlanMeta): AsyncGenerator<RunRowView> {
  const { totalRows } = meta ?? (await readPlanMeta(outputDir));
  const stateOf = await ledgerReader(outputDir);
  const marks = await readReviewMarks(outputDir);
  const scores = await readJudgeRecords(outputDir);
  for (let start = 0; start < totalRows; start += CHUNK) {
    const chunk = await readPlanRows(outputDir, start, CHUNK);
    await stateOf.prefetch(chunk);
    for (const row of chunk) {
      const state = await stateOf(row);
      // A stale entry (the row changed and was not done again) answers another request: not shown.
      const entry = state.status === 'changed' ? undefined : state.entry;
      const view: RunRowView = { row, status: state.status, ...(entry ? { entry } : {}) };
      if (state.status === 'failed') {
        view.errorType = state.errorType;
        view.error = `${state.errorType}: ${state.entry.error ?? ''}`;
      }
      const review = state.status === 'ok' ? markStillHolds(marks.get(row.index), state.entry) : undefined;
      if (review) view.review = review;
      const score = state.status === 'ok' ? scoreStillHolds(scores.get(row.index), state.entry) : undefined;
      if (score) view.score = score;
      yield view;
    }
  }
}
