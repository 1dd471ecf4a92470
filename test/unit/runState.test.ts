import { describe, expect, it } from 'vitest';
import type { PlanRunResult, RowRef } from '../../lib/shared/types';
import { RunState, UNREACHABLE_ROWS } from '../../workflows/dataset/runState';
import { STORE_PROBE_MAX_MS, storeProbeDelayMs } from '../../workflows/dataset/storePause';

// The dataset run's bookkeeping without a server: the workflow feeds RunState the same events.

function planned(
  opts: { rows?: number; alreadyOk?: number; failedByType?: Record<string, number>; maxCostUsd?: number; rowCostEstimateUsd?: number } = {},
): RunState {
  const plan = {
    input: { maxCostUsd: opts.maxCostUsd },
    ...(opts.rowCostEstimateUsd !== undefined ? { rowCostEstimateUsd: opts.rowCostEstimateUsd } : {}),
    totalRows: opts.rows ?? 10,
    selectedRows: opts.rows ?? 10,
    alreadyOk: opts.alreadyOk ?? 0,
    failedByType: opts.failedByType ?? {},
  } as unknown as PlanRunResult;
  return RunState.planned('run-1', plan, '2026-11-30T00:00:00.000Z', undefined, () => true);
}

const row = (index: number, previousErrorType?: string): RowRef => ({
  position: index,
  index,
  summary: `row ${index}`,
  ...(previousErrorType ? { previousErrorType } : {}),
});

