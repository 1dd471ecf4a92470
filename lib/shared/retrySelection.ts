import { parseFilterRows, rowSelector } from './filterRows';
import { ROW_ERROR_TYPES } from './errorTypes';

// `atelier retry` selections, checked the same way by the CLI, the workflow's update validator
// and the activity that picks the rows. No Node imports: workflow code uses this too.

/** Which failed rows `atelier retry` runs again (rows already ok are never redone). */
export interface RetrySelection {
  /** Only rows failed with these classes (e.g. Blocked, Retryable); all classes when absent. */
  errorTypes?: string[];
  /** Only these row positions, in --filter-rows syntax. */
  rows?: string;
}

/** Accepts the CLI's spellings: blocked, invalid-request, InvalidRequest, quota_exhausted ... */
export function normaliseErrorType(name: string): string | undefined {
  const key = name.replace(/[-_\s]/g, '').toLowerCase();
  return ROW_ERROR_TYPES.find((t) => t.toLowerCase() === key);
}

/** Throws with a message naming the bad part. */
export function validateRetrySelection(selection: RetrySelection): void {
  if (selection.rows !== undefined) parseFilterRows(selection.rows);
  for (const type of selection.errorTypes ?? []) {
    if (!ROW_ERROR_TYPES.includes(type)) {
      throw new Error(`unknown error type "${type}"; known: ${ROW_ERROR_TYPES.join(', ')}`);
    }
  }
}

/** Whether a row (by position, with its ledger failure class) is one the selection retries. */
export function retrySelector(selection: RetrySelection): (position: number, errorType: string | undefined) => boolean {
  const inRows = rowSelector(selection.rows);
  const types = selection.errorTypes;
  return (position, errorType) =>
    errorType !== undefined && inRows(position) && (types === undefined || types.length === 0 || types.includes(errorType));
}
