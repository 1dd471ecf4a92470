import { describe, expect, it } from 'vitest';
import type { LedgerEntry } from '../../lib/run/records';
import { ResultsRecords } from '../../lib/run/resultsRecords';
import { tempDir } from '../helpers/fixtures';

// The viewer rewrites the results tables after a mark from the records alone (no ledger read); a
// run's refresh may commit new records meanwhile. The viewer's write must leave them counted.

const PLAN = 'plan-tag-0000001';

function failed(index: number): { status: 'failed'; entry: LedgerEntry; errorType: string } {
  const entry = {
    index,
    position: index,
    runId: 'r',
    model: 'm',
    attempts: 1,
    finishedAt: '2026-12-07T08:00:00.000Z',
    status: 'failed',
    errorType: 'Blocked',
    error: 'no',
  } as LedgerEntry;
  return { status: 'failed', entry, errorType: 'Blocked' };
}

describe('results records', () => {
  it("a write that read nothing leaves the pointer alone: a refresh's segment committed meanwhile still counts", async () => {
    const outputDir = tempDir('atelier-records-');
    await ResultsRecords.fresh(outputDir, PLAN).commit(new Map([[0, failed(0)]]));
    const viewer = (await ResultsRecords.load(outputDir, PLAN))!;
    const refresh = (await ResultsRecords.load(outputDir, PLAN))!;
    await refresh.commit(new Map([[1, failed(1)]]));
    await viewer.commit(new Map());
    const after = (await ResultsRecords.load(outputDir, PLAN))!;
    expect(after.get(0)?.status).toBe('failed');
    expect(after.get(1)?.status).toBe('failed');
  });
});
