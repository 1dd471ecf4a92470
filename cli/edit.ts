import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { RunErrorTypes } from '../lib/shared/errorTypes';
import { ORCHESTRATOR_QUEUE, providerQueue } from '../lib/shared/constants';
import { UsageError } from '../lib/shared/errors';
import { tracePhase } from '../lib/phaseTrace';
import { DEFAULT_DOWNLOAD_TIMEOUT_MS, DEFAULT_MAX_DOWNLOAD_BYTES } from '../lib/dataset/imageCache';
import { isS3Location } from '../storage';
import { datasetFormat } from '../lib/dataset';
import { parseFilterRows } from '../lib/shared/filterRows';
import { deriveRunId, validateRunId } from '../lib/run/runId';
import { BATCH_BACKENDS, type BatchBackend, type BatchFallback, type BatchSettings } from '../lib/shared/batch';
import type { Backend, DatasetRunSummary, DatasetWorkflowInput, GpuRunSettings, ModelParams } from '../lib/shared/types';
import { parseDatasetWorkflowInput } from '../lib/run/workflowInput';
import type { datasetWorkflow } from '../workflows';
import { progressQuery } from '../workflows/messages';
import { API_BACKENDS, BACKEND_NAMES } from '../lib/shared/backends';
import { detectGpuModelType, GPU_MODEL_TYPES, gpuTaskQueue } from '../lib/gpuContract';
import { registerRun } from '../lib/run/runRegistry';
import { AtelierBackend, AtelierDataset, AtelierModel, AtelierRunId } from '../lib/shared/searchAttributes';
import { capabilities, checkParams, lifecycleProblem } from '../activities/providers/models';
import { gpuProcessCount, normaliseModel } from './gpuWorker';
import { cliNow, ExitCodes, type CliIO } from './io';
import { describeMultiTurn, ProgressReporter } from './progress';
import { batchJobsQuery } from '../workflows/batchMessages';
import { openSession, setQueueRateLimit, whileSearchAttributesPropagate, workflowUiUrl, type Session } from './session';

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
  /** --max-download-mb: cap on one downloaded input image. */
  maxDownloadMb?: number;
  /** --download-timeout (seconds): the whole transfer of one input image. */
  downloadTimeout?: number;
  filterRows?: string;
  numImages: number;
  jpegQuality: number;
  webpQuality: number;
  runId?: string;
  stateDir: string;
  size?: string;
  quality?: string;
  /** Rows in flight; default defaultWindow(concurrency). */
  window?: number;
  maxRetries: number;
  retryInitialMs?: number;
  heartbeatTimeout: number;
  maxHistoryEvents?: number;
  concurrency: number;
  withWorkers: boolean;
  detach?: boolean;
  // --backend diffusers
  modelType?: string;
  seed?: number;
  numInferenceSteps?: number;
  guidanceScale?: number;
  trueCfgScale?: number;
  negativePrompt?: string;
  gpus?: string;
  batchSize?: number;
  // provider parameters
  background?: string;
  outputFormat?: string;
  outputCompression?: number;
  inputFidelity?: string;
  moderation?: string;
  aspectRatio?: string;
  imageSize?: string;
  maskKey?: string;
  promptEnhance?: string;
  promptEnhanceImages?: boolean;
  baseUrl?: string;
  rpm?: number;
  /** Print rows, calls and the estimated cost, start nothing. */
  dryRun?: boolean;
  /** Pause the run when its estimated spend reaches this (USD). */
  maxCost?: number;
  /** --batch: through the provider's batch API first. */
  batch?: boolean;
  batchFallback?: string;
  /** First wait between polls of a provider batch (ms; tests shorten it). */
  batchPollMs?: number;
}

