import type { BatchPhaseOutcome } from '../../lib/shared/batch';
import { ErrorTypes, pauseReason } from '../../lib/shared/errorTypes';
import type { CarriedState, PauseState, PlanRunResult, ProgressSnapshot, RetrySelection, RowDone, RowRef } from '../../lib/shared/types';
import { formatDuration, RateWindow } from '../../lib/shared/eta';

/** Where a dataset run is: planning its rows, dispatching them, writing the results table, done. */
export type RunPhase = 'planning' | 'running' | 'writing-results' | 'done';

/** Pause, resume and budget requests that arrived while the run was still planning. */
export interface EarlyRequests {
  pause?: PauseState | null;
  maxCostUsd?: number;
}

/**
 * The patched branches RunState asks about before taking them; the workflow answers each with its
 * `patched()` marker, so histories recorded before the branch existed replay unchanged.
 * - `budgetPause`: --max-cost pauses the run at its budget.
 * - `budgetReserve`: under --max-cost, a row starts only while the spend plus the rows in flight
 *   (at the estimated cost of a row) stays under the budget.
 * - `unreachablePause`: consecutive rows failing to reach the provider pause the run.
 */
export type RunBranch = 'budgetPause' | 'budgetReserve' | 'unreachablePause';

/**
 * Consecutive rows (across the window, in the order they report) whose calls could not reach the
 * provider before the run pauses: enough that one flaky connection does not stop a run, few enough
 * that a dead endpoint does not fail the dataset.
 */
export const UNREACHABLE_ROWS = 5;

/** A row's failure is "could not connect to the provider" (the adapters' `connection error: ...`). */
export function isConnectionFailure(done: RowDone): boolean {
  return done.status === 'failed' && done.errorType === ErrorTypes.retryable && /\bconnection error\b/i.test(done.error ?? '');
}

/** Search attribute counts are upserted at most this often (each upsert is a history event). */
const SEARCH_UPSERT_MS = 3000;

