import { defineQuery } from '@temporalio/workflow';
import type { ProgressSnapshot } from '../lib/types';

/** Live counts of a dataset run (the CLI's progress bar polls it). */
export const progressQuery = defineQuery<ProgressSnapshot>('progress');
