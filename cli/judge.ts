import { resolve } from 'node:path';
import { ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { ErrorTypes } from '../lib/shared/errorTypes';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import { UsageError } from '../lib/shared/errors';
import { findRun } from '../lib/run/runRegistry';
import type { JudgeSummary, judgeWorkflow } from '../workflows/judge';
import { JUDGE_ENV, JUDGE_QUEUE } from '../lib/shared/constants';
import type { Command } from 'commander';
import { ExitCodes, type CliIO, type CommandContext } from './io';
import { addExamples, addOptions, checkedRows, Opt, type OptionsOf } from './options';
import { MODEL, ROWS, STATE, WORKERS } from './optionGroups';
import { resolveRunOutputDir, runIdOf } from './runTarget';
import { openSession, setQueueRateLimit } from './session';
import { judgeQueues, watchWorkers } from './workerCheck';

export const JUDGE_OPTIONS = {
  model: MODEL.model,
  ...ROWS,
  rescore: Opt.flag('--rescore', 'score again rows this model already scored').group('Row selection:'),
  rpm: WORKERS.rpm,
  window: WORKERS.window.default(8),
  concurrency: WORKERS.concurrency,
  maxRetries: WORKERS.maxRetries,
  ...STATE,
  withWorkers: WORKERS.withWorkers,
};

export type JudgeOptions = OptionsOf<typeof JUDGE_OPTIONS>;

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
  checkedRows(options.rows);
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
  let stopWatching: (() => void) | undefined;
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
    stopWatching = session.workers.length === 0 ? await watchWorkers(session, judgeQueues(), io.err) : undefined;
    const ending = await Promise.race([handle.result().then((summary) => ({ summary })), io.interrupted.then(() => undefined)]).catch(
      (err: unknown) => {
        // The judge model refused the request itself (activities/judge/client.ts): the provider's reason, exit 1.
        if (err instanceof WorkflowFailedError && err.cause instanceof ApplicationFailure && err.cause.type === ErrorTypes.configError)
          throw new UsageError(err.cause.message);
        throw err;
      },
    );
    if (!ending) {
      io.err(`stopped waiting; the judge goes on while a worker serves it (run the same command again to wait for it)`);
      return ExitCodes.interrupted;
    }
    io.out(describeJudge(ending.summary));
    return ending.summary.failed > 0 ? ExitCodes.rowsFailed : ExitCodes.ok;
  } finally {
    stopWatching?.();
    await session.close();
  }
}

export function registerJudge(program: Command, { io, setExit }: CommandContext): void {
  const cmd = program
    .command('judge <run>')
    .description(
      'score the done rows of a run (its id or its output folder) with a vision-language model over an OpenAI-compatible chat API (VIEScore-style: instruction following, preservation, quality, 0-10); key and base URL from ATELIER_JUDGE_API_KEY / ATELIER_JUDGE_BASE_URL',
    );
  addOptions(cmd, JUDGE_OPTIONS).action(async (target: string, opts: JudgeOptions) => setExit(await runJudge(target, opts, io)));
  addExamples(cmd, [
    [
      'ATELIER_JUDGE_API_KEY=sk-... atelier judge out --model gpt-5.6-luna',
      'score every done row of the run in ./out (gpt-4.1 shuts down 2027-01-14)',
    ],
    ['atelier judge atelier-edits-1a2b3c4d5e6f --model gpt-5.6-luna --rows 0:50 --rescore', 'score the first 50 rows again'],
    ['ATELIER_JUDGE_BASE_URL=http://127.0.0.1:8000/v1 atelier judge out --model Qwen/Qwen2.5-VL-7B-Instruct', 'a VLM on your own server'],
  ]);
}