/** `--batch` settings, checked: the backend must have a batch API Atelier drives. */
function batchSettings(options: EditOptions, backend: string): BatchSettings | undefined {
  if (!options.batch) {
    if (options.batchFallback !== undefined) throw new UsageError('--batch-fallback goes with --batch');
    return undefined;
  }
  if (!BATCH_BACKENDS.includes(backend as BatchBackend)) {
    throw new UsageError(
      `--batch is for the ${BATCH_BACKENDS.join(' and ')} backends (their batch APIs); ${backend} has none: drop --batch`,
    );
  }
  const fallback = (options.batchFallback ?? 'direct') as BatchFallback;
  if (fallback !== 'direct' && fallback !== 'fail')
    throw new UsageError(`--batch-fallback ${options.batchFallback}: choose direct or fail`);
  return {
    fallback,
    ...(options.batchPollMs
      ? { pollInitialMs: options.batchPollMs, pollMaxMs: Math.max(options.batchPollMs, Math.min(600_000, options.batchPollMs * 16)) }
      : {}),
  };
}

/** GPU settings for `--backend diffusers`: model type (given or detected), queue, seed, overrides. */
function gpuSettings(options: EditOptions, model: string): GpuRunSettings {
  const modelType = options.modelType ?? detectGpuModelType(model);
  if (!modelType) {
    throw new UsageError(`cannot tell the model type of ${model} from its name; pass --model-type (${GPU_MODEL_TYPES.join(' | ')})`);
  }
  if (!(GPU_MODEL_TYPES as string[]).includes(modelType)) {
    throw new UsageError(`--model-type ${modelType} is not one of ${GPU_MODEL_TYPES.join(', ')}`);
  }
  const [width, height] =
    options.size
      ?.match(/^(\d+)x(\d+)$/)
      ?.slice(1)
      .map(Number) ?? [];
  return {
    modelType,
    taskQueue: gpuTaskQueue(model),
    seed: options.seed ?? 0,
    params: {
      ...(options.numInferenceSteps !== undefined ? { num_inference_steps: options.numInferenceSteps } : {}),
      ...(options.guidanceScale !== undefined ? { guidance_scale: options.guidanceScale } : {}),
      ...(options.trueCfgScale !== undefined ? { true_cfg_scale: options.trueCfgScale } : {}),
      ...(options.negativePrompt !== undefined ? { negative_prompt: options.negativePrompt } : {}),
      ...(width && height ? { width, height } : {}),
    },
  };
}

/** Arguments for the GPU worker processes `edit` starts itself (embedded server or --with-workers). */
export function gpuWorkerArgs(options: EditOptions, input: DatasetWorkflowInput): string[] {
  const extra = process.env.ATELIER_GPU_WORKER_ARGS?.split(/\s+/).filter(Boolean) ?? [];
  // A plugin-served model runs the plugin's own code: the worker must be told which class.
  if (input.gpu!.modelType === 'plugin' && !extra.some((a) => a === '--adapter' || a.startsWith('--adapter='))) {
    throw new UsageError(
      "--model-type plugin: the GPU worker needs its plugin; set ATELIER_GPU_WORKER_ARGS='--adapter module:Class' or run `atelier gpu-worker --adapter module:Class` yourself",
    );
  }
  return [
    '--model',
    input.model,
    '--model-type',
    input.gpu!.modelType,
    '--task-queue',
    input.gpu!.taskQueue,
    ...(options.gpus ? ['--gpus', options.gpus] : []),
    ...(options.batchSize ? ['--batch-size', String(options.batchSize)] : []),
    // Further worker flags (see gpu-workers/README.md), e.g. "--dtype bf16 --compile".
    ...extra,
  ];
}

/**
 * The model's lifecycle and parameters: a retired model is refused (UsageError naming its
 * replacement, before anything is planned or spent); warnings for a deprecated model and for
 * parameters the model does not take are returned for the caller to print.
 */
