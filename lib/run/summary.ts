import { rowSelector } from '../shared/filterRows';
import { countFailure, ledgerReader } from './ledger';
import { allPlanRows } from './plan';

export interface LedgerSummary {
  total: number;
  ok: number;
  failedByType: Record<string, number>;
  pending: number;
  /** Rows done for a request they no longer make (the dataset changed): done again on the next run. */
  changed: number;
}

/** Row counts of a run from its plan and ledger alone (no Temporal server needed). */
export async function summarizeLedger(outputDir: string, filterRows?: string): Promise<LedgerSummary> {
  const selected = rowSelector(filterRows);
  const stateOf = await ledgerReader(outputDir);
  const summary: LedgerSummary = { total: 0, ok: 0, failedByType: {}, pending: 0, changed: 0 };
  for await (const row of allPlanRows(outputDir)) {
    if (!selected(row.position)) continue;
    summary.total += 1;
    const state = await stateOf(row);
    if (state.status === 'ok') summary.ok += 1;
    else if (state.status === 'failed') countFailure(summary.failedByType, state.errorType);
    else if (state.status === 'changed') summary.changed += 1;
    else summary.pending += 1;
  }
  return summary;
}
