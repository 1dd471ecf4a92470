import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ProgressSnapshot, RetrySelection, RowDone } from '../lib/shared/types';

/** Live counts of a dataset run (the CLI's progress bar and `status` read it). */
export const progressQuery = defineQuery<ProgressSnapshot>('progress');

/**
 * Sent from a row child's finally to the dataset workflow's id (so it reaches the current run), by
 * the children that outlive the run that started them (see reportBySignal).
 */
export const rowDoneSignal = defineSignal<[RowDone]>('rowDone');

/**
 * Sent by a dataset run to its row children still running when it continues as new (or to a child it
 * finds already running): from then on the child reports by rowDone signal, because the run that
 * started it, and would have seen it complete, is gone.
 */
export const reportBySignal = defineSignal('reportBySignal');

/** Stop dispatching rows (rows in flight finish). */
export const pauseSignal = defineSignal<[{ reason?: string }]>('pause');

/** Dispatch again after a pause (also lifts a quota pause). */
export const resumeSignal = defineSignal('resume');

/** Sets the run's budget (--max-cost, USD); a budget pause lifts when the spend is below it. */
export const budgetSignal = defineSignal<[{ maxCostUsd: number }]>('budget');

/** Run failed rows again while the run is open; returns how many rows the selection matches. */
export const retryRowsUpdate = defineUpdate<number, [RetrySelection]>('retryRows');