export function checkModelChoice(
  input: Pick<DatasetWorkflowInput, 'backend' | 'model' | 'params'> & { maxCostUsd?: number },
  now: Date = cliNow(),
): string[] {
  if (input.backend === 'diffusers') {
    if (input.maxCostUsd !== undefined) throw new UsageError('--max-cost is for API backends (a local GPU model has no per-call price)');
    return [];
  }
  const lifecycle = lifecycleProblem(input.backend, input.model, now);
  if (lifecycle.error) throw new UsageError(lifecycle.error);
  if (input.maxCostUsd !== undefined) {
    const price = capabilities(input.backend, input.model).price;
    if (!price.free && !price.fromUsage && !price.tokens && !price.perImage) {
      throw new UsageError(
        `--max-cost needs a model with a known price; ${input.model} has none in the table, so its spend cannot be counted`,
      );
    }
  }
  return [...(lifecycle.warning ? [lifecycle.warning] : []), ...checkParams(input.backend, input.model, input.params)];
}

/**
 * Rows in flight when --window is not given: twice the model calls in flight. With a window equal to
 * the concurrency, each provider slot idled while a finished row's child completed, the run's
 * workflow task ran and the next child started and scheduled its call; the rows beyond the
 * concurrency wait on the provider's queue instead, so a freed slot takes the next call at once
 * (bench/saturation.ts measures it). Capped well under the server's 2,000 pending children.
 */
export function defaultWindow(concurrency: number): number {
  return Math.min(1000, Math.max(16, concurrency * 2));
}