function sum(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/**
 * The bookkeeping of one dataset run, with no Temporal in it: counts, the rows in flight, rows
 * deferred by a quota or storage pause, the pause itself, the budget and the queued retry passes.
 * The workflow feeds it events (a row dispatched, a row's report, a signal) and reads decisions
 * back (may I dispatch? is the run over?); the unit tests drive it the same way without a server.
 *
 * `allowed` is asked before a patched branch is taken (RunBranch): the workflow answers with a
 * `patched()` marker, so histories recorded before the branch replay unchanged.
 */
export class RunState {
  readonly inFlight: Set<number>;
  private lastSearchUpsert = 0;
  private lastSearchUpsertAt = Number.NEGATIVE_INFINITY;
  /** One failed row's reason per failure class, for the UI (this execution's; not carried). */
  private readonly failureExamples = new Map<string, string>();
  /** Finished rows over the last minute (workflow time), for the UI's rate and ETA. */
  private readonly pace = new RateWindow();

  private constructor(
    readonly runId: string,
    private readonly carried: CarriedState,
    private readonly allowed: (branch: RunBranch) => boolean,
  ) {
    this.inFlight = new Set(carried.inFlight);
  }

  /** The state a continued run resumes from. */
  static resume(runId: string, carried: CarriedState, allowed: (branch: RunBranch) => boolean): RunState {
    return new RunState(runId, carried, allowed);
  }

  /** The state of a run that has just planned its rows. */
  static planned(
    runId: string,
    plan: PlanRunResult,
    startedAt: string,
    retryOnly: RetrySelection | undefined,
    allowed: (branch: RunBranch) => boolean,
  ): RunState {
    return new RunState(
      runId,
      {
        plan: { totalRows: plan.totalRows, selectedRows: plan.selectedRows },
        cursor: 0,
        pass: retryOnly ?? 'main',
        retryQueue: [],
        inFlight: [],
        deferred: [],
        counts: { ok: plan.alreadyOk, failedByType: plan.failedByType, finished: 0 },
        paused: null,
        startedAt,
        continuedAsNew: 0,
        ...(plan.input.maxCostUsd !== undefined ? { maxCostUsd: plan.input.maxCostUsd } : {}),
        ...(plan.rowCostEstimateUsd !== undefined ? { rowCostEstimateUsd: plan.rowCostEstimateUsd } : {}),
      },
      allowed,
    );
  }

  /** A progress snapshot before the run has planned (nothing counted yet). */
  static planningSnapshot(runId: string, startedAt: string): ProgressSnapshot {
    return {
      runId,
      phase: 'planning',
      total: 0,
      ok: 0,
      failed: 0,
      failedByType: {},
      inFlight: 0,
      deferred: 0,
      pending: 0,
      paused: null,
      finished: 0,
      startedAt,
      continuedAsNew: 0,
      retryPassesQueued: 0,
    };
  }

  get paused(): PauseState | null {
    return this.carried.paused;
  }

  get selectedRows(): number {
    return this.carried.plan.selectedRows;
  }

  /** Rows finished (either way) since the run started. */
  get finished(): number {
    return this.carried.counts.finished;
  }

  /** Next plan position of the current pass, or null when it is exhausted. */
  get cursor(): number | null {
    return this.carried.cursor;
  }

  set cursor(position: number | null) {
    this.carried.cursor = position;
  }

  /** The --batch phase whose final refusals the main pass leaves (see CarriedState.batchDirectPhase). */
  get batchDirectPhase(): string | undefined {
    return this.carried.batchDirectPhase;
  }

  /** The pass being dispatched: the main pass or a retry selection. */
  get pass(): RetrySelection | 'main' {
    return this.carried.pass;
  }

  get deferredCount(): number {
    return this.carried.deferred.length;
  }

  get retryPassesQueued(): number {
    return this.carried.retryQueue.length;
  }

  // ---- dispatching -------------------------------------------------------------------------

  /**
   * What a --batch phase did (workflows/batchJob.ts), before the window starts: rows a batch
   * answered count ok, rows it failed count failed, and rows an earlier run had failed stop
   * counting as failed first (they were in flight again).
   */
  applyBatchPhase(outcome: BatchPhaseOutcome): void {
    const c = this.carried.counts;
    for (const [type, n] of Object.entries(outcome.retriedByType)) c.failedByType[type] = Math.max(0, (c.failedByType[type] ?? 0) - n);
    for (const [type, n] of Object.entries(outcome.failedByType)) c.failedByType[type] = (c.failedByType[type] ?? 0) + n;
    c.ok += outcome.ok;
    c.finished += outcome.finished;
    if (outcome.directPhase) this.carried.batchDirectPhase = outcome.directPhase;
    if (outcome.costUsd !== undefined) c.spentUsd = Math.round(((c.spentUsd ?? 0) + outcome.costUsd) * 1e6) / 1e6;
  }

  /** A row leaves the pending set for a child. A row failed before stops counting as failed. */
  dispatched(row: RowRef): void {
    if (row.previousErrorType) {
      const n = (this.carried.counts.failedByType[row.previousErrorType] ?? 1) - 1;
      this.carried.counts.failedByType[row.previousErrorType] = Math.max(0, n);
    }
    this.inFlight.add(row.index);
  }

  /** A deferred row to run again (the pause has lifted), first in line before new rows. */
  takeDeferred(): RowRef | undefined {
    return this.carried.deferred.shift();
  }

  /** The next queued retry pass becomes the current pass, from the plan's start; false if none. */
  startQueuedPass(): boolean {
    const queued = this.carried.retryQueue.shift();
    if (!queued) return false;
    this.carried.pass = queued;
    this.carried.cursor = 0;
    return true;
  }

  queueRetry(selection: RetrySelection): void {
    this.carried.retryQueue.push(selection);
  }

  /** May another row start now? */
  hasRoom(window: number): boolean {
    return !this.carried.paused && this.inFlight.size < window && this.budgetHasRoom();
  }

  /**
   * --max-cost: the rows in flight will be paid for too, so another row starts only while the
   * spend plus the in-flight rows at the estimated cost of a row stays under the budget; the
   * overshoot is then at most about one row. A row's cost is the mean of the rows finished with a
   * cost, else the price table's estimate (planning); with neither known, one row at a time.
   */
  private budgetHasRoom(): boolean {
    const c = this.carried;
    if (c.maxCostUsd === undefined || this.inFlight.size === 0) return true;
    if (!this.allowed('budgetReserve')) return true;
    const costed = c.counts.costedRows ?? 0;
    // Histories from before costedRows was counted: their spend has no row count to divide by.
    const perRow = costed > 0 ? (c.counts.spentUsd ?? 0) / costed : (c.counts.spentUsd ?? 0) > 0 ? undefined : c.rowCostEstimateUsd;
    if (perRow === undefined) return false;
    return (c.counts.spentUsd ?? 0) + this.inFlight.size * perRow < c.maxCostUsd;
  }

  /** Nothing in flight, deferred or queued: the run is over once its pass is exhausted. */
  get drained(): boolean {
    return this.inFlight.size === 0 && this.carried.deferred.length === 0 && this.carried.retryQueue.length === 0;
  }

  /** While the pass is exhausted: something new to do (a retry, a deferred row now free) or all ended. */
  get needsAttention(): boolean {
    const c = this.carried;
    return (this.inFlight.size === 0 && c.deferred.length === 0) || c.retryQueue.length > 0 || (!c.paused && c.deferred.length > 0);
  }

  // ---- row reports -------------------------------------------------------------------------

  /**
   * A row's end, whether from its child's completion or its rowDone signal. Only the first report
   * of a row in flight counts; returns false for a report of a row not in flight (twice, or not ours).
   */
  finishRow(done: RowDone): boolean {
    const c = this.carried;
    if (!this.inFlight.delete(done.index)) return false;
    if (done.costUsd !== undefined) {
      c.counts.spentUsd = Math.round(((c.counts.spentUsd ?? 0) + done.costUsd) * 1e6) / 1e6;
      // Rows with a cost, for the mean cost of a row (the budget's reserve for the rows in flight).
      c.counts.costedRows = (c.counts.costedRows ?? 0) + 1;
    }
    this.checkBudget();
    this.checkReachable(done);
    if (done.status === 'ok') c.counts.ok += 1;
    else if (done.status === 'failed') {
      this.countFailed(done.errorType ?? 'Error');
      if (!this.failureExamples.has(done.errorType ?? 'Error'))
        this.failureExamples.set(done.errorType ?? 'Error', `row ${done.index}: ${done.error ?? ''}`);
    } else {
      const why = done.errorType === ErrorTypes.storageError ? 'storage' : 'quota';
      c.deferred.push({ position: done.position, index: done.index, summary: `row ${done.index} (deferred: ${why})` });
      // A store pause is marked so that the store's probe may lift it (data only: no command).
      c.paused ??= {
        reason: pauseReason(done.errorType, done.error),
        ...(done.resetAt ? { until: done.resetAt } : {}),
        ...(why === 'storage' ? { store: true } : {}),
      };
    }
    if (done.status !== 'deferred') c.counts.finished += 1;
    return true;
  }

  /** A row whose child could not be started: failed with that class, out of the window. */
  childStartFailed(index: number, errorType: string): void {
    this.inFlight.delete(index);
    this.countFailed(errorType);
    this.carried.counts.finished += 1;
  }

  private countFailed(type: string): void {
    const byType = this.carried.counts.failedByType;
    byType[type] = (byType[type] ?? 0) + 1;
  }

  // ---- pause, resume, budget ---------------------------------------------------------------

  // Rows failing to connect, one after another: the provider is unreachable (a dead --base-url, a
  // network down), and every further row would fail the same way after its retries. The run
  // pauses instead of burning through the dataset; any other report starts the count again.
  private checkReachable(done: RowDone): void {
    const c = this.carried;
    if (!isConnectionFailure(done)) {
      if (c.unreachableRows) c.unreachableRows = 0;
      return;
    }
    c.unreachableRows = (c.unreachableRows ?? 0) + 1;
    if (c.unreachableRows >= UNREACHABLE_ROWS && !c.paused && this.allowed('unreachablePause')) {
      const why = (done.error ?? '').replace(/\s+/g, ' ').slice(0, 200);
      c.paused = {
        reason: `provider unreachable: ${c.unreachableRows} rows in a row could not connect (row ${done.index}: ${why}); fix the endpoint or the network, then \`atelier resume ${this.runId}\` and \`atelier retry ${this.runId} --failed\``,
        unreachable: true,
      };
    }
  }

  /**
   * The run's own reading or writing (a page of rows, the final tables) failed on its store: the
   * run pauses with that reason, replacing the pause in effect (the caller keeps a pause that must
   * stay: a user's that came while a page was read; at the final tables no row is held back).
   * Returns the pause, which the caller waits to see lifted (by the store's probe or a resume).
   */
  storePause(reason: string): PauseState {
    const pause: PauseState = { reason: reason.slice(0, 300), store: true };
    this.carried.paused = pause;
    return pause;
  }

  pause(reason: string | undefined): void {
    this.carried.paused = { reason: reason ?? 'paused by request' };
  }

  /** Lifts the pause; over the budget a plain resume keeps the budget pause (only a higher budget lifts it). */
  resume(): void {
    if (this.carried.unreachableRows) this.carried.unreachableRows = 0;
    this.carried.paused = this.overBudget() ? { reason: this.budgetReason(), budget: true } : null;
  }

  /** A pause with an end time whose time has come lifts itself (unless another pause replaced it). */
  liftExpired(pause: PauseState): boolean {
    if (this.carried.paused !== pause) return false;
    this.carried.paused = null;
    return true;
  }

  setBudget(maxCostUsd: number): void {
    this.carried.maxCostUsd = maxCostUsd;
    if (this.carried.paused?.budget && !this.overBudget()) this.carried.paused = null;
    this.checkBudget();
  }

  /** Applies pause/resume/budget requests that arrived during planning, in their effect. */
  applyEarly(early: EarlyRequests): void {
    if (early.maxCostUsd !== undefined) this.setBudget(early.maxCostUsd);
    if (early.pause !== undefined) {
      if (early.pause) this.carried.paused = early.pause;
      else this.resume();
    }
  }

  private overBudget(): boolean {
    const c = this.carried;
    return c.maxCostUsd !== undefined && (c.counts.spentUsd ?? 0) >= c.maxCostUsd;
  }

  private budgetReason(): string {
    const c = this.carried;
    return `budget reached: $${(c.counts.spentUsd ?? 0).toFixed(4)} of $${c.maxCostUsd} spent (raise it with \`atelier resume <run-id> --max-cost USD\`)`;
  }

  // --max-cost: the spend reached the budget: stop dispatching (rows in flight finish).
  private checkBudget(): void {
    if (!this.carried.paused && this.overBudget() && this.allowed('budgetPause'))
      this.carried.paused = { reason: this.budgetReason(), budget: true };
  }

  // ---- what others read --------------------------------------------------------------------

  snapshot(phase: RunPhase): ProgressSnapshot {
    const c = this.carried;
    const failed = sum(c.counts.failedByType);
    const total = c.plan.selectedRows;
    const ok = c.counts.ok;
    return {
      runId: this.runId,
      // Writing the final tables, only a store pause holds the run back.
      phase: (phase === 'running' && c.paused) || (phase === 'writing-results' && c.paused?.store) ? 'paused' : phase,
      total,
      ok,
      failed,
      failedByType: { ...c.counts.failedByType },
      inFlight: this.inFlight.size,
      deferred: c.deferred.length,
      pending: Math.max(0, total - ok - failed - this.inFlight.size),
      paused: c.paused,
      finished: c.counts.finished,
      startedAt: c.startedAt,
      continuedAsNew: c.continuedAsNew,
      retryPassesQueued: c.retryQueue.length,
      ...(c.counts.spentUsd !== undefined ? { spentUsd: c.counts.spentUsd } : {}),
      ...(c.maxCostUsd !== undefined ? { maxCostUsd: c.maxCostUsd } : {}),
    };
  }

  /** The run's current details, as markdown for the Temporal UI's run page. */
  details(phase: RunPhase): string {
    const p = this.snapshot(phase);
    const failedRows = Object.entries(p.failedByType)
      .filter(([, n]) => n > 0)
      .map(([type, n]) => `| failed: ${type} | ${n} |`);
    const pause = p.paused ? ` (${p.paused.reason}${p.paused.until ? `, until ${p.paused.until}` : ''})` : '';
    const spent =
      p.spentUsd !== undefined || p.maxCostUsd !== undefined
        ? [`| spent (estimate) | $${(p.spentUsd ?? 0).toFixed(4)}${p.maxCostUsd !== undefined ? ` of $${p.maxCostUsd}` : ''} |`]
        : [];
    // Rate and ETA over the last minute of workflow time (deterministic: Date.now() is the SDK's).
    this.pace.add(Date.now(), p.finished);
    const rate = this.pace.rate();
    const etaSeconds = phase === 'running' && !p.paused ? this.pace.etaSeconds(p.pending + p.inFlight + p.deferred) : undefined;
    const eta = etaSeconds === undefined ? undefined : formatDuration(etaSeconds);
    // One reason per class, on one line each: the markdown table cell would not hold them.
    const examples = [...this.failureExamples].map(
      ([type, text]) =>
        `- **${type}**, e.g. ${text
          .replace(/[\r\n|`]+/g, ' ')
          .replace(/\s+/g, ' ')
          .slice(0, 200)}`,
    );
    return [
      `**${p.runId}**: ${p.phase}${pause}`,
      '',
      '| rows | count |',
      '| --- | --- |',
      `| total | ${p.total} |`,
      `| ok | ${p.ok} |`,
      ...failedRows,
      `| in flight | ${p.inFlight} |`,
      `| pending | ${p.pending} |`,
      ...(p.deferred ? [`| deferred (quota) | ${p.deferred} |`] : []),
      ...(rate !== undefined ? [`| rate (last minute) | ${rate.toFixed(2)} rows/s |`] : []),
      ...(eta !== undefined ? [`| ETA | ${eta} |`] : []),
      ...spent,
      ...(examples.length ? ['', 'Failures:', ...examples] : []),
      '',
      `Retry the failed rows: \`atelier retry ${p.runId} --failed\``,
      `See the rows: \`atelier view ${p.runId}\``,
    ].join('\n');
  }

  /**
   * The counts for the search attributes, or undefined when it is too soon for another upsert
   * (each upsert is a history event).
   */
  searchCounts(force: boolean, nowMs?: number): { total: number; ok: number; failed: number } | undefined {
    const c = this.carried;
    const done = c.counts.finished;
    if (!force) {
      // With a clock: whenever rows finished and a few seconds passed since the last upsert (the
      // UI's counts keep up with the run); without one: every max(50, rows/40) rows, as before.
      const due =
        nowMs !== undefined
          ? done > this.lastSearchUpsert && nowMs - this.lastSearchUpsertAt >= SEARCH_UPSERT_MS
          : done - this.lastSearchUpsert >= Math.max(50, Math.ceil(c.plan.selectedRows / 40));
      if (!due) return undefined;
    }
    this.lastSearchUpsert = done;
    if (nowMs !== undefined) this.lastSearchUpsertAt = nowMs;
    return { total: c.plan.selectedRows, ok: c.counts.ok, failed: sum(c.counts.failedByType) };
  }

  /** What the next run carries across continue-as-new: counts and cursors, the rows in flight. */
  carry(cursor: number | null): CarriedState {
    return { ...this.carried, cursor, inFlight: [...this.inFlight], continuedAsNew: this.carried.continuedAsNew + 1 };
  }
}
