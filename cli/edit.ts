import { existsSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { RunErrorTypes } from '../lib/shared/errorTypes';
import { ORCHESTRATOR_QUEUE, providerQueue } from '../lib/shared/constants';
import { UsageError } from '../lib/shared/errors';
import { tracePhase } from '../lib/phaseTrace';
import { DEFAULT_DOWNLOAD_TIMEOUT_MS, DEFAULT_MAX_DOWNLOAD_BYTES } from '../lib/dataset/imageCache';
import { isS3Location } from '../storage';
import { datasetFormat } from '../lib/dataset';
import { isWebDatasetInput } from '../lib/dataset/webdataset';
import { isHubLocation } from '../lib/dataset/hub';
import { deriveRunId, validateRunId } from '../lib/run/runId';
import type { BatchFallback, BatchSettings } from '../lib/shared/batch';
import { API_BACKENDS, BACKEND_NAMES, batchBackends, isBatchBackend } from '../activities/providers/registry';
import type { ApiBackend, Backend, DatasetRunSummary, DatasetWorkflowInput, GpuRunSettings, ModelParams } from '../lib/shared/types';
import { parseDatasetWorkflowInput } from '../lib/run/workflowInput';
import { pinnedInputCommit } from '../lib/run/plan';
import { endpointTag } from '../lib/temporal/endpoint';
import type { datasetWorkflow } from '../workflows';
import { progressQuery } from '../workflows/messages';
import { detectGpuModelType, GPU_MODEL_TYPES, gpuTaskQueue } from '../lib/gpuContract';
import { registerRun } from '../lib/run/runRegistry';
import { checkRunIdSettings } from './runIdCheck';
import { ledgerIndexes, readLedgerEntry } from '../lib/run/ledger';
import { AtelierBackend, AtelierDataset, AtelierModel, AtelierRunId } from '../lib/shared/searchAttributes';
import { capabilities, checkParams, lifecycleProblem, refusedParams } from '../activities/providers/models';
import { gpuProcessCount, normaliseModel } from './gpuWorker';
import { cliNow, ExitCodes, type CliIO, type CommandContext } from './io';
import { addExamples, addOptions, checkedRows, Opt, type OptionsOf } from './options';
import { RUN_CONTROL, RUN_OPTIONS } from './optionGroups';
import { checkModelWithProvider } from './models';
import { describeMultiTurn, ProgressReporter } from './progress';
import { batchJobsQuery } from '../workflows/batchMessages';
import {
  embeddedUiAfterwards,
  openSession,
  setQueueRateLimit,
  whileSearchAttributesPropagate,
  workflowUiUrl,
  type Session,
} from './session';
import { type NeededQueue, runQueues, unservedQueues, watchWorkers } from './workerCheck';

/** The options of `edit`: a run on a dataset, and how this command drives it. */
export const EDIT_OPTIONS = {
  ...RUN_OPTIONS,
  detach: RUN_CONTROL.detach,
  dryRun: Opt.flag('--dry-run', 'print the rows, model calls and estimated cost, and start nothing (as `atelier estimate`)').group(
    'Run control:',
  ),
};

/** `edit`'s options, as commander hands them over (derived from the declarations above). */
export type EditOptions = OptionsOf<typeof EDIT_OPTIONS>;

/**
 * `atelier edit`. Its `--dry-run` is `atelier estimate`, whose handler main.ts passes in (estimate.ts
 * builds on this module, so importing it here would make a cycle).
 */
export function registerEdit(
  program: Command,
  { io, setExit }: CommandContext,
  estimate: (options: EditOptions, io: CliIO) => Promise<number>,
): void {
  const cmd = program.command('edit').description('edit every row of a dataset; running the same command again resumes the same run');
  addOptions(cmd, EDIT_OPTIONS).action(async (opts: EditOptions) => setExit(await (opts.dryRun ? estimate(opts, io) : runEdit(opts, io))));
  addExamples(cmd, [
    [
      'atelier edit --input edits.csv --out out --model gpt-image-2',
      'edit every row with OpenAI (OPENAI_API_KEY set); the same command again resumes',
    ],
    [
      'atelier edit --input data.parquet --out out --model gpt-image-2 --rows 0:100 --concurrency 8',
      'the first 100 rows, 8 calls at a time',
    ],
    [
      'atelier edit --input edits.jsonl --out out --backend gemini --model gemini-3.1-flash-image --aspect-ratio 16:9',
      'another provider, with its own parameters',
    ],
    ['atelier edit --input edits.csv --out out --model gpt-image-2 --dry-run', 'rows, calls and estimated cost, nothing started'],
    [
      'TEMPORAL_ADDRESS=127.0.0.1:7233 atelier edit --input edits.csv --out out --model gpt-image-2 --detach',
      'start on a shared server and print the run id',
    ],
  ]);
}

/** Drops the absent fields (undefined, or an empty text) of a group of optional settings. */
function present<T extends object>(fields: T): Partial<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined && value !== '')) as Partial<T>;
}

