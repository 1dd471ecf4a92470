import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  defineUpdate,
  getExternalWorkflowHandle,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { ModelActivities } from '../activities/editRow';
import type { GpuRowActivities } from '../activities/gpuRow';
import type { OrchestrationActivities } from '../activities/orchestration';
import type { GpuEditRequest, GpuEditResult, GpuUrls, GpuUrlsRequest } from '../lib/gpuContract';
import { providerQueue } from '../lib/shared/constants';
import { AtelierErrorType } from '../lib/shared/searchAttributes';
import { NON_RETRYABLE_ERROR_TYPES, PAUSING_ERROR_TYPES } from '../lib/shared/errorTypes';
import type { ApiBackend, RowDone, RowOutcome, RowTask, RowWorkflowInput } from '../lib/shared/types';
import { failureOf } from './dataset/rowReports';
import { reportBySignal, rowDoneSignal } from './messages';

const { recordRowFailure } = proxyActivities<OrchestrationActivities>({
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 10 },
});

const { prepareGpuRow, commitGpuOutput } = proxyActivities<GpuRowActivities>({
  startToCloseTimeout: '10 minutes',
  retry: { maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES },
});

const { mintGpuUrls } = proxyActivities<GpuRowActivities>({
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 5, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES },
});

/**
 * A GPU worker asks for the URLs of its request's `staged:` references when it uses them, so none
 * is in the history before then (activities/gpuRow.ts). The name is the contract's urlsUpdateName
 * (test/unit/gpuUrlGrant.test.ts keeps the two equal). No patch: a handler is no command, and only
 * requests prepared by this code name staged objects, so no recorded history receives the update.
 */
export const gpuUrlsUpdate = defineUpdate<GpuUrls, [GpuUrlsRequest]>('gpuUrls');

/**
 * The activity the Python GPU workers serve. Its name is the contract's activityName
 * (contracts/gpu-edit.schema.json; test/unit/gpuActivityName.test.ts keeps the two equal).
 */
export interface GpuActivities {
  editImageGpu(request: GpuEditRequest): Promise<GpuEditResult>;
}

/** The model call's retry policy: backoff from the run's settings; final failure classes not retried. */
function modelRetryPolicy(retry: RowWorkflowInput['retry']) {
  return {
    initialInterval: retry.initialIntervalMs,
    backoffCoefficient: 2,
    maximumInterval: retry.maximumIntervalMs,
    maximumAttempts: retry.maxAttempts,
    nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES,
  };
}

/** The row's model work for a cloud API: one activity on the provider's queue. */
async function apiRow(task: RowTask, retry: RowWorkflowInput['retry']): Promise<RowOutcome> {
  const { editRow } = proxyActivities<ModelActivities>({
    // A run that names its endpoint (--base-url) calls only workers configured for it. No patch:
    // the queue changes only for rows whose input has an endpoint, a field no history recorded
    // before it existed has, so every earlier history replays the same commands (and a marker
    // would guard no old branch; test/replay covers the rest).
    taskQueue: providerQueue(task.backend as ApiBackend, task.endpoint),
    // Image models can take minutes; a generous limit avoids double-billing a slow success.
    startToCloseTimeout: '10 minutes',
    // The activity heartbeats while it works, so a dead worker's row is retried within this.
    heartbeatTimeout: retry.heartbeatTimeoutMs ?? 60_000,
    retry: modelRetryPolicy(retry),
  });
  return editRow(task);
}

/** The row's model work on a GPU queue: stage inputs, run each output on the GPU, commit each. */
async function gpuRow(task: RowTask, retry: RowWorkflowInput['retry']): Promise<RowOutcome> {
  const { editImageGpu } = proxyActivities<GpuActivities>({
    taskQueue: task.gpu!.taskQueue,
    startToCloseTimeout: '2 hours',
    heartbeatTimeout: retry.heartbeatTimeoutMs ?? 60_000,
    retry: modelRetryPolicy(retry),
  });
  setHandler(gpuUrlsUpdate, (request) => mintGpuUrls({ task, request }));
  const plan = await prepareGpuRow(task);
  const outcome: RowOutcome = { position: task.position, index: task.index, status: 'ok', outputImages: plan.outputImages };
  if (plan.done) return outcome;
  const commit = (i: number, result: GpuEditResult) =>
    commitGpuOutput({
      task,
      // Which output request i makes (plan.outputs: some were kept from an earlier try; no new commands).
      output: plan.outputs?.[i] ?? plan.firstOutput + i,
      result,
      last: i === plan.requests.length - 1,
      chained: plan.chained,
      attempts: 1,
    });
  let latencyMs = 0;
  if (plan.chained) {
    // Each turn edits the previous turn's output, and is recorded before the next starts.
    for (const [i, request] of plan.requests.entries()) {
      const result = await editImageGpu(request);
      latencyMs += result.latency_ms;
      await commit(i, result);
    }
  } else {
    // Independent outputs (--num-images): sent together, so the worker can batch them.
    const results = await Promise.all(plan.requests.map((request) => editImageGpu(request)));
    latencyMs = Math.max(...results.map((r) => r.latency_ms));
    for (const [i, result] of results.entries()) await commit(i, result);
  }
  return { ...outcome, latencyMs: Math.round(latencyMs) };
}

