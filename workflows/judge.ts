import { ActivityFailure, ApplicationFailure, continueAsNew, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { JudgeActivities, JudgeListActivities, JudgeRowsPage } from '../activities/judge/activities';
import type { OrchestrationActivities } from '../activities/orchestration';
import { ErrorTypes, NON_RETRYABLE_ERROR_TYPES } from '../lib/shared/errorTypes';

// `atelier judge`: scores a run's done rows with a vision-language model. A workflow of its own
// (id `<run-id>/judge`), separate from the run's: judging never holds up or changes the run, and it
// can be started, stopped and started again at any time; rows already scored for their current
// output are skipped. The calls go to the judge's own task queue, so its rate limit (--rpm) and
// concurrency are set apart from the image models'. A sliding window of rows is in flight; the
// workflow continues as new with its cursor and totals when its history grows.

export interface JudgeWorkflowInput {
  /** The run whose rows are judged (for messages). */
  runId: string;
  outputDir: string;
  model: string;
  /** Only these row positions (--filter-rows syntax). */
  rows?: string;
  /** Score again rows this model already scored. */
  rescore?: boolean;
  /** Rows judged at once (default 8). */
  window?: number;
  maxAttempts?: number;
  /** The run's results table (--output-csv), rewritten with the scores at the end. */
  outputCsv?: string;
  instructionEnhanced?: boolean;
  /** Carried across continue-as-new. */
  cursor?: number;
  totals?: JudgeSummary;
}

export interface JudgeSummary {
  runId: string;
  model: string;
  scored: number;
  /** Rows this model had scored already (a judge run started again). */
  kept: number;
  failed: number;
  /** The first few failures, for the message. */
  failures: Array<{ index: number; error: string }>;
  /** Sum of the overall scores of rows scored or kept (mean = sum / (scored + kept)). */
  overallSum: number;
  costUsd: number;
  costUnknownRows: number;
}

const PAGE = 200;
const MAX_FAILURES_SHOWN = 5;
const MAX_EVENTS = 8000;

const { listJudgeRows } = proxyActivities<JudgeListActivities>({ startToCloseTimeout: '5 minutes', retry: { maximumAttempts: 10 } });
const { writeResults } = proxyActivities<OrchestrationActivities>({
  startToCloseTimeout: '30 minutes',
  // As the dataset workflow's: a worker that dies mid-write is noticed in minutes, not after 30.
  heartbeatTimeout: '2 minutes',
  retry: { maximumAttempts: 5 },
});

export async function judgeWorkflow(input: JudgeWorkflowInput): Promise<JudgeSummary> {
  const { judgeRow } = proxyActivities<JudgeActivities>({
    taskQueue: 'judge',
    startToCloseTimeout: '5 minutes',
    retry: {
      initialInterval: '2 seconds',
      backoffCoefficient: 2,
      maximumInterval: '1 minute',
      maximumAttempts: input.maxAttempts ?? 5,
      nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES,
    },
  });
  const totals: JudgeSummary = input.totals ?? {
    runId: input.runId,
    model: input.model,
    scored: 0,
    kept: 0,
    failed: 0,
    failures: [],
    overallSum: 0,
    costUsd: 0,
    costUnknownRows: 0,
  };
  let cursor: number | null = input.cursor ?? 0;
  // A judge model that refuses the request itself (unknown model, a rejected parameter, no access:
  // a ConfigError) would refuse every row: the judge stops with the provider's reason instead.
  let refusal: string | undefined;
  while (cursor !== null && refusal === undefined) {
    const page: JudgeRowsPage = await listJudgeRows({
      outputDir: input.outputDir,
      cursor,
      limit: PAGE,
      model: input.model,
      ...(input.rows ? { rows: input.rows } : {}),
      ...(input.rescore ? { rescore: true } : {}),
    });
    totals.kept += page.kept;
    totals.overallSum += page.keptOverallSum;
    const queue = [...page.rows];
    const lane = async (): Promise<void> => {
      for (let row = queue.shift(); row && refusal === undefined; row = queue.shift()) {
        try {
          const result = await judgeRow({
            outputDir: input.outputDir,
            index: row.index,
            position: row.position,
            model: input.model,
            ...(input.rescore ? { rescore: true } : {}),
          });
          if (result.status === 'scored') {
            totals.scored += 1;
            if (result.costUsd === undefined) totals.costUnknownRows += 1;
            else totals.costUsd += result.costUsd;
          } else if (result.status === 'kept') totals.kept += 1;
          if (result.status !== 'not-done') totals.overallSum += result.overall ?? 0;
        } catch (err) {
          // One row's failure never stops the others; the summary names it.
          totals.failed += 1;
          const cause = err instanceof ActivityFailure && err.cause instanceof ApplicationFailure ? err.cause : undefined;
          // No patched() marker: before this change the judge activity never failed with a ConfigError
          // (the client classified every error as Retryable, Blocked, InvalidRequest or QuotaExhausted),
          // so no recorded history reaches this branch and its commands are unchanged for all of them.
          if (cause?.type === ErrorTypes.configError) refusal ??= cause.message;
          if (totals.failures.length < MAX_FAILURES_SHOWN)
            totals.failures.push({
              index: row.index,
              error: cause ? `${cause.type ?? 'Error'}: ${cause.message}` : (err as Error).message,
            });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(input.window ?? 8, queue.length) }, lane));
    if (refusal !== undefined) break;
    cursor = page.nextCursor;
    if (cursor !== null && (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > MAX_EVENTS)) {
      await continueAsNew<typeof judgeWorkflow>({ ...input, cursor, totals });
    }
  }
  if (refusal !== undefined) {
    throw ApplicationFailure.nonRetryable(`judging stopped after ${totals.failed} row(s): ${refusal}`, ErrorTypes.configError);
  }
  // The results tables carry the scores from now on.
  await writeResults({
    runId: input.runId,
    outputDir: input.outputDir,
    ...(input.outputCsv ? { outputCsv: input.outputCsv } : {}),
    ...(input.instructionEnhanced ? { instructionEnhanced: true } : {}),
  });
  return totals;
}
