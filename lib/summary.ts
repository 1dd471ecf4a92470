import { rowSelector } from './filterRows';
import { isComplete, ledgerIndexes, readLedgerEntry } from './ledger';
import { readPlanMeta, readPlanRows } from './plan';

export interface LedgerSummary {
  total: number;
  ok: number;
  failedByType: Record<string, number>;
  pending: number;
}

/** Row counts of a run from its plan and ledger alone (no Temporal server needed). */
export async function summarizeLedger(outputDir: string, filterRows?: string): Promise<LedgerSummary> {
  const meta = await readPlanMeta(outputDir);
  const selected = rowSelector(filterRows);
  const attempted = await ledgerIndexes(outputDir);
  const summary: LedgerSummary = { total: 0, ok: 0, failedByType: {}, pending: 0 };
  const chunk = 1000;
  for (let start = 0; start < meta.totalRows; start += chunk) {
    for (const row of await readPlanRows(outputDir, start, chunk)) {
      if (!selected(row.position)) continue;
      summary.total += 1;
      const entry = attempted.has(row.index) ? await readLedgerEntry(outputDir, row.index) : undefined;
      if (await isComplete(outputDir, entry)) summary.ok += 1;
      else if (entry?.status === 'failed') {
        const type = entry.errorType ?? 'Error';
        summary.failedByType[type] = (summary.failedByType[type] ?? 0) + 1;
      } else summary.pending += 1;
    }
  }
  return summary;
}