/** `--batch` settings, checked: the backend must have a batch API Atelier drives. */
function batchSettings(options: EditOptions, backend: string): BatchSettings | undefined {
  if (!options.batch) {
    if (options.batchFallback !== undefined) throw new UsageError('--batch-fallback goes with --batch');
    return undefined;
  }
  if (!isBatchBackend(backend)) {
    throw new UsageError(
      `--batch is for the ${batchBackends().join(' and ')} backends (their batch APIs); ${backend} has none: drop --batch`,
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
    throw new UsageError(
      `cannot tell the model type of ${model} from its name or its model_index.json (a local folder's, or a Hub repo's once in the Hub cache); pass --model-type (${GPU_MODEL_TYPES.join(' | ')})`,
    );
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
      ...present({
        num_inference_steps: options.numInferenceSteps,
        guidance_scale: options.guidanceScale,
        true_cfg_scale: options.trueCfgScale,
      }),
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
    if (input.params.complexity !== undefined)
      throw new UsageError('--complexity is for gpt-image-2.6 (OpenAI, Azure); drop it for a local GPU model');
    return [];
  }
  const lifecycle = lifecycleProblem(input.backend, input.model, now);
  if (lifecycle.error) throw new UsageError(lifecycle.error);
  const refused = refusedParams(input.backend, input.model, input.params);
  if (refused) throw new UsageError(refused);
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

/** A local path made absolute; an s3:// location as it is. */
function localOrS3(location: string): string {
  return isS3Location(location) ? location : resolve(location);
}

/** Checks the options and turns them into the dataset workflow input. */
export function buildWorkflowInput(options: EditOptions): DatasetWorkflowInput {
  // s3:// locations are checked where they are read (planning), with the worker's credentials.
  // hf:// repos, like s3:// objects, are read where planning runs (with that worker's HF_TOKEN).
  const remote = isS3Location(options.input) || isHubLocation(options.input);
  const inputPath = remote ? options.input : resolve(options.input);
  if (isHubLocation(inputPath)) {
    try {
      datasetFormat(inputPath);
    } catch (err) {
      throw new UsageError(`--input: ${(err as Error).message}`);
    }
  } else if (!isS3Location(inputPath)) {
    // A brace pattern of WebDataset shards names files, not itself: the reader checks each shard.
    if (!existsSync(inputPath) && !isWebDatasetInput(inputPath))
      throw new UsageError(`--input ${options.input}: no such file or directory`);
    try {
      datasetFormat(inputPath);
    } catch (err) {
      throw new UsageError(`--input: ${(err as Error).message}`);
    }
  }
  checkedRows(options.rows);
  if (!(BACKEND_NAMES as readonly string[]).includes(options.backend)) {
    throw new UsageError(`--backend ${options.backend} is not available; choose one of: ${BACKEND_NAMES.join(', ')}`);
  }
  if (!options.model) throw new UsageError('--model is required (for example --model gpt-image-2)');
  const model = options.backend === 'diffusers' ? normaliseModel(options.model) : options.model;
  const gpu = options.backend === 'diffusers' ? gpuSettings(options, model) : undefined;
  const outputDir = isS3Location(options.outputDir) ? options.outputDir.replace(/\/+$/, '') : resolve(options.outputDir);
  if (!isS3Location(outputDir) && existsSync(outputDir) && !statSync(outputDir).isDirectory()) {
    throw new UsageError(`--out ${options.outputDir} exists and is not a directory`);
  }
  const params: ModelParams = {
    ...present({
      size: options.size,
      quality: options.quality,
      background: options.background,
      outputFormat: options.outputFormat,
      outputCompression: options.outputCompression,
      inputFidelity: options.inputFidelity,
      complexity: options.complexity,
      moderation: options.moderation,
      aspectRatio: options.aspectRatio,
      imageSize: options.imageSize,
    }),
    // API backends (an OpenAI-compatible diffusion server via --base-url, ModelScope's seed): the
    // sampling settings go with each request; diffusers keeps them in its GPU settings.
    ...(options.backend !== 'diffusers'
      ? {
          ...present({
            seed: options.seed,
            numInferenceSteps: options.numInferenceSteps,
            guidanceScale: options.guidanceScale,
            trueCfgScale: options.trueCfgScale,
          }),
          // An empty negative prompt is one (a pipeline's true CFG runs with it), so only undefined is absent.
          ...(options.negativePrompt !== undefined ? { negativePrompt: options.negativePrompt } : {}),
        }
      : {}),
  };
  const promptEnhance = options.promptEnhance ? { model: options.promptEnhance, withImages: !!options.promptEnhanceImages } : undefined;
  const backend = options.backend as Backend;
  // Not part of the run id: a batch makes the same outputs, only cheaper and later.
  const batch = batchSettings(options, backend);
  const encoding = { jpegQuality: options.jpegQuality, webpQuality: options.webpQuality };
  if (options.baseUrl !== undefined && backend === 'diffusers') throw new UsageError('--base-url is for API backends');
  // The endpoint is part of what the run asks for (its rows go only to workers configured for it)
  // and of its id: the same dataset against another server is another run. Runs without
  // --base-url keep the ids they always had.
  const endpoint = options.baseUrl ? endpointTag(options.baseUrl) : undefined;
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
        endpoint,
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
      instructionKey: options.instructionKey,
      ...present({
        gpu,
        imageKey: options.imageKey,
        conversationKey: options.conversationKey,
        outputNameColumn: options.outputNameColumn,
        outputCsv: options.outputCsv && localOrS3(options.outputCsv),
        imageCacheDir: options.imageCacheDir && localOrS3(options.imageCacheDir),
        filterRows: options.rows,
        maskKey: options.maskKey,
        allowOutsidePaths: options.allowOutsidePaths || undefined,
        promptEnhance,
        endpoint,
        rateLimitPerSecond: options.rpm && options.rpm / 60,
        maxCostUsd: options.maxCost,
        batch,
        maxHistoryEvents: options.maxHistoryEvents,
      }),
      ...(options.maxDownloadMb !== undefined || options.downloadTimeout !== undefined
        ? {
            download: {
              maxBytes: Math.round((options.maxDownloadMb ?? DEFAULT_MAX_DOWNLOAD_BYTES / 1024 / 1024) * 1024 * 1024),
              timeoutMs: Math.round((options.downloadTimeout ?? DEFAULT_DOWNLOAD_TIMEOUT_MS / 1000) * 1000),
            },
          }
        : {}),
      numImages: options.numImages,
      encoding,
      window: options.window ?? defaultWindow(options.concurrency),
      retry: {
        maxAttempts: options.maxRetries + 1,
        initialIntervalMs: options.retryInitialMs ?? 2000,
        maximumIntervalMs: 120_000,
        heartbeatTimeoutMs: options.heartbeatTimeout * 1000,
      },
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

/** What this command's own rows cost: ledger entries finished since it started. */
export interface SpentNow {
  rows: number;
  costUsd: number;
  unknownRows: number;
}

/** Ledger scans at the end of a command stay this small (a local output dir's entries, read once). */
const SPENT_SCAN_MAX_ENTRIES = 20_000;

/**
 * The rows this command made and their cost, from the ledger entries finished since `startedAt`;
 * undefined where that would mean a long scan (object storage, or a very large run).
 */
export async function spentSince(outputDir: string, startedAt: string): Promise<SpentNow | undefined> {
  if (isS3Location(outputDir)) return undefined;
  const indexes = await ledgerIndexes(outputDir).catch(() => undefined);
  if (!indexes || indexes.size > SPENT_SCAN_MAX_ENTRIES) return undefined;
  const spent: SpentNow = { rows: 0, costUsd: 0, unknownRows: 0 };
  for (const index of indexes) {
    const entry = await readLedgerEntry(outputDir, index).catch(() => undefined);
    if (entry?.status !== 'ok' || !(entry.finishedAt >= startedAt)) continue;
    spent.rows += 1;
    if (entry.costUsd === undefined) spent.unknownRows += 1;
    else spent.costUsd += entry.costUsd;
  }
  return spent;
}

export function describeSummary(summary: DatasetRunSummary, now?: SpentNow): string {
  const tokens = summary.usage.totalTokens ?? (summary.usage.inputTokens ?? 0) + (summary.usage.outputTokens ?? 0);
  // The summary's cost covers every done row of the run; a re-run that made fewer says what it made.
  const madeNow =
    now && now.rows < summary.ok
      ? `; this command made ${now.rows} of them: $${now.costUsd.toFixed(4)}${now.unknownRows ? ` + ${now.unknownRows} of unknown cost` : ''}`
      : '';
  return [
    `rows: ${summary.total}  ok: ${summary.ok}  failed: ${summary.failed}${summary.pending ? `  pending: ${summary.pending}` : ''}`,
    ...Object.entries(summary.failedByType)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([type, n]) => `  failed ${type}: ${n}`),
    `attempts: ${summary.attempts}  tokens: ${tokens}  estimated cost: ${costText(summary)}${madeNow ? ` (all ${summary.ok} done rows${madeNow})` : ''}`,
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

/** How long a progress query may take before the display skips it (nobody may be there to answer). */
export const QUERY_DEADLINE_MS = 5000;

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
  /** The run's output dir and when this command started it: what it made apart from what was done before. */
  since?: { outputDir: string; startedAt: string },
): Promise<number> {
  const handle = session.client.workflow.getHandle<typeof datasetWorkflow>(runId);
  // Each query has a short deadline: with no worker to answer it, a query waits for the server's own
  // timeout (a minute), and Ctrl-C must not wait on it.
  const quick = <T>(read: () => Promise<T>) => session.client.connection.withDeadline(Date.now() + QUERY_DEADLINE_MS, read);
  const reporter = new ProgressReporter(
    () => quick(() => handle.query(progressQuery)),
    io,
    () => quick(() => handle.query(batchJobsQuery)),
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
    io.out(describeSummary(ending.summary, since ? await spentSince(since.outputDir, since.startedAt) : undefined));
    for (const note of describeMultiTurn(reporter.lastBatchView())) io.err(note);
    // Rows left pending by --rows are not failures.
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
  if (session.workers.length === 0)
    io.err(
      `rows are served by workers started with \`npx atelier worker\` on this Temporal server${input.endpoint ? ` whose ${API_BACKENDS[input.backend as ApiBackend].baseUrl} is this run's --base-url` : ''}`,
    );
}

/** Says so when planning will read an hf:// input at the commit this run's first plan read (lib/dataset/hub.ts). */
async function notePinnedInput(input: DatasetWorkflowInput, io: CliIO): Promise<void> {
  if (!isHubLocation(input.inputPath)) return;
  // Object storage this process has no credentials for: the planning worker still pins; only the note is lost.
  const commit = await pinnedInputCommit(input.outputDir, input.inputPath).catch(() => undefined);
  if (commit)
    io.err(
      `${input.inputPath}: pinned to commit ${commit}, which this run's first plan read; a moved branch is not followed (a new --out reads it as it is now)`,
    );
}

/** `atelier edit`: starts (or attaches to) the run and waits for it, or returns at once with --detach (--dry-run: cli/main.ts sends it to `runEstimate`). */
export async function runEdit(options: EditOptions, io: CliIO): Promise<number> {
  const input = buildWorkflowInput(options);
  for (const warning of checkModelChoice(input)) io.err(`warning: ${warning}`);
  await notePinnedInput(input, io);
  if (options.baseUrl && input.backend !== 'diffusers') {
    // In-process workers reach the endpoint through their environment; the workflow input names it
    // only by its tag (its queue), so external workers serve it only if configured for it.
    process.env[API_BACKENDS[input.backend].baseUrl] = options.baseUrl;
  }
  const modelQueue = input.backend === 'diffusers' ? undefined : providerQueue(input.backend, input.endpoint);
  const session = await openSession({
    stateDir: options.stateDir,
    withWorkers: options.withWorkers ?? false,
    mayStartServer: !options.detach,
    concurrency: options.concurrency,
    ...(input.rateLimitPerSecond ? { rateLimitPerSecond: input.rateLimitPerSecond } : {}),
    // In-process workers serve only what this run needs, so no other provider's key is asked for.
    queues: [ORCHESTRATOR_QUEUE, ...(modelQueue ? [modelQueue] : [])],
    ...(input.gpu ? { gpuWorker: { args: gpuWorkerArgs(options, input), processes: gpuProcessCount(options.gpus) } } : {}),
    log: io.err,
  });
  try {
    if (options.detach && session.embedded) {
      throw new UsageError(
        '--detach needs a server that outlives this command: set TEMPORAL_ADDRESS, or run `npx atelier server` (and `npx atelier worker`)',
      );
    }
    if (session.uiUrl) io.err(`Temporal UI: ${session.uiUrl}${session.embedded ? ' (while this command runs)' : ''}`);
    // A run id given by hand must name this run, not another one with other settings (a derived id is this run's by construction).
    if (options.runId) await checkRunIdSettings(session, resolve(options.stateDir), input);
    if (input.rateLimitPerSecond && modelQueue) {
      const shared = await setQueueRateLimit(session, modelQueue, input.rateLimitPerSecond);
      io.err(
        `rate limit: ${options.rpm} calls/min on ${modelQueue}${shared ? ' (server-side, shared by all its workers)' : ' (in-process workers only: this server has no queue rate limits)'}`,
      );
    }
    // The provider's own list, before anything is planned or sent (keys live on its workers).
    // With external workers, only when one serves the provider's (or the endpoint's) queue: else the
    // check would wait out its timeout, and the worker check after the start says what to run.
    if (input.backend !== 'diffusers') {
      const checkQueue: NeededQueue = { name: providerQueue(input.backend, input.endpoint), type: 'activity', start: '' };
      const served = session.workers.length > 0 || (await unservedQueues(session, [checkQueue])).length === 0;
      if (served)
        await checkModelWithProvider(session.client, { ...input, backend: input.backend }, io, undefined, session.checkModelInProcess);
      else io.err(`note: no worker serves ${checkQueue.name} yet, so ${input.model} is checked against Atelier's table only`);
    }
    tracePhase('model checked');
    await registerRun(resolve(options.stateDir), input, input.endpoint ? options.baseUrl : undefined);
    const startedAt = new Date().toISOString();
    await startRun(session, input, io);
    tracePhase('run started');
    // External workers: say now if none serves a queue this run needs (its endpoint's, above all).
    const stopWatching = session.workers.length === 0 ? await watchWorkers(session, runQueues(input, options.baseUrl), io.err) : undefined;
    try {
      if (options.detach) {
        io.out(input.runId);
        return ExitCodes.ok;
      }
      const code = await waitForRun(session, input.runId, io, undefined, { outputDir: input.outputDir, startedAt });
      // The embedded server's UI dies with this command: say so, and how to see the run again.
      if (session.embedded && session.uiUrl) io.err(embeddedUiAfterwards(session, options.stateDir, input.runId));
      return code;
    } finally {
      stopWatching?.();
    }
  } finally {
    tracePhase('run over');
    await session.close();
    tracePhase('session closed');
  }
}
