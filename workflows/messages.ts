import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ProgressSnapshot, RetrySelection, RowDone } from '../lib/types';

/** Live counts of a dataset run (the CLI's progress bar and `status` read it). */
export const progressQuery = defineQuery<ProgressSnapshot>('progress');

/** Sent by each row child from its finally, to the dataset workflow's id (so it reaches the current run). */
export const rowDoneSignal = defineSignal<[RowDone]>('rowDone');

/** Stop dispatching rows (rows in flight finish). */
export const pauseSignal = defineSignal<[{ reason?: string }]>('pause');

/** Dispatch again after a pause (also lifts a quota pause). */
export const resumeSignal = defineSignal('resume');

/** Run failed rows again while the run is open; returns how many rows the selection matches. */
export const retryRowsUpdate = defineUpdate<number, [RetrySelection]>('retryRows');
