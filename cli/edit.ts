import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { ApplicationFailure, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { RunErrorTypes } from '../activities/orchestration';
import { ORCHESTRATOR_QUEUE } from '../lib/constants';
import { UsageError } from '../lib/errors';
import { datasetFormat } from '../lib/dataset';
import { parseFilterRows } from '../lib/filterRows';
import { deriveRunId, validateRunId } from '../lib/runId';
import type { Backend, DatasetRunSummary, DatasetWorkflowInput, ModelParams } from '../lib/types';
import { parseDatasetWorkflowInput } from '../lib/workflowInput';
import type { datasetWorkflow } from '../workflows';
import { progressQuery } from '../workflows/messages';
import { BACKENDS } from '../workers';
import { ProgressReporter } from './progress';
import { openSession, workflowUiUrl } from './session';

export const ExitCodes = { ok: 0, usage: 1, rowsFailed: 2, interrupted: 130 } as const;

export interface EditOptions {
  input: string;
  outputDir: string;
  backend: string;
  model: string;
  instructionKey: string;
  imageKey?: string;
  conversationKey?: string;
  outputNameColumn?: string;
  outputCsv?: string;
  imageCacheDir?: string;
  filterRows?: string;
  numImages: number;
  jpegQuality: number;
  webpQuality: number;
  runId?: string;
  stateDir: string;
  size?: string;
  quality?: string;
  window: number;
  maxRetries: number;
  retryInitialMs?: number;
  concurrency: number;
  withWorkers: boolean;
}

export interface CliIO {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Resolves when the user asks to stop waiting (Ctrl-C). */
  interrupted: Promise<void>;
  isTTY: boolean;
}

/** Checks the options and turns them into the dataset workflow input. */
export function buildWorkflowInput(options: EditOptions): DatasetWorkflowInput {
  const inputPath = resolve(options.input);
  if (!existsSync(inputPath)) throw new UsageError(`--input ${options.input}: no such file or directory`);
  try {
    datasetFormat(inputPath);
  } catch (err) {
    throw new UsageError(`--input: ${(err as Error).message}`);
  }
  if (options.filterRows !== undefined) {
    try {
      parseFilterRows(options.filterRows);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  if (!(BACKENDS as readonly string[]).includes(options.backend)) {
    throw new UsageError(`--backend ${options.backend} is not available; choose one of: ${BACKENDS.join(', ')}`);
  }
  if (!options.model) throw new UsageError('--model is required (for example --model gpt-image-1.5)');
  const outputDir = resolve(options.outputDir);
  if (existsSync(outputDir) && !statSync(outputDir).isDirectory()) {
    throw new UsageError(`--output-dir ${options.outputDir} exists and is not a directory`);
  }
  const params: ModelParams = {
    ...(options.size ? { size: options.size } : {}),
    ...(options.quality ? { quality: options.quality } : {}),
  };
  const backend = options.backend as Backend;
  const encoding = { jpegQuality: options.jpegQuality, webpQuality: options.webpQuality };
  // Everything that decides what the outputs are goes into the run id; what only tunes execution
  // (filter, window, retries, where results and caches go) does not.
  const runId =
    options.runId ??
    deriveRunId({
      inputPath,
      outputDir,
      backend,
      model: options.model,
      params: { ...params },
      instructionKey: options.instructionKey,
      imageKey: options.imageKey,
      extra: { conversationKey: options.conversationKey, outputNameColumn: options.outputNameColumn, numImages: options.numImages, encoding },
    });
  const badRunId = validateRunId(runId);
  if (badRunId) throw new UsageError(`--run-id: ${badRunId}`);
  try {
    return parseDatasetWorkflowInput({
      runId,
      inputPath,
      outputDir,
      backend,
      model: options.model,
      params,
      instructionKey: options.instructionKey,
      ...(options.imageKey ? { imageKey: options.imageKey } : {}),
      ...(options.conversationKey ? { conversationKey: options.conversationKey } : {}),
      ...(options.outputNameColumn ? { outputNameColumn: options.outputNameColumn } : {}),
      ...(options.outputCsv ? { outputCsv: resolve(options.outputCsv) } : {}),
      ...(options.imageCacheDir ? { imageCacheDir: resolve(options.imageCacheDir) } : {}),
      ...(options.filterRows !== undefined ? { filterRows: options.filterRows } : {}),
      numImages: options.numImages,
      encoding,
      window: options.window,
      retry: {
        maxAttempts: options.maxRetries + 1,
        initialIntervalMs: options.retryInitialMs ?? 2000,
        maximumIntervalMs: 120_000,
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function describeSummary(summary: DatasetRunSummary): string {
  return [
    `rows: ${summary.total}  ok: ${summary.ok}  failed: ${summary.failed}${summary.pending ? `  pending: ${summary.pending}` : ''}`,
    `results: ${summary.resultsCsv} (and ${summary.resultsJsonl})`,
  ].join('\n');
}

/** Starts (or attaches to) the run and waits for it. Returns the process exit code. */
export async function runEdit(options: EditOptions, io: CliIO): Promise<number> {
  const input = buildWorkflowInput(options);
  const session = await openSession({
    stateDir: options.stateDir,
    withWorkers: options.withWorkers,
    concurrency: options.concurrency,
    log: io.err,
  });
  let reporter: ProgressReporter | undefined;
  try {
    if (session.uiUrl) io.err(`Temporal UI: ${session.uiUrl}`);
    const handle: WorkflowHandle<typeof datasetWorkflow> = await session.client.workflow.start('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: input.runId,
      args: [input],
      // A second submit of the same run attaches to the running execution instead of failing.
      workflowIdConflictPolicy: 'USE_EXISTING',
      staticSummary: `${input.backend} ${input.model}: ${input.inputPath}`,
    });
    io.err(`run ${input.runId}${workflowUiUrl(session, input.runId) ? ` (${workflowUiUrl(session, input.runId)})` : ''}`);
    if (!session.embedded && session.workers.length === 0) {
      io.err('waiting for workers started with `npx atelier worker` on this Temporal server');
    }
    reporter = new ProgressReporter(() => handle.query(progressQuery), io);
    reporter.start();

    type Ending = { kind: 'result'; summary: DatasetRunSummary } | { kind: 'interrupted' } | { kind: 'workers-stopped' };
    const endings: Promise<Ending>[] = [
      handle.result().then((summary): Ending => ({ kind: 'result', summary })),
      io.interrupted.then((): Ending => ({ kind: 'interrupted' })),
    ];
    if (session.workersDone) endings.push(session.workersDone.then((): Ending => ({ kind: 'workers-stopped' })));
    const ending = await Promise.race(endings);
    await reporter.stop();
    if (ending.kind === 'interrupted') {
      io.err(`stopped waiting; run ${input.runId} is not cancelled. Run the same command again to resume it.`);
      return ExitCodes.interrupted;
    }
    if (ending.kind === 'workers-stopped') {
      io.err('the in-process workers stopped before the run finished; run the same command again to resume it');
      return ExitCodes.usage;
    }
    io.out(describeSummary(ending.summary));
    // Rows left pending by --filter-rows are not failures.
    return ending.summary.failed > 0 ? ExitCodes.rowsFailed : ExitCodes.ok;
  } catch (err) {
    await reporter?.stop();
    if (err instanceof WorkflowFailedError && err.cause instanceof ApplicationFailure) {
      const type = err.cause.type ?? '';
      if ((Object.values(RunErrorTypes) as string[]).includes(type)) throw new UsageError(err.cause.message);
    }
    throw err;
  } finally {
    await session.close();
  }
}
