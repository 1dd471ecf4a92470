import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  executeChild,
  getExternalWorkflowHandle,
  isCancellation,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { BatchActivities, BatchPlanningActivities } from '../activities/batch';
import {
  BATCH_FINAL_ERROR_TYPES,
  type BatchJobResult,
  type BatchJobSpec,
  type BatchJobView,
  type BatchPhaseOutcome,
  type BatchPhaseView,
  type BatchSettings,
  type BatchStatus,
} from '../lib/shared/batch';
import { providerQueue } from '../lib/shared/constants';
import { ErrorTypes, NON_RETRYABLE_ERROR_TYPES } from '../lib/shared/errorTypes';
import type { DatasetWorkflowInput } from '../lib/shared/types';
import { batchJobQuery, batchJobsQuery, batchJobUpdateSignal } from './batchMessages';
import { PATCH } from './patches';

// Provider batch jobs (`atelier edit --batch`). The dataset workflow runs a batch phase before its
// direct pass: it groups the rows that need a call into jobs (manifests in the run's storage) and
// runs one child workflow per job. A job child submits (build + upload + create, recorded in its
// history before it waits), then waits on durable timers with a growing interval between polls (no
// worker slot is held while it waits, for hours if need be), then collects: every answered row is
// committed through the ledger, every other row recorded failed with the provider's reason. What
// the batch did not answer goes down the direct path afterwards (`--batch-fallback direct`) or stays
// failed (`fail`). Cancelling the run cancels the provider's batch.

const DEFAULT_POLL_INITIAL_MS = 30_000;
const DEFAULT_POLL_MAX_MS = 10 * 60_000;
/** After a cancel, how long a job waits for the provider to finish cancelling before it collects. */
const CANCEL_COLLECT_WAIT_MS = 15 * 60_000;

export interface BatchJobWorkflowInput {
  spec: BatchJobSpec;
  pollInitialMs?: number;
  pollMaxMs?: number;
}

/** The job's activities, on its provider's queue (they need the provider's key). */
function jobActivities(spec: BatchJobSpec) {
  const common = {
    taskQueue: providerQueue(spec.backend),
    retry: {
      initialInterval: 2_000,
      backoffCoefficient: 2,
      maximumInterval: 300_000,
      maximumAttempts: 12,
      nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES,
    },
  };
  // Building a 200 MB input or collecting 50,000 answers takes a while; they heartbeat.
  const long = proxyActivities<BatchActivities>({ ...common, startToCloseTimeout: '2 hours', heartbeatTimeout: '1 minute' });
  const short = proxyActivities<BatchActivities>({ ...common, startToCloseTimeout: '2 minutes' });
  return {
    submitBatchJob: long.submitBatchJob,
    collectBatchJob: long.collectBatchJob,
    failBatchJob: long.failBatchJob,
    pollBatchJob: short.pollBatchJob,
    cancelBatchJob: short.cancelBatchJob,
  };
}

function jobDetails(view: BatchJobView): string {
  const s = view.status;
  const counts = s?.total !== undefined ? ` (${s.completed ?? 0} done, ${s.failed ?? 0} failed of ${s.total})` : '';
  return [
    `**batch job ${view.jobId}**: ${view.phase}`,
    '',
    `- rows: ${view.rows}`,
    ...(view.batchId ? [`- provider batch: ${view.batchId}`] : []),
    ...(s ? [`- provider status: ${s.providerStatus}${counts}`] : []),
  ].join('\n');
}

/** The batch phase as a Markdown table for the run's page. */
function phaseDetails(runId: string, view: BatchPhaseView): string {
  const rows = view.jobs.map((j) => {
    const s = j.status;
    const counts = s?.total !== undefined ? `${s.completed ?? 0} / ${s.failed ?? 0} / ${s.total}` : '';
    return `| ${j.jobId.slice(j.jobId.lastIndexOf('#') + 1)} | ${j.rows} | ${j.batchId ?? ''} | ${j.phase} | ${s?.providerStatus ?? ''} | ${counts} |`;
  });
  return [
    `**${runId}**: batch phase`,
    '',
    '| job | rows | provider batch | job state | provider status | done / failed / total |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows,
    ...(view.multiTurnDirect ? ['', `${view.multiTurnDirect} multi-turn rows go down the direct path (a batch cannot chain turns).`] : []),
    ...(view.multiTurnRefused ? ['', `${view.multiTurnRefused} multi-turn rows refused (--batch-fallback fail).`] : []),
  ].join('\n');
}

/** The error class and message of a failed activity. */
function failureOf(err: unknown): { errorType: string; error: string } {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  if (cause instanceof ApplicationFailure) return { errorType: cause.type ?? 'Error', error: cause.message };
  return { errorType: ErrorTypes.retryable, error: (cause as Error)?.message ?? String(cause) };
}

