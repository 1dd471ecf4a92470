import { ActivityFailure, ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import { NON_RETRYABLE_ERROR_TYPES, type RowOutcome, type RowWorkflowInput } from '../lib/types';
import { providerQueue } from '../lib/constants';
import type { ModelActivities } from '../activities/editRow';
import type { OrchestrationActivities } from '../activities/orchestration';

const { recordRowFailure } = proxyActivities<OrchestrationActivities>({
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 10 },
});

/**
 * One dataset row. The model activity runs on the provider's task queue with an explicit retry
 * policy; a row that still fails is recorded in the ledger and reported, never thrown, so one bad
 * row never disturbs the others.
 */
export async function rowWorkflow(input: RowWorkflowInput): Promise<RowOutcome> {
  const { task, retry } = input;
  const { editRow } = proxyActivities<ModelActivities>({
    taskQueue: providerQueue(task.backend),
    // Image models can take minutes; a generous limit avoids double-billing a slow success.
    startToCloseTimeout: '10 minutes',
    retry: {
      initialInterval: retry.initialIntervalMs,
      backoffCoefficient: 2,
      maximumInterval: retry.maximumIntervalMs,
      maximumAttempts: retry.maxAttempts,
      nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES,
    },
  });
  try {
    return await editRow(task);
  } catch (err) {
    if (!(err instanceof ActivityFailure)) throw err;
    const cause = err.cause;
    const errorType = cause instanceof ApplicationFailure && cause.type ? cause.type : (cause?.name ?? 'Error');
    const error = cause?.message ?? err.message;
    await recordRowFailure({
      runId: task.runId,
      model: task.model,
      outputDir: task.outputDir,
      position: task.position,
      index: task.index,
      errorType,
      error,
    });
    return { position: task.position, index: task.index, status: 'failed', errorType, error };
  }
}
