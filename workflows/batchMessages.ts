import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { BatchJobView, BatchPhaseView } from '../lib/shared/batch';

// Messages of `--batch` runs, apart from the workflows so the CLI can import them alone.

/** One job's state: its provider status and request counts. */
export const batchJobQuery = defineQuery<BatchJobView>('batchJob');
/** The dataset run's batch phase: every job's state (`atelier status`, the progress bar); null before it starts. */
export const batchJobsQuery = defineQuery<BatchPhaseView | null>('batchJobs');
/** A job child tells its run of a change in its state (a few per job: status changes, counts). */
export const batchJobUpdateSignal = defineSignal<[BatchJobView]>('batchJobUpdate');