/** Checks the options and turns them into the dataset workflow input. */
export function buildWorkflowInput(options: EditOptions): DatasetWorkflowInput {
  // s3:// locations are checked where they are read (planning), with the worker's credentials.
  const inputPath = isS3Location(options.input) ? options.input : resolve(options.input);
  if (!isS3Location(inputPath)) {
    if (!existsSync(inputPath)) throw new UsageError(`--input ${options.input}: no such file or directory`);
    try {
      datasetFormat(inputPath);
    } catch (err) {
      throw new UsageError(`--input: ${(err as Error).message}`);
    }
  }
  if (options.filterRows !== undefined) {
    try {
      parseFilterRows(options.filterRows);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  if (!(BACKEND_NAMES as readonly string[]).includes(options.backend)) {
    throw new UsageError(`--backend ${options.backend} is not available; choose one of: ${BACKEND_NAMES.join(', ')}`);
  }
  if (!options.model) throw new UsageError('--model is required (for example --model gpt-image-2)');
  const model = options.backend === 'diffusers' ? normaliseModel(options.model) : options.model;
  const gpu = options.backend === 'diffusers' ? gpuSettings(options, model) : undefined;
  const outputDir = isS3Location(options.outputDir) ? options.outputDir.replace(/\/+$/, '') : resolve(options.outputDir);
  if (!isS3Location(outputDir) && existsSync(outputDir) && !statSync(outputDir).isDirectory()) {
    throw new UsageError(`--output-dir ${options.outputDir} exists and is not a directory`);
  }
  const params: ModelParams = {
    ...(options.size ? { size: options.size } : {}),
    ...(options.quality ? { quality: options.quality } : {}),
    ...(options.background ? { background: options.background } : {}),
    ...(options.outputFormat ? { outputFormat: options.outputFormat } : {}),
    ...(options.outputCompression !== undefined ? { outputCompression: options.outputCompression } : {}),
    ...(options.inputFidelity ? { inputFidelity: options.inputFidelity } : {}),
    ...(options.moderation ? { moderation: options.moderation } : {}),
    ...(options.aspectRatio ? { aspectRatio: options.aspectRatio } : {}),
    ...(options.imageSize ? { imageSize: options.imageSize } : {}),
    // API backends (an OpenAI-compatible diffusion server via --base-url, ModelScope's seed): the
    // sampling settings go with each request; diffusers keeps them in its GPU settings.
    ...(options.backend !== 'diffusers'
      ? {
          ...(options.seed !== undefined ? { seed: options.seed } : {}),
          ...(options.numInferenceSteps !== undefined ? { numInferenceSteps: options.numInferenceSteps } : {}),
          ...(options.guidanceScale !== undefined ? { guidanceScale: options.guidanceScale } : {}),
          ...(options.trueCfgScale !== undefined ? { trueCfgScale: options.trueCfgScale } : {}),
          ...(options.negativePrompt !== undefined ? { negativePrompt: options.negativePrompt } : {}),
        }
      : {}),
  };
  const promptEnhance = options.promptEnhance ? { model: options.promptEnhance, withImages: !!options.promptEnhanceImages } : undefined;
  const backend = options.backend as Backend;
  // Not part of the run id: a batch makes the same outputs, only cheaper and later.
  const batch = batchSettings(options, backend);
  const encoding = { jpegQuality: options.jpegQuality, webpQuality: options.webpQuality };
  // Everything that decides what the outputs are goes into the run id; what only tunes execution
  // (filter, window, retries, where results and caches go) does not.
  const runId =
    options.runId ??
    deriveRunId({
      inputPath,
      outputDir,
      backend,
      model,
      params: { ...params },
      instructionKey: options.instructionKey,
      imageKey: options.imageKey,
      extra: {
        conversationKey: options.conversationKey,
        outputNameColumn: options.outputNameColumn,
        numImages: options.numImages,
        encoding,
        ...(gpu ? { gpu: { modelType: gpu.modelType, seed: gpu.seed, params: gpu.params } } : {}),
        maskKey: options.maskKey,
        promptEnhance,
      },
    });
  const badRunId = validateRunId(runId);
  if (badRunId) throw new UsageError(`--run-id: ${badRunId}`);
  try {
    return parseDatasetWorkflowInput({
      runId,
      inputPath,
      outputDir,
      backend,
      model,
      params,
      ...(gpu ? { gpu } : {}),
      instructionKey: options.instructionKey,
      ...(options.imageKey ? { imageKey: options.imageKey } : {}),
      ...(options.conversationKey ? { conversationKey: options.conversationKey } : {}),
      ...(options.outputNameColumn ? { outputNameColumn: options.outputNameColumn } : {}),
      ...(options.outputCsv ? { outputCsv: isS3Location(options.outputCsv) ? options.outputCsv : resolve(options.outputCsv) } : {}),
      ...(options.imageCacheDir
        ? { imageCacheDir: isS3Location(options.imageCacheDir) ? options.imageCacheDir : resolve(options.imageCacheDir) }
        : {}),
      ...(options.maxDownloadMb !== undefined || options.downloadTimeout !== undefined
        ? {
            download: {
              maxBytes: Math.round((options.maxDownloadMb ?? DEFAULT_MAX_DOWNLOAD_BYTES / 1024 / 1024) * 1024 * 1024),
              timeoutMs: Math.round((options.downloadTimeout ?? DEFAULT_DOWNLOAD_TIMEOUT_MS / 1000) * 1000),
            },
          }
        : {}),
      ...(options.filterRows !== undefined ? { filterRows: options.filterRows } : {}),
      numImages: options.numImages,
      encoding,
      ...(options.maskKey ? { maskKey: options.maskKey } : {}),
      ...(promptEnhance ? { promptEnhance } : {}),
      ...(options.rpm ? { rateLimitPerSecond: options.rpm / 60 } : {}),
      ...(options.maxCost !== undefined ? { maxCostUsd: options.maxCost } : {}),
      ...(batch ? { batch } : {}),
      window: options.window ?? defaultWindow(options.concurrency),
      retry: {
        maxAttempts: options.maxRetries + 1,
        initialIntervalMs: options.retryInitialMs ?? 2000,
        maximumIntervalMs: 120_000,
        heartbeatTimeoutMs: options.heartbeatTimeout * 1000,
      },
      ...(options.maxHistoryEvents ? { maxHistoryEvents: options.maxHistoryEvents } : {}),
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** `$0.1234`, `unknown` when no row's cost is known, or `$0.1234 + 3 rows of unknown cost`. */
export function costText(summary: Pick<DatasetRunSummary, 'costUsd' | 'costUnknownRows' | 'ok'>): string {
  const unknown = summary.costUnknownRows ?? 0;
  if (unknown > 0 && unknown >= summary.ok && summary.costUsd === 0) return 'unknown';
  return `$${summary.costUsd.toFixed(4)}${unknown ? ` + ${unknown} row${unknown > 1 ? 's' : ''} of unknown cost` : ''}`;
}

export function describeSummary(summary: DatasetRunSummary): string {
  const tokens = summary.usage.totalTokens ?? (summary.usage.inputTokens ?? 0) + (summary.usage.outputTokens ?? 0);
  return [
    `rows: ${summary.total}  ok: ${summary.ok}  failed: ${summary.failed}${summary.pending ? `  pending: ${summary.pending}` : ''}`,
    ...Object.entries(summary.failedByType)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([type, n]) => `  failed ${type}: ${n}`),
    `attempts: ${summary.attempts}  tokens: ${tokens}  estimated cost: ${costText(summary)}`,
    `results: ${summary.resultsCsv} (and ${summary.resultsJsonl})`,
  ].join('\n');
}

/** A run's workflow failure that is the user's to fix (bad dataset, output dir of another run). */
export function usageErrorOf(err: unknown): UsageError | undefined {
  if (err instanceof WorkflowFailedError && err.cause instanceof ApplicationFailure) {
    const type = err.cause.type ?? '';
    if ((Object.values(RunErrorTypes) as string[]).includes(type)) return new UsageError(err.cause.message);
  }
  return undefined;
}

/**
 * Waits for a run with a progress display, then prints its summary. Ctrl-C stops waiting only.
 * Returns the exit code: 0 no failed rows, 2 some failed, 130 interrupted.
 */
export async function waitForRun(
  session: Session,
  runId: string,
  io: CliIO,
  /** What to print and return at the end instead of the run's summary (`retry` reports its own rows). */
  conclude?: (summary: DatasetRunSummary) => Promise<{ text: string; code: number }>,
): Promise<number> {
  const handle = session.client.workflow.getHandle<typeof datasetWorkflow>(runId);
  const reporter = new ProgressReporter(
    () => handle.query(progressQuery),
    io,
    () => handle.query(batchJobsQuery),
  );
  reporter.start();
  try {
    type Ending = { kind: 'result'; summary: DatasetRunSummary } | { kind: 'interrupted' } | { kind: 'workers-stopped' };
    const endings: Promise<Ending>[] = [
      // Follows the run across continue-as-new.
      handle.result().then((summary): Ending => ({ kind: 'result', summary })),
      io.interrupted.then((): Ending => ({ kind: 'interrupted' })),
    ];
    if (session.workersDone) endings.push(session.workersDone.then((): Ending => ({ kind: 'workers-stopped' })));
    const ending = await Promise.race(endings);
    await reporter.stop();
    if (ending.kind === 'interrupted') {
      io.err(`stopped waiting; run ${runId} is not cancelled. Run the same command again to resume it.`);
      return ExitCodes.interrupted;
    }
    if (ending.kind === 'workers-stopped') {
      io.err('the in-process workers stopped before the run finished; run the same command again to resume it');
      return ExitCodes.usage;
    }
    if (conclude) {
      const { text, code } = await conclude(ending.summary);
      io.out(text);
      return code;
    }
    io.out(describeSummary(ending.summary));
    for (const note of describeMultiTurn(reporter.lastBatchView())) io.err(note);
    // Rows left pending by --filter-rows are not failures.
    return ending.summary.failed > 0 ? ExitCodes.rowsFailed : ExitCodes.ok;
  } catch (err) {
    await reporter.stop();
    throw usageErrorOf(err) ?? err;
  }
}

/** Starts the dataset workflow, or attaches to the running execution of the same run id. */
export async function startRun(session: Session, input: DatasetWorkflowInput, io: CliIO): Promise<void> {
  const withAttributes: DatasetWorkflowInput = { ...input, searchAttributes: session.searchAttributes };
  const start = () =>
    session.client.workflow.start('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: input.runId,
      args: [withAttributes],
      // A second submit of the same run attaches to the running execution instead of starting another.
      workflowIdConflictPolicy: 'USE_EXISTING',
      staticSummary: `${input.backend} ${input.model}: ${input.inputPath}`.slice(0, 200),
      ...(session.searchAttributes
        ? {
            typedSearchAttributes: [
              { key: AtelierRunId, value: input.runId },
              { key: AtelierDataset, value: input.inputPath.slice(-250) },
              { key: AtelierBackend, value: input.backend },
              { key: AtelierModel, value: input.model },
            ],
          }
        : {}),
    });
  await (session.searchAttributes ? whileSearchAttributesPropagate(start, io.err) : start());
  const link = workflowUiUrl(session, input.runId);
  io.err(`run ${input.runId}${link ? ` (${link})` : ''}`);
  if (session.workers.length === 0) io.err('rows are served by workers started with `npx atelier worker` on this Temporal server');
}

/** `atelier edit`: starts (or attaches to) the run and waits for it, or returns at once with --detach (--dry-run: cli/main.ts sends it to `runEstimate`). */
export async function runEdit(options: EditOptions, io: CliIO): Promise<number> {
  const input = buildWorkflowInput(options);
  for (const warning of checkModelChoice(input)) io.err(`warning: ${warning}`);
  if (options.baseUrl) {
    if (input.backend === 'diffusers') throw new UsageError('--base-url is for API backends');
    if (process.env.TEMPORAL_ADDRESS && !options.withWorkers) {
      throw new UsageError(
        `--base-url reaches only in-process workers: set ${API_BACKENDS[input.backend].baseUrl} in the environment of \`atelier worker\` instead (or add --with-workers)`,
      );
    }
    // Base URLs, like keys, live in the worker's environment, never in the workflow input.
    process.env[API_BACKENDS[input.backend].baseUrl] = options.baseUrl;
  }
  const session = await openSession({
    stateDir: options.stateDir,
    withWorkers: options.withWorkers,
    mayStartServer: !options.detach,
    concurrency: options.concurrency,
    ...(input.rateLimitPerSecond ? { rateLimitPerSecond: input.rateLimitPerSecond } : {}),
    // In-process workers serve only what this run needs, so no other provider's key is asked for.
    queues: [ORCHESTRATOR_QUEUE, ...(input.backend === 'diffusers' ? [] : [providerQueue(input.backend)])],
    ...(input.gpu ? { gpuWorker: { args: gpuWorkerArgs(options, input), processes: gpuProcessCount(options.gpus) } } : {}),
    log: io.err,
  });
  try {
    if (options.detach && session.embedded) {
      throw new UsageError(
        '--detach needs a server that outlives this command: set TEMPORAL_ADDRESS, or run `npx atelier server` (and `npx atelier worker`)',
      );
    }
    if (session.uiUrl) io.err(`Temporal UI: ${session.uiUrl}`);
    if (input.rateLimitPerSecond && input.backend !== 'diffusers') {
      const shared = await setQueueRateLimit(session, providerQueue(input.backend), input.rateLimitPerSecond);
      io.err(
        `rate limit: ${options.rpm} calls/min on ${providerQueue(input.backend)}${shared ? ' (server-side, shared by all its workers)' : ' (in-process workers only: this server has no queue rate limits)'}`,
      );
    }
    await registerRun(resolve(options.stateDir), input);
    await startRun(session, input, io);
    tracePhase('run started');
    if (options.detach) {
      io.out(input.runId);
      return ExitCodes.ok;
    }
    return await waitForRun(session, input.runId, io);
  } finally {
    tracePhase('run over');
    await session.close();
    tracePhase('session closed');
  }
}