/** One provider batch: submit, wait (durable timers, growing interval), collect. */
export async function batchJobWorkflow(input: BatchJobWorkflowInput): Promise<BatchJobResult> {
  const { spec } = input;
  const acts = jobActivities(spec);
  let view: BatchJobView = { jobId: spec.jobId, rows: spec.rows, phase: 'submitting' };
  setHandler(batchJobQuery, () => view);
  const parentId = workflowInfo().parent?.workflowId;
  const report = async (next: BatchJobView, tellParent = true): Promise<void> => {
    view = next;
    setCurrentDetails(jobDetails(view));
    // Awaited: the server drops a signal whose sender closed before delivery. A run that is gone
    // cannot be told, and that is no reason to fail the job.
    if (tellParent && parentId)
      await getExternalWorkflowHandle(parentId)
        .signal(batchJobUpdateSignal, view)
        .catch(() => undefined);
  };
  setCurrentDetails(jobDetails(view));

  let batchId: string | undefined;
  try {
    let submission;
    try {
      submission = await acts.submitBatchJob(spec);
    } catch (err) {
      if (isCancellation(err)) throw err;
      // The provider refused the batch itself (bad input file, unknown model): every row of the job
      // gets the reason; the fallback decides what happens to them next.
      const { errorType, error } = failureOf(err);
      const result = await acts.failBatchJob({ spec, errorType, error: `the batch could not be created: ${error}` });
      await report({ ...view, phase: 'failed', result });
      return result;
    }
    batchId = submission.batchId;
    if (!batchId) {
      const result: BatchJobResult = {
        jobId: spec.jobId,
        ok: submission.alreadyDone,
        failedByType: {},
        inputErrors: submission.inputErrors,
        leftOver: submission.leftOver,
      };
      await report({ ...view, phase: 'done', result });
      return result;
    }
    await report({ ...view, phase: 'waiting', batchId });

    let delay = input.pollInitialMs ?? DEFAULT_POLL_INITIAL_MS;
    const maxDelay = input.pollMaxMs ?? DEFAULT_POLL_MAX_MS;
    let last: BatchStatus | undefined;
    for (;;) {
      const status = await acts.pollBatchJob({ backend: spec.backend, batchId });
      const changed =
        !last || last.providerStatus !== status.providerStatus || last.completed !== status.completed || last.failed !== status.failed;
      last = status;
      if (changed) await report({ ...view, status });
      if (status.terminal) break;
      // A durable timer: no worker holds anything while the provider works.
      await sleep(delay);
      delay = Math.min(maxDelay, delay * 2);
    }
    await report({ ...view, phase: 'collecting' }, false);
    const result = await acts.collectBatchJob({ spec, batchId });
    result.ok += submission.alreadyDone;
    await report({ ...view, phase: 'done', result });
    return result;
  } catch (err) {
    if (isCancellation(err)) {
      // The run was cancelled: cancel the provider's batch (found by its tag if its id was never
      // recorded), so nothing more is billed.
      await CancellationScope.nonCancellable(async () => {
        const cancelled = await acts.cancelBatchJob({ spec, ...(batchId ? { batchId } : {}) }).catch(() => undefined);
        const id = cancelled?.batchId ?? batchId;
        let status: BatchStatus | undefined = cancelled?.providerStatus
          ? { ...(view.status ?? { terminal: true }), providerStatus: cancelled.providerStatus }
          : view.status;
        let result: BatchJobResult | undefined;
        if (id) {
          // Answers the batch produced before the cancel are paid for: wait out its cancelling
          // (the provider finishes the requests in flight; bounded here) and commit them, so a
          // re-run does not pay for those rows again.
          let delay = 1_000;
          for (let waited = 0; waited < CANCEL_COLLECT_WAIT_MS; waited += delay, delay = Math.min(delay * 2, 60_000)) {
            status = (await acts.pollBatchJob({ backend: spec.backend, batchId: id }).catch(() => undefined)) ?? status;
            if (!status || status.terminal) break;
            await sleep(delay);
          }
          if (status?.terminal) result = await acts.collectBatchJob({ spec, batchId: id }).catch(() => undefined);
        }
        await report({
          ...view,
          phase: 'cancelled',
          ...(id ? { batchId: id } : {}),
          ...(status ? { status } : {}),
          ...(result ? { result } : {}),
        });
      });
    }
    throw err;
  }
}

const { planBatchJobs } = proxyActivities<BatchPlanningActivities>({
  startToCloseTimeout: '30 minutes',
  retry: { maximumAttempts: 5 },
});

/**
 * The run's batch phase: its first execution's run id (short), the same in every execution after a
 * continue-as-new, so the direct pass can tell the rows this phase's batches failed.
 */
function batchPhaseId(): string {
  return workflowInfo().firstExecutionRunId.slice(0, 8);
}

