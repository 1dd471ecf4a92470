import type { TableColumn } from '../export/parquetTable';
import type { JudgeRecord } from './judgeScores';
import type { ReviewMark } from './review';

// The columns Atelier adds to a run's rows, in one place: results.csv, results.jsonl and
// results.parquet (activities/resultsTables.ts) and the dataset export (lib/export/hfExport.ts)
// take their outcome, review and score columns from here, with the same names, order and values,
// so the tables cannot drift apart.

/** How each row ended: every table carries these, in this order. */
export const OUTCOME_COLUMNS: readonly TableColumn[] = [
  { name: 'status', kind: 'string' },
  { name: 'error', kind: 'string' },
  { name: 'attempts', kind: 'int' },
  { name: 'latency_ms', kind: 'int' },
  { name: 'cost_usd', kind: 'double' },
];

/** A person's mark from `atelier view`: accepted / rejected, and the reason when one was given. */
export const REVIEW_COLUMNS: readonly TableColumn[] = [
  { name: 'review', kind: 'string' },
  { name: 'review_reason', kind: 'string' },
];

/** The judge's columns (`atelier judge`). */
export const SCORE_COLUMNS: readonly TableColumn[] = [
  { name: 'score', kind: 'double' },
  { name: 'score_instruction_following', kind: 'double' },
  { name: 'score_preservation', kind: 'double' },
  { name: 'score_quality', kind: 'double' },
  { name: 'score_reason', kind: 'string' },
  { name: 'judge_model', kind: 'string' },
];

/** results.csv's own columns after the input columns: one output path, status and error, then the marks and scores when the run has any. */
export function resultsCsvColumns(options: { enhanced: boolean; reviewed: boolean; scored: boolean }): string[] {
  return [
    ...(options.enhanced ? ['instruction_enhanced'] : []),
    'output_image',
    'status',
    'error',
    ...(options.reviewed ? REVIEW_COLUMNS.map((c) => c.name) : []),
    ...(options.scored ? SCORE_COLUMNS.map((c) => c.name) : []),
  ];
}

/** results.parquet's own columns after the input columns (every column always: a stable schema). */
export function resultsParquetColumns(enhanced: boolean): TableColumn[] {
  return [
    ...(enhanced ? [{ name: 'instruction_enhanced', kind: 'string' } as const] : []),
    { name: 'output_image', kind: 'stringList' },
    ...OUTCOME_COLUMNS.slice(0, 3),
    { name: 'request_id', kind: 'string' },
    ...OUTCOME_COLUMNS.slice(3),
    { name: 'generation', kind: 'int' },
    ...REVIEW_COLUMNS,
    ...SCORE_COLUMNS,
  ];
}

/** The export's outcome, review and score columns (the scores only when a row has them). */
export function exportResultColumns(scored: boolean): TableColumn[] {
  return [...OUTCOME_COLUMNS, ...REVIEW_COLUMNS, ...(scored ? SCORE_COLUMNS : [])];
}

/** A row's review cells; empty when no mark holds for its current output. */
export function reviewCells(mark: ReviewMark | undefined): { review?: string; review_reason?: string } {
  if (!mark) return {};
  // The viewer may record why (a reject reason); older marks have none.
  return { review: mark.verdict, ...(mark.reason ? { review_reason: mark.reason } : {}) };
}

/** A row's score cells; empty when no score holds for its current output. */
export function scoreCells(score: JudgeRecord | undefined): Record<string, string | number | null> {
  if (!score) return {};
  return {
    score: score.scores.overall,
    score_instruction_following: score.scores.instructionFollowing,
    score_preservation: score.scores.preservation,
    score_quality: score.scores.quality,
    score_reason: score.reason,
    judge_model: score.model,
  };
}
