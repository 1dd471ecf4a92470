import { UsageError } from '../lib/shared/errors';
import { rowSelector } from '../lib/shared/filterRows';
import { readLedgerEntry } from '../lib/run/ledger';
import { REDO_ERROR_TYPE, setAsideForRedo } from '../lib/run/redo';
import { retrySelector } from '../lib/shared/retrySelection';
import { runRows } from '../lib/run/runRows';
import type { DatasetRunSummary, RetrySelection } from '../lib/shared/types';
import { ExitCodes } from './io';

// The rows an `atelier retry` acts on, found in the run's ledger before anything is sent: failed
// rows for a plain retry, done rows for `--redo` (by position, or those rejected in the viewer).
// Knowing them up front lets retry say how many matched, refuse when none did, and report only
// what these rows cost.

export interface MatchedRow {
  index: number;
  position: number;
}

/** Failed rows a retry selection matches (within the run's --rows). */
export async function failedRowsMatching(
  outputDir: string,
  selection: RetrySelection,
  filterRows: string | undefined,
): Promise<MatchedRow[]> {
  const selected = rowSelector(filterRows);
  const matches = retrySelector(selection);
  const found: MatchedRow[] = [];
  for await (const view of runRows(outputDir)) {
    if (view.status === 'failed' && selected(view.row.position) && matches(view.row.position, view.errorType))
      found.push({ index: view.row.index, position: view.row.position });
  }
  return found;
}

export interface RedoChoice {
  /** Positions in --rows syntax. */
  rows?: string;
  /** Rows a person rejected in `atelier view`. */
  rejected?: boolean;
  /** Rows the judge scored below this overall score (unscored rows do not match). */
  scoreBelow?: number;
  /** --include-accepted: --score-below also takes rows a person accepted in the viewer. */
  includeAccepted?: boolean;
}

export interface RedoRows {
  rows: Array<MatchedRow & { reason: string }>;
  /** Rows scored below --score-below that a person accepted: kept (the person's word wins). */
  keptAccepted: MatchedRow[];
}

/**
 * Done rows to make again. --rows narrows (a row must be among them); --rejected and --score-below
 * each add rows (a row matches either: "rejected or scored low", as users read the two flags).
 * A row a person accepted in the viewer is not redone for its judge score unless
 * --include-accepted says so; such rows are returned apart, to be reported.
 */
export async function doneRowsToRedo(outputDir: string, choice: RedoChoice, filterRows: string | undefined): Promise<RedoRows> {
  if (choice.rows === undefined && !choice.rejected && choice.scoreBelow === undefined) {
    throw new UsageError('--redo needs --rows 3,7, --rejected and/or --score-below X to say which done rows to make again');
  }
  const selected = rowSelector(filterRows);
  const inRows = rowSelector(choice.rows);
  const found: Array<MatchedRow & { reason: string }> = [];
  const keptAccepted: MatchedRow[] = [];
  const byFlag = choice.rejected || choice.scoreBelow !== undefined;
  for await (const view of runRows(outputDir)) {
    if (view.status !== 'ok' || !selected(view.row.position)) continue;
    if (choice.rows !== undefined && !inRows(view.row.position)) continue;
    const row = { index: view.row.index, position: view.row.position };
    const rejected = Boolean(choice.rejected) && view.review?.verdict === 'rejected';
    const overall = view.score?.scores.overall;
    const scoredLow = choice.scoreBelow !== undefined && overall !== undefined && overall < choice.scoreBelow;
    if (byFlag && !rejected && !scoredLow) continue;
    if (!rejected && scoredLow && view.review?.verdict === 'accepted' && !choice.includeAccepted) {
      keptAccepted.push(row);
      continue;
    }
    const reason = rejected
      ? `rejected in the viewer${view.review?.reason ? `: ${view.review.reason}` : ''}`
      : scoredLow
        ? `scored ${overall} by ${view.score!.model}, below ${choice.scoreBelow}${view.review?.verdict === 'accepted' ? ' (accepted in the viewer; --include-accepted)' : ''}`
        : `retry --redo --rows ${choice.rows}`;
    found.push({ ...row, reason });
  }
  return { rows: found, keptAccepted };
}

/** Sets the rows aside (history kept) and returns the selection that runs exactly them again. */
export async function setAsideAll(outputDir: string, rows: ReadonlyArray<MatchedRow & { reason: string }>): Promise<RetrySelection> {
  for (const row of rows) {
    const entry = await readLedgerEntry(outputDir, row.index);
    if (entry) await setAsideForRedo(outputDir, entry, row.reason);
  }
  return { rows: positionsSpec(rows.map((r) => r.position)), errorTypes: [REDO_ERROR_TYPE] };
}

/** Positions as --rows ranges: 3,7,10:13 (half-open). */
export function positionsSpec(positions: readonly number[]): string {
  const sorted = [...new Set(positions)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(j > i ? `${sorted[i]}:${sorted[j]! + 1}` : String(sorted[i]));
    i = j + 1;
  }
  return parts.join(',');
}

/** The end of a retry: how its rows ended and what this retry spent (not the whole run). */
export function retryConclusion(outputDir: string, rows: readonly MatchedRow[], startedAt: string) {
  return async (summary: DatasetRunSummary): Promise<{ text: string; code: number }> => {
    let ok = 0;
    let spent = 0;
    let unknownCost = 0;
    const failed: Record<string, number> = {};
    for (const row of rows) {
      const entry = await readLedgerEntry(outputDir, row.index);
      if (entry?.status === 'ok') {
        ok += 1;
        // Only what this retry made counts: an entry finished before it was made by another.
        if (entry.finishedAt >= startedAt) {
          if (entry.costUsd === undefined) unknownCost += 1;
          else spent += entry.costUsd;
        }
      } else {
        const type = entry?.errorType ?? 'pending';
        failed[type] = (failed[type] ?? 0) + 1;
      }
    }
    const failedCount = Object.values(failed).reduce((a, b) => a + b, 0);
    const lines = [
      `retried ${rows.length} row(s): ok ${ok}, failed ${failedCount}`,
      ...Object.entries(failed).map(([type, n]) => `  failed ${type}: ${n}`),
      `this retry's estimated cost: $${spent.toFixed(4)}${unknownCost ? ` + ${unknownCost} row(s) of unknown cost` : ''}`,
      `the run now: rows: ${summary.total}  ok: ${summary.ok}  failed: ${summary.failed}${summary.pending ? `  pending: ${summary.pending}` : ''}`,
      `results: ${summary.resultsCsv} (and ${summary.resultsJsonl})`,
    ];
    // The retry's own rows decide: rows that failed before and were not asked for are not its
    // failure (the last line shows the run's state).
    return { text: lines.join('\n'), code: failedCount > 0 ? ExitCodes.rowsFailed : ExitCodes.ok };
  };
}