/** Job child ids: `<runId>/batch/<job>`, deterministic, so a re-run finds a job still running. */
function jobWorkflowId(runId: string, jobId: string): string {
  return `${runId}/batch/${jobId.slice(jobId.lastIndexOf('#') + 1)}`;
}

/**
 * The batch phase of a dataset run (first execution only): rounds of jobs until every row that
 * needs a call has been through a batch (a round's left-overs, rows over a provider's file limit,
 * make the next round). Returns what the jobs did, for the run's counts.
 */
export async function runBatchPhase(input: DatasetWorkflowInput, batch: BatchSettings): Promise<BatchPhaseOutcome> {
  const view: BatchPhaseView = { jobs: [], multiTurnDirect: 0, multiTurnRefused: 0 };
  const outcome: BatchPhaseOutcome = { ok: 0, failedByType: {}, retriedByType: {}, finished: 0 };
  // With the direct fallback, only final refusals finish a row here; the others are the direct
  // pass's to finish (recorded histories counted them failed, then took them back: see PATCH).
  const directTakesOver = batch.fallback === 'direct' && patched(PATCH.batchFallbackFinal);
  const fail = (type: string, n: number) => {
    if (n <= 0) return;
    if (directTakesOver && !BATCH_FINAL_ERROR_TYPES.includes(type)) {
      outcome.toDirect = (outcome.toDirect ?? 0) + n;
      return;
    }
    outcome.failedByType[type] = (outcome.failedByType[type] ?? 0) + n;
    outcome.finished += n;
  };
  setHandler(batchJobsQuery, () => view);
  // The run's page in the Temporal UI shows the jobs while they run (the row table comes back after).
  const redraw = () => setCurrentDetails(phaseDetails(input.runId, view));
  setHandler(batchJobUpdateSignal, (job) => {
    const k = view.jobs.findIndex((j) => j.jobId === job.jobId);
    if (k >= 0) view.jobs[k] = job;
    redraw();
  });
  const backend = input.backend as BatchJobSpec['backend'];
  // Rows a batch of this phase failed are not batched again; a later run of the same command is a
  // new phase and batches them again.
  const phaseId = batchPhaseId();
  if (directTakesOver) outcome.directPhase = phaseId;
  for (let round = 0; ; round++) {
    const plan = await planBatchJobs({
      runId: input.runId,
      outputDir: input.outputDir,
      ...(input.filterRows ? { filterRows: input.filterRows } : {}),
      backend,
      phaseId,
      round,
      fallback: batch.fallback,
      ...(batch.maxRowsPerJob ? { maxRowsPerJob: batch.maxRowsPerJob } : {}),
      model: input.model,
      numImages: input.numImages,
    });
    // Rows that counted as failed from an earlier run are in flight again.
    for (const [type, n] of Object.entries(plan.retried)) outcome.retriedByType[type] = (outcome.retriedByType[type] ?? 0) + n;
    if (round === 0) {
      view.multiTurnDirect = plan.multiTurnDirect;
      view.multiTurnRefused = plan.multiTurnRefused;
      fail(ErrorTypes.inputError, plan.multiTurnRefused);
    }
    if (plan.jobs.length === 0) break;
    view.jobs.push(...plan.jobs.map((j) => ({ jobId: j.jobId, rows: j.rows, phase: 'submitting' as const })));
    redraw();
    const results = await Promise.all(
      plan.jobs.map((job) => {
        const spec: BatchJobSpec = {
          runId: input.runId,
          outputDir: input.outputDir,
          jobId: job.jobId,
          phaseId,
          backend,
          model: input.model,
          params: input.params,
          numImages: input.numImages,
          encoding: input.encoding,
          imageCacheDir: input.imageCacheDir!,
          ...(input.download ? { download: input.download } : {}),
          rows: job.rows,
          fallback: batch.fallback,
        };
        return executeChild(batchJobWorkflow, {
          workflowId: jobWorkflowId(input.runId, job.jobId),
          args: [
            {
              spec,
              ...(batch.pollInitialMs ? { pollInitialMs: batch.pollInitialMs } : {}),
              ...(batch.pollMaxMs ? { pollMaxMs: batch.pollMaxMs } : {}),
            },
          ],
          staticSummary: `batch job ${job.jobId}: ${job.rows} rows`,
          // Cancelling or terminating the run cancels the job, which cancels the provider's batch.
          parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
          retry: { maximumAttempts: 1 },
        });
      }),
    );
    for (const r of results) {
      outcome.ok += r.ok;
      outcome.finished += r.ok;
      fail(ErrorTypes.inputError, r.inputErrors);
      for (const [type, n] of Object.entries(r.failedByType)) fail(type, n);
      if (r.costUsd !== undefined) outcome.costUsd = Math.round(((outcome.costUsd ?? 0) + r.costUsd) * 1e6) / 1e6;
    }
    if (results.every((r) => r.leftOver === 0)) break;
  }
  return outcome;
}