describe('RunState', () => {
  it('counts rows through the window: dispatched, ok, failed by class, pending', () => {
    const s = planned({ rows: 5 });
    s.dispatched(row(0));
    s.dispatched(row(1));
    expect(s.hasRoom(2)).toBe(false);
    expect(s.finishRow({ position: 0, index: 0, status: 'ok', costUsd: 0.01 })).toBe(true);
    expect(s.finishRow({ position: 1, index: 1, status: 'failed', errorType: 'Blocked', error: 'no' })).toBe(true);
    expect(s.snapshot('running')).toMatchObject({
      total: 5,
      ok: 1,
      failed: 1,
      failedByType: { Blocked: 1 },
      inFlight: 0,
      pending: 3,
      finished: 2,
      spentUsd: 0.01,
    });
    expect(s.hasRoom(2)).toBe(true);
  });

  it('counts only the first report of a row (completion and signal can both arrive)', () => {
    const s = planned();
    s.dispatched(row(3));
    expect(s.finishRow({ position: 3, index: 3, status: 'ok' })).toBe(true);
    expect(s.finishRow({ position: 3, index: 3, status: 'failed', errorType: 'Cancelled' })).toBe(false);
    expect(s.finishRow({ position: 9, index: 9, status: 'ok' })).toBe(false); // never dispatched here
    expect(s.snapshot('running')).toMatchObject({ ok: 1, failed: 0, finished: 1 });
  });

  it('a row retried after a failure stops counting as failed when it is dispatched again', () => {
    const s = planned({ failedByType: { Retryable: 2 } });
    s.dispatched(row(4, 'Retryable'));
    expect(s.snapshot('running').failedByType).toEqual({ Retryable: 1 });
    s.finishRow({ position: 4, index: 4, status: 'ok' });
    expect(s.snapshot('running')).toMatchObject({ ok: 1, failed: 1 });
  });

  it('defers a quota-exhausted row, pauses until the reset, and gives the row back first', () => {
    const s = planned();
    s.dispatched(row(2));
    s.finishRow({
      position: 2,
      index: 2,
      status: 'deferred',
      errorType: 'QuotaExhausted',
      error: 'quota',
      resetAt: '2026-12-01T08:00:00.000Z',
    });
    const snap = s.snapshot('running');
    expect(snap).toMatchObject({ phase: 'paused', deferred: 1, finished: 0, paused: { until: '2026-12-01T08:00:00.000Z' } });
    expect(snap.paused?.reason).toMatch(/provider quota exhausted: quota/);
    expect(s.hasRoom(4)).toBe(false);
    const pause = s.paused!;
    expect(s.liftExpired(pause)).toBe(true);
    expect(s.liftExpired(pause)).toBe(false); // already lifted
    expect(s.takeDeferred()).toMatchObject({ index: 2, position: 2 });
    expect(s.takeDeferred()).toBeUndefined();
  });

  it('does not let an expired timer lift a newer pause', () => {
    const s = planned();
    s.dispatched(row(0));
    s.finishRow({ position: 0, index: 0, status: 'deferred', errorType: 'QuotaExhausted', resetAt: '2026-12-01T08:00:00.000Z' });
    const quotaPause = s.paused!;
    s.pause('by hand');
    expect(s.liftExpired(quotaPause)).toBe(false);
    expect(s.paused?.reason).toBe('by hand');
  });

  it('pauses at the budget; a plain resume keeps the budget pause, a higher budget lifts it', () => {
    const s = planned({ maxCostUsd: 0.05 });
    s.dispatched(row(0));
    s.dispatched(row(1));
    s.finishRow({ position: 0, index: 0, status: 'ok', costUsd: 0.03 });
    expect(s.paused).toBeNull();
    s.finishRow({ position: 1, index: 1, status: 'ok', costUsd: 0.03 });
    expect(s.paused).toMatchObject({ budget: true });
    expect(s.paused?.reason).toMatch(/budget reached: \$0\.0600 of \$0\.05/);
    s.resume();
    expect(s.paused).toMatchObject({ budget: true });
    s.setBudget(1);
    expect(s.paused).toBeNull();
  });

  it('--max-cost reserves the rows in flight: a row starts only while spend + in flight x a row stays under the budget', () => {
    // The price table says $0.10 a row; a $0.30 budget with a window of 8 starts 3 rows, not 8.
    const s = planned({ rows: 20, maxCostUsd: 0.3, rowCostEstimateUsd: 0.1 });
    let next = 0;
    const fill = () => {
      while (s.hasRoom(8)) s.dispatched(row(next++));
    };
    fill();
    expect(s.inFlight.size).toBe(3);
    // Rows report $0.035 each: the mean replaces the table's estimate, so more rows fit.
    s.finishRow({ position: 0, index: 0, status: 'ok', costUsd: 0.035 });
    fill();
    // Another starts while 0.035 + n x 0.035 < 0.30 (n in flight before it): up to 8 in flight.
    expect(s.inFlight.size).toBe(8);
    // Every row in flight finishes: the spend overshoots the budget by less than one row.
    let spent = 0.035;
    while (s.inFlight.size > 0 || !s.paused) {
      const index = [...s.inFlight][0]!;
      s.finishRow({ position: index, index, status: 'ok', costUsd: 0.035 });
      spent += 0.035;
      fill();
      if (s.inFlight.size === 0 && s.paused) break;
    }
    expect(s.paused).toMatchObject({ budget: true });
    expect(spent).toBeGreaterThanOrEqual(0.3);
    expect(spent).toBeLessThanOrEqual(0.3 + 0.035 + 1e-9);
  });

  it('--max-cost with no known price starts one row at a time until a row reports its cost', () => {
    const s = planned({ rows: 5, maxCostUsd: 1 });
    expect(s.hasRoom(4)).toBe(true);
    s.dispatched(row(0));
    expect(s.hasRoom(4)).toBe(false);
    s.finishRow({ position: 0, index: 0, status: 'ok', costUsd: 0.1 });
    s.dispatched(row(1));
    expect(s.hasRoom(4)).toBe(true);
  });

  it('histories from before the reserve start the whole window (the workflow answers no)', () => {
    const plan = {
      input: { maxCostUsd: 0.3 },
      rowCostEstimateUsd: 1,
      totalRows: 9,
      selectedRows: 9,
      alreadyOk: 0,
      failedByType: {},
    } as unknown as PlanRunResult;
    const s = RunState.planned('run-old', plan, '2026-11-30T00:00:00.000Z', undefined, (branch) => branch !== 'budgetReserve');
    for (let i = 0; i < 4; i++) s.dispatched(row(i));
    expect(s.hasRoom(8)).toBe(true);
  });

  it('pauses after consecutive rows fail to connect, naming the reason; other reports reset the count', () => {
    const s = planned({ rows: 20 });
    const refused = (i: number) =>
      s.finishRow({
        position: i,
        index: i,
        status: 'failed',
        errorType: 'Retryable',
        error: 'connection error: cannot reach 127.0.0.1:9 (ECONNREFUSED)',
      });
    for (let i = 0; i < 12; i++) s.dispatched(row(i));
    for (let i = 0; i < UNREACHABLE_ROWS - 1; i++) refused(i);
    s.finishRow({ position: 4, index: 4, status: 'failed', errorType: 'Retryable', error: '503 overloaded' });
    for (let i = 5; i < 5 + UNREACHABLE_ROWS - 1; i++) refused(i);
    expect(s.paused).toBeNull();
    refused(9);
    expect(s.paused).toMatchObject({ unreachable: true });
    expect(s.paused?.reason).toMatch(
      /^provider unreachable: 5 rows in a row could not connect \(row 9: connection error: cannot reach 127\.0\.0\.1:9/,
    );
    expect(s.paused?.reason).toContain('atelier resume run-1');
    expect(s.hasRoom(20)).toBe(false);
    s.resume();
    expect(s.paused).toBeNull();
    refused(10);
    expect(s.paused).toBeNull();
  });

  it('never pauses for an unreachable provider when the history predates it', () => {
    const plan = { input: {}, totalRows: 9, selectedRows: 9, alreadyOk: 0, failedByType: {} } as unknown as PlanRunResult;
    const s = RunState.planned('run-old', plan, '2026-11-30T00:00:00.000Z', undefined, (branch) => branch !== 'unreachablePause');
    for (let i = 0; i < 9; i++) s.dispatched(row(i));
    for (let i = 0; i < 9; i++)
      s.finishRow({ position: i, index: i, status: 'failed', errorType: 'Retryable', error: 'connection error: x' });
    expect(s.paused).toBeNull();
  });

  it('never pauses for the budget when the workflow says the history predates it', () => {
    const plan = { input: { maxCostUsd: 0.01 }, totalRows: 2, selectedRows: 2, alreadyOk: 0, failedByType: {} } as unknown as PlanRunResult;
    const s = RunState.planned('run-old', plan, '2026-11-30T00:00:00.000Z', undefined, () => false);
    s.dispatched(row(0));
    s.finishRow({ position: 0, index: 0, status: 'ok', costUsd: 1 });
    expect(s.paused).toBeNull();
  });

  it('applies pause, resume and budget requests heard while planning', () => {
    const paused = planned();
    paused.applyEarly({ pause: { reason: 'held' } });
    expect(paused.paused).toEqual({ reason: 'held' });
    const resumed = planned();
    resumed.applyEarly({ pause: null, maxCostUsd: 3 });
    expect(resumed.paused).toBeNull();
    expect(resumed.snapshot('running').maxCostUsd).toBe(3);
  });

  it('knows when the run is drained and when a waiting run must look again', () => {
    const s = planned();
    expect(s.drained).toBe(true);
    s.dispatched(row(0));
    expect(s.drained).toBe(false);
    expect(s.needsAttention).toBe(false);
    s.queueRetry({ errorTypes: ['Blocked'] });
    expect(s.needsAttention).toBe(true);
    expect(s.startQueuedPass()).toBe(true);
    expect(s.pass).toEqual({ errorTypes: ['Blocked'] });
    expect(s.cursor).toBe(0);
    expect(s.startQueuedPass()).toBe(false);
    s.finishRow({ position: 0, index: 0, status: 'ok' });
    expect(s.needsAttention).toBe(true);
    expect(s.drained).toBe(true);
  });

  it('a child that could not start counts as failed with its class and leaves the window', () => {
    const s = planned();
    s.dispatched(row(5));
    s.childStartFailed(5, 'ChildStartFailed');
    expect(s.snapshot('running')).toMatchObject({ inFlight: 0, failed: 1, failedByType: { ChildStartFailed: 1 }, finished: 1 });
  });

  it('upserts search attributes every max(50, rows/40) finished rows, or when forced', () => {
    const s = planned({ rows: 4000 });
    for (let i = 0; i < 100; i++) {
      s.dispatched(row(i));
      s.finishRow({ position: i, index: i, status: 'ok' });
      const counts = s.searchCounts(false);
      if (i + 1 === 100) expect(counts).toEqual({ total: 4000, ok: 100, failed: 0 });
      else expect(counts).toBeUndefined();
    }
    expect(s.searchCounts(true)).toEqual({ total: 4000, ok: 100, failed: 0 });
  });

  it('carries counts, cursor and rows in flight across continue-as-new, and resumes from them', () => {
    const s = planned({ rows: 7 });
    s.dispatched(row(0));
    s.dispatched(row(1));
    s.finishRow({ position: 0, index: 0, status: 'ok' });
    const carried = s.carry(2);
    expect(carried).toMatchObject({ cursor: 2, inFlight: [1], continuedAsNew: 1, counts: { ok: 1, finished: 1 } });
    const next = RunState.resume('run-1', carried, () => true);
    expect(next.finishRow({ position: 1, index: 1, status: 'ok' })).toBe(true);
    expect(next.snapshot('running')).toMatchObject({ ok: 2, inFlight: 0, continuedAsNew: 1 });
  });

  it('with a clock, upserts counts whenever rows finished and 3 s passed since the last upsert', () => {
    const s = planned({ rows: 4000 });
    const finish = (i: number) => (s.dispatched(row(i)), s.finishRow({ position: i, index: i, status: 'ok' }));
    finish(0);
    expect(s.searchCounts(false, 1000)).toEqual({ total: 4000, ok: 1, failed: 0 });
    finish(1);
    expect(s.searchCounts(false, 2500)).toBeUndefined(); // too soon
    expect(s.searchCounts(false, 4000)).toEqual({ total: 4000, ok: 2, failed: 0 });
    expect(s.searchCounts(false, 9000)).toBeUndefined(); // nothing new
  });

  it('details name one reason per failure class and the retry and view commands', () => {
    const s = planned({ rows: 3 });
    s.dispatched(row(0));
    s.dispatched(row(1));
    s.finishRow({ position: 0, index: 0, status: 'failed', errorType: 'Blocked', error: '400 refused | by the safety system' });
    s.finishRow({ position: 1, index: 1, status: 'failed', errorType: 'Blocked', error: 'another' });
    const md = s.details('running');
    expect(md).toContain('- **Blocked**, e.g. row 0: 400 refused by the safety system');
    expect(md).not.toContain('another');
    expect(md).toContain('Retry the failed rows: `atelier retry run-1 --failed`');
    expect(md).toContain('See the rows: `atelier view run-1`');
  });

  it('renders the details table for the Temporal UI', () => {
    const s = planned({ rows: 3, maxCostUsd: 2 });
    s.dispatched(row(0));
    s.finishRow({ position: 0, index: 0, status: 'failed', errorType: 'Blocked' });
    const md = s.details('running');
    expect(md).toContain('**run-1**: running');
    expect(md).toContain('| failed: Blocked | 1 |');
    expect(md).toContain('| spent (estimate) | $0.0000 of $2 |');
  });
});

describe('RunState: pauses for the store (workflows/dataset/storePause.ts lifts them)', () => {
  it('a row deferred on the store marks its pause as a store pause; a quota pause is not one', () => {
    const s = planned();
    s.dispatched(row(0));
    s.finishRow({ position: 0, index: 0, status: 'deferred', errorType: 'StorageError', error: 'the bucket b does not exist (s3://b/x)' });
    expect(s.paused).toMatchObject({ store: true, reason: expect.stringContaining('the bucket b does not exist') });
    const q = planned();
    q.dispatched(row(0));
    q.finishRow({ position: 0, index: 0, status: 'deferred', errorType: 'QuotaExhausted', resetAt: '2026-12-01T08:00:00.000Z' });
    expect(q.paused?.store).toBeUndefined();
  });

  it('a user pause is kept when a row then defers on the store (only a resume lifts it)', () => {
    const s = planned();
    s.dispatched(row(0));
    s.pause('paused with `atelier pause`');
    s.finishRow({ position: 0, index: 0, status: 'deferred', errorType: 'StorageError', error: 'down' });
    expect(s.paused).toEqual({ reason: 'paused with `atelier pause`' });
  });

  it('a page or the final tables failing on the store: a store pause, lifted only while it is the one in effect', () => {
    const s = planned();
    const pause = s.storePause('writing the results tables failed: the store refused this worker’s credentials');
    expect(s.snapshot('writing-results')).toMatchObject({ phase: 'paused', paused: { store: true } });
    expect(s.liftExpired(pause)).toBe(true);
    expect(s.snapshot('writing-results').phase).toBe('writing-results');
    const again = s.storePause('reading the next rows failed: down');
    s.pause('by hand');
    expect(s.liftExpired(again)).toBe(false);
    expect(s.paused).toEqual({ reason: 'by hand' });
  });

  it('probes back off from 5 s to one a minute', () => {
    expect(Array.from({ length: 7 }, (_, i) => storeProbeDelayMs(i))).toEqual([5000, 10_000, 20_000, 40_000, 60_000, 60_000, 60_000]);
    expect(storeProbeDelayMs(1000)).toBe(STORE_PROBE_MAX_MS);
  });
});
