import { resolve } from 'node:path';
import { JUDGE_QUEUE } from '../activities/judge/activities';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import { UsageError } from '../lib/shared/errors';
import { parseFilterRows } from '../lib/shared/filterRows';
import { findRun } from '../lib/run/runRegistry';
import type { JudgeSummary, judgeWorkflow } from '../workflows/judge';
import { JUDGE_ENV } from '../workers/index';
import { ExitCodes, type CliIO } from './io';
import { resolveRunOutputDir, runIdOf } from './runTarget';
import { openSession, setQueueRateLimit } from './session';

export interface JudgeOptions {
  model: string;
  rpm?: number;
  rows?: string;
  rescore?: boolean;
  window: number;
  maxRetries: number;
  concurrency: number;
  stateDir: string;
  withWorkers?: boolean;
}

/** The workflow id of a run's judge: one at a time per run. */
export function judgeWorkflowId(runId: string): string {
  return `${runId}/judge`;
}

function describeJudge(summary: JudgeSummary): string {
  const rated = summary.scored + summary.kept;
  return [
    `judged with ${summary.model}: scored ${summary.scored}, already scored ${summary.kept}, failed ${summary.failed}`,
    ...(rated
      ? [
          `mean overall score: ${(summary.overallSum / rated).toFixed(2)} of 10 (VIEScore: sqrt(min(instruction following, preservation) x quality))`,
        ]
      : []),
    ...summary.failures.map((f) => `  row ${f.index}: ${f.error}`),
    `judge's estimated cost: $${summary.costUsd.toFixed(4)}${summary.costUnknownRows ? ` + ${summary.costUnknownRows} row(s) of unknown cost` : ''}`,
  ].join('\n');
}

/**
 * `atelier judge <run-id | output-dir> --model M`: scores the run's done rows with a VLM over an
 * OpenAI-compatible chat API (ATELIER_JUDGE_API_KEY / ATELIER_JUDGE_BASE_URL in the workers'
 * environment), on the judge's own task queue; scores go to the run's folder and results tables.
 */
export async function runJudge(target: string, options: JudgeOptions, io: CliIO): Promise<number> {
  if (options.rows !== undefined) {
    try {
      parseFilterRows(options.rows);
    } catch (err) {
      throw new UsageError((err as Error).message.replace('--filter-rows', '--rows'));
    }
  }
  const outputDir = await resolveRunOutputDir(target, options.stateDir);
  const runId = await runIdOf(outputDir);
  const known = await findRun(resolve(options.stateDir), runId);
  const session = await openSession({
    stateDir: options.stateDir,
    withWorkers: options.withWorkers ?? false,
    mayStartServer: true,
    concurrency: options.concurrency,
    ...(options.rpm ? { rateLimitPerSecond: options.rpm / 60 } : {}),
    log: (line) => io.err(line),
  });
  try {
    if (session.workers.length > 0 && !session.workers.some((w) => w.options.taskQueue === JUDGE_QUEUE)) {
      throw new UsageError(
        `${JUDGE_ENV.key} is not set: the judge's key (and ${JUDGE_ENV.baseUrl} for a server other than OpenAI's) must be in the environment of the workers that judge`,
      );
    }
    if (options.rpm && !(await setQueueRateLimit(session, JUDGE_QUEUE, options.rpm / 60)) && session.workers.length === 0) {
      io.err('warning: this server has no task queue rate limits; --rpm holds only for workers started with it');
    }
    const handle = await session.client.workflow.start('judgeWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: judgeWorkflowId(runId),
      workflowIdConflictPolicy: 'USE_EXISTING',
      staticSummary: `judge ${options.model}: ${outputDir}`.slice(0, 200),
      args: [
        {
          runId,
          outputDir,
          model: options.model,
          window: options.window,
          maxAttempts: options.maxRetries + 1,
          ...(options.rows !== undefined ? { rows: options.rows } : {}),
          ...(options.rescore ? { rescore: true } : {}),
          ...(known?.input.outputCsv ? { outputCsv: known.input.outputCsv } : {}),
          ...(known?.input.promptEnhance ? { instructionEnhanced: true } : {}),
        },
      ] as Parameters<typeof judgeWorkflow>,
    });
    io.err(`judging the done rows of ${runId} with ${options.model} (workflow ${handle.workflowId})`);
    const ending = await Promise.race([handle.result().then((summary) => ({ summary })), io.interrupted.then(() => undefined)]);
    if (!ending) {
      io.err(`stopped waiting; the judge goes on while a worker serves it (run the same command again to wait for it)`);
      return ExitCodes.interrupted;
    }
    io.out(describeJudge(ending.summary));
    return ending.summary.failed > 0 ? ExitCodes.rowsFailed : ExitCodes.ok;
  } finally {
    await session.close();
  }
}
