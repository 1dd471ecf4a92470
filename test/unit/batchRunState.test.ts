import { describe, expect, it } from 'vitest';
import { batchCallsBefore, parseBatchRequestKey, batchRequestKey } from '../../lib/shared/batch';
import type { PlanRunResult } from '../../lib/shared/types';
import { RunState } from '../../workflows/dataset/runState';

// What a --batch phase hands the run's bookkeeping, without a server.

function planned(failedByType: Record<string, number> = {}): RunState {
  const plan = { input: {}, totalRows: 10, selectedRows: 10, alreadyOk: 2, failedByType } as unknown as PlanRunResult;
  return RunState.planned('run-b', plan, '2026-11-30T00:00:00.000Z', undefined, () => true);
}

describe('RunState.applyBatchPhase', () => {
  it("counts the batch's rows: ok, failed by class, rows failed before no longer counted twice, the spend", () => {
    const s = planned({ Retryable: 3 });
    s.applyBatchPhase({
      ok: 5,
      failedByType: { Blocked: 1, InputError: 1 },
      retriedByType: { Retryable: 3 },
      finished: 7,
      costUsd: 0.0175,
    });
    expect(s.snapshot('running')).toMatchObject({
      total: 10,
      ok: 7,
      failed: 2,
      failedByType: { Retryable: 0, Blocked: 1, InputError: 1 },
      pending: 1,
      finished: 7,
      spentUsd: 0.0175,
    });
  });

  it('a row the batch failed and the direct path then finishes counts once', () => {
    const s = planned();
    s.applyBatchPhase({ ok: 0, failedByType: { Retryable: 1 }, retriedByType: {}, finished: 1 });
    s.dispatched({ position: 4, index: 4, summary: 'row 4', previousErrorType: 'Retryable' });
    s.finishRow({ position: 4, index: 4, status: 'ok' });
    expect(s.snapshot('running')).toMatchObject({ ok: 3, failed: 0 });
  });
});

describe('the batch phase with the direct fallback', () => {
  it('rows left to the direct pass are not counted finished or failed, so done never goes back', () => {
    const s = planned();
    // 8 rows: 5 ok, 1 blocked (final), 2 left to the direct pass.
    s.applyBatchPhase({ ok: 5, failedByType: { Blocked: 1 }, retriedByType: {}, finished: 6, toDirect: 2 });
    const done = () => s.snapshot('running').ok + s.snapshot('running').failed;
    const seen = [done()];
    s.dispatched({ position: 4, index: 4, summary: 'row 4' });
    seen.push(done());
    s.dispatched({ position: 5, index: 5, summary: 'row 5' });
    s.finishRow({ position: 4, index: 4, status: 'ok' });
    seen.push(done());
    s.finishRow({ position: 5, index: 5, status: 'failed', errorType: 'Retryable' });
    seen.push(done());
    expect(seen).toEqual([8, 8, 9, 10]);
    expect(s.snapshot('running')).toMatchObject({ total: 10, ok: 8, failed: 2, failedByType: { Blocked: 1, Retryable: 1 }, finished: 8 });
  });

  it("the phase's decision to leave its final refusals crosses continue-as-new; a phase recorded before it leaves nothing", () => {
    const s = planned();
    s.applyBatchPhase({ ok: 1, failedByType: {}, retriedByType: {}, finished: 1, directPhase: 'a1b2c3d4' });
    expect(RunState.resume('run-b', s.carry(null), () => true).batchDirectPhase).toBe('a1b2c3d4');
    const old = planned();
    old.applyBatchPhase({ ok: 1, failedByType: {}, retriedByType: {}, finished: 1 });
    expect(old.batchDirectPhase).toBeUndefined();
  });
});

describe('batchCallsBefore', () => {
  it("counts a batch's call for the same request, nothing else", () => {
    const failed = { status: 'failed', digest: 'd1', info: { batchId: 'batch_1', batchPhase: 'p' } };
    expect(batchCallsBefore(failed, 'd1')).toBe(1);
    expect(batchCallsBefore({ ...failed, attempts: 2 }, 'd1')).toBe(2);
    expect(batchCallsBefore(failed, 'd2')).toBe(0);
    expect(batchCallsBefore({ ...failed, info: { batchPhase: 'p' } }, 'd1')).toBe(0);
    expect(batchCallsBefore({ ...failed, status: 'ok' }, 'd1')).toBe(0);
    expect(batchCallsBefore(undefined, 'd1')).toBe(0);
  });
});

describe('batch request keys', () => {
  it("name a row, or a row's k-th call, and read back", () => {
    expect(parseBatchRequestKey(batchRequestKey(42))).toEqual({ index: 42 });
    expect(parseBatchRequestKey(batchRequestKey(7, 2))).toEqual({ index: 7, call: 2 });
    expect(parseBatchRequestKey('row-x')).toBeUndefined();
  });
});
