/**
 * How a row child tells its dataset run that it ended: the whole protocol, in one place.
 *
 * A row goes through these states, seen from the dataset run:
 *
 *   pending ──dispatch──▶ starting ──started──▶ own child ──completion──▶ reported
 *                            │                      │
 *                            │ already running      │ the run continues as new
 *                            ▼                      ▼
 *                        handed over ◀────── reportBySignal sent
 *                            │
 *                            └──rowDone signal (to the dataset workflow id)──▶ reported
 *
 * - An own child (started by this run) reports by its completion: its result or its failure says
 *   how the row ended (`reportOfResult`, `reportOfFailure`), with no extra history events.
 * - A child that outlives the run that started it (continue-as-new, or a run reset) cannot
 *   complete into the new run. Before continuing as new, the run sends each running child a
 *   `reportBySignal` (`handOver`); from then on the child sends `rowDone` from its finally, to the
 *   workflow id, which reaches whichever run is current.
 * - The first report of a row in flight counts (RunState.finishRow); a second is ignored.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancelledFailure,
  ChildWorkflowFailure,
  getExternalWorkflowHandle,
  TerminatedFailure,
  TimeoutFailure,
} from '@temporalio/workflow';
import type { RowDone, RowOutcome, RowRef } from '../../lib/shared/types';
import { ChildErrorTypes, PAUSING_ERROR_TYPES } from '../../lib/shared/errorTypes';
import { reportBySignal } from '../messages';

/** Row children are ids `<runId>/row/<index>`: deterministic, so a re-run finds the same rows. */
export function rowWorkflowId(runId: string, index: number): string {
  return `${runId}/row/${index}`;
}

/** A failed activity's or child's error class and message (its ApplicationFailure's type, if any). */
export function failureOf(err: unknown): { errorType: string; error: string } {
  const cause = err instanceof ActivityFailure || err instanceof ChildWorkflowFailure ? err.cause : err;
  if (cause instanceof ApplicationFailure) return { errorType: cause.type ?? 'Error', error: cause.message };
  return { errorType: (cause as Error)?.name ?? 'Error', error: (cause as Error)?.message ?? String(cause) };
}

/** What a row child's completion says about its row: the same report it would have signalled. */
export function reportOfResult(row: RowRef, outcome: RowOutcome): RowDone {
  const ref = { position: row.position, index: row.index };
  if (outcome.status === 'ok') return { ...ref, status: 'ok', ...(outcome.costUsd !== undefined ? { costUsd: outcome.costUsd } : {}) };
  const error = { errorType: outcome.errorType ?? 'Error', ...(outcome.error ? { error: outcome.error } : {}) };
  // A child returns (rather than fails) with a failure when the provider's quota ran out or the
  // run's storage refused a write: the run pauses.
  if (PAUSING_ERROR_TYPES.includes(outcome.errorType ?? ''))
    return { ...ref, status: 'deferred', ...error, ...(outcome.resetAt ? { resetAt: outcome.resetAt } : {}) };
  return { ...ref, status: 'failed', ...error };
}

/** What a row child's failure says about its row (the child fails with its row's error class). */
export function reportOfFailure(row: RowRef, err: unknown): RowDone {
  const ref = { position: row.position, index: row.index, status: 'failed' as const };
  const cause = err instanceof ChildWorkflowFailure ? err.cause : err;
  // The child ran no code of its own to say why: name the reason the server gave.
  if (cause instanceof CancelledFailure) return { ...ref, errorType: ChildErrorTypes.cancelled, error: 'the row was cancelled' };
  if (cause instanceof TerminatedFailure) return { ...ref, errorType: ChildErrorTypes.terminated, error: 'the row child was terminated' };
  if (cause instanceof TimeoutFailure) return { ...ref, errorType: ChildErrorTypes.timeout, error: 'the row child timed out' };
  return { ...ref, ...failureOf(err) };
}

/**
 * Whether the row's failure was decided by the server, not by the row's own code: the child never
 * wrote it to the ledger, so the run must (or results.csv would show the row as pending).
 */
export function failedOutsideRow(done: RowDone): boolean {
  return done.status === 'failed' && (Object.values(ChildErrorTypes) as string[]).includes(done.errorType ?? '');
}

/**
 * Tells a running row child to report by signal from now on. Resolves false when the child has
 * already ended (the server finds no running execution to signal): its completion is then on its
 * way to this run. Any other failure is not "the child ended" and propagates.
 */
export async function handOver(runId: string, index: number): Promise<boolean> {
  try {
    await getExternalWorkflowHandle(rowWorkflowId(runId, index)).signal(reportBySignal);
    return true;
  } catch (err) {
    if (err instanceof ApplicationFailure && err.type === 'SignalExternalWorkflowExecutionFailed') return false;
    if (err instanceof Error && /not found/i.test(err.message) && !(err instanceof CancelledFailure)) return false;
    throw err;
  }
}