/** What the model activity put in its final failure's details (editRow's toApplicationFailure). */
function failureDetails(err: unknown): { quotaResetAt?: string | null; attempt?: number | null } | undefined {
  const details = err instanceof ActivityFailure && err.cause instanceof ApplicationFailure ? err.cause.details : undefined;
  return details?.[0] as { quotaResetAt?: string | null; attempt?: number | null } | undefined;
}

/**
 * One dataset row. The model activity runs on the provider's task queue (or a GPU queue) with an
 * explicit retry policy. A row that still fails is recorded in the ledger and the child ends Failed (so
 * `RootWorkflowId='<run>' AND ExecutionStatus='Failed'` lists a run's failed rows).
 *
 * The dataset run that started the child learns its end from the child's own completion (its result
 * or failure), which costs no extra history. A child that outlives that run (the run continued as new
 * while the row was in flight) is told so by a reportBySignal signal; it then reports from a finally,
 * by workflow id, so the report reaches the current run and a failing row never leaks a window slot.
 */
export async function rowWorkflow(input: RowWorkflowInput): Promise<RowOutcome> {
  const { task, retry } = input;
  let mustSignal = false;
  setHandler(reportBySignal, () => void (mustSignal = true));
  let report: RowDone = {
    position: task.position,
    index: task.index,
    status: 'failed',
    errorType: 'Cancelled',
    error: 'the row was cancelled',
  };
  try {
    const outcome = task.backend === 'diffusers' ? await gpuRow(task, retry) : await apiRow(task, retry);
    report = {
      position: task.position,
      index: task.index,
      status: 'ok',
      ...(outcome.costUsd !== undefined ? { costUsd: outcome.costUsd } : {}),
    };
    // The row's page in the Temporal UI says how it ended (details are metadata, not history).
    const cost = outcome.costUsd !== undefined ? `, estimated cost $${outcome.costUsd.toFixed(4)}` : '';
    const latency = outcome.latencyMs !== undefined ? `, ${(outcome.latencyMs / 1000).toFixed(1)} s` : '';
    setCurrentDetails(`**row ${task.index}**: ok, ${(outcome.outputImages ?? []).join(', ')}${cost}${latency}`);
    return outcome;
  } catch (err) {
    if (isCancellation(err)) throw err;
    const { errorType, error } = failureOf(err);
    // A StorageError (disk full, permission denied) can only come from newer workers; histories
    // from before it existed never take this branch with it, so no patch marker is needed.
    if (PAUSING_ERROR_TYPES.includes(errorType)) {
      // Not the row's fault: the dataset workflow pauses and runs the row again later.
      // Returned, not thrown: the child ends Completed and the row is pending, not failed.
      const resetAt = failureDetails(err)?.quotaResetAt ?? undefined;
      report = { position: task.position, index: task.index, status: 'deferred', errorType, error, ...(resetAt ? { resetAt } : {}) };
      return { position: task.position, index: task.index, status: 'failed', errorType, error, ...(resetAt ? { resetAt } : {}) };
    }
    report = { position: task.position, index: task.index, status: 'failed', errorType, error };
    setCurrentDetails(`**row ${task.index}** failed: **${errorType}**\n\n${error}`);
    const attempts = failureDetails(err)?.attempt ?? undefined;
    await recordRowFailure({
      runId: task.runId,
      model: task.model,
      outputDir: task.outputDir,
      position: task.position,
      index: task.index,
      errorType,
      error,
      ...(attempts ? { attempts } : {}),
    });
    if (input.searchAttributes) upsertSearchAttributes([{ key: AtelierErrorType, value: errorType }]);
    throw ApplicationFailure.create({ type: errorType, message: error, nonRetryable: true });
  } finally {
    if (mustSignal) {
      const parentId = workflowInfo().parent?.workflowId ?? task.runId;
      // Awaited: the server drops a signal whose sender has closed before it was delivered.
      // Reported even when the row is cancelled; a dataset workflow that is gone can't be told.
      await CancellationScope.nonCancellable(() => getExternalWorkflowHandle(parentId).signal(rowDoneSignal, report)).catch(
        () => undefined,
      );
    }
  }
}
