// Types that cross Temporal payloads (workflow and activity inputs/outputs). They hold references
// (paths, positions, counts), never image bytes or whole tables, and never API keys: keys live only
// in worker environments.

/** Which provider family serves the model activity; each has its own task queue. */
/** Cloud APIs, served by TypeScript provider adapters on `api-<backend>` queues. */
export type ApiBackend = 'openai' | 'gemini' | 'openrouter' | 'modelscope' | 'azure' | 'vertex' | 'fal';
export type Backend = ApiBackend | 'diffusers';

/** `--backend diffusers`: a local model served by Python GPU workers (gpu-workers/). */
export interface GpuRunSettings {
  /** One of the contract's model types (contracts/gpu-edit.schema.json). */
  modelType: string;
  /** `gpu-<model key>`, by the contract's rule. */
  taskQueue: string;
  /** Base seed; each row's seed derives from it and the row index. */
  seed: number;
  /** Overrides of the model type's defaults, in the contract's snake_case. */
  params: {
    num_inference_steps?: number;
    guidance_scale?: number;
    true_cfg_scale?: number;
    negative_prompt?: string;
    height?: number;
    width?: number;
  };
}

/**
 * Parameters forwarded to the model; each adapter uses the ones its API has. Part of the run id:
 * changing one is a different run.
 */
export interface ModelParams {
  /** OpenAI: 1024x1024, 1536x1024, auto, ... */
  size?: string;
  /** OpenAI: low, medium, high, auto (dall-e-2: standard). */
  quality?: string;
  /** OpenAI: transparent, opaque, auto. */
  background?: string;
  /** OpenAI: png, jpeg, webp (what the API returns; outputs are re-encoded to their names' format). */
  outputFormat?: string;
  /** OpenAI: 0-100 for jpeg/webp API output. */
  outputCompression?: number;
  /** OpenAI: high or low. */
  inputFidelity?: string;
  /** OpenAI: auto or low. */
  moderation?: string;
  /** Gemini / OpenRouter: 1:1, 16:9, ... */
  aspectRatio?: string;
  /** Gemini: 1K, 2K, 4K; OpenRouter: 0.5K ... 4K. */
  imageSize?: string;
  /**
   * ModelScope and OpenAI-compatible diffusion servers (--base-url): the base seed; each row is sent
   * its own seed derived from it and the row index, as the GPU backend derives it (lib/gpuContract).
   */
  seed?: number;
  /** OpenAI-compatible diffusion servers (vLLM-Omni, SGLang): sent as num_inference_steps. */
  numInferenceSteps?: number;
  /** ... guidance_scale. */
  guidanceScale?: number;
  /** ... true_cfg_scale (Qwen-Image). */
  trueCfgScale?: number;
  /** ... negative_prompt. */
  negativePrompt?: string;
}

/** Activity retry settings for model calls (the child workflow turns them into a RetryPolicy). */
export interface RowRetrySettings {
  /** Total attempts per row, first included. */
  maxAttempts: number;
  initialIntervalMs: number;
  maximumIntervalMs: number;
  /**
   * A model call that stops heartbeating for this long (its worker died) is retried elsewhere.
   * Default 60 s.
   */
  heartbeatTimeoutMs?: number;
}

/** Which failed rows `atelier retry` runs again (rows already ok are never redone). */
export interface RetrySelection {
  /** Only rows failed with these classes (e.g. Blocked, Retryable); all classes when absent. */
  errorTypes?: string[];
  /** Only these row positions, in --filter-rows syntax. */
  rows?: string;
}

/** Bounds on downloading one input image. */
export interface DownloadLimits {
  maxBytes: number;
  /** The whole transfer, headers and body. */
  timeoutMs: number;
}

/** How outputs are encoded (JPEG/WebP quality, 1-100). */
export interface OutputEncoding {
  jpegQuality: number;
  webpQuality: number;
}

/** Input of the dataset workflow: one per run. Safe to write by hand for `temporal workflow start`. */
export interface DatasetWorkflowInput {
  runId: string;
  /** Absolute path of the dataset: a .csv, .jsonl or .parquet file, or a folder of .parquet shards. */
  inputPath: string;
  /** Absolute path of the output directory (shared by every worker that serves this run). */
  outputDir: string;
  backend: Backend;
  model: string;
  params: ModelParams;
  instructionKey: string;
  /** Image column; when absent the first present of input_images, image_url, image. */
  imageKey?: string;
  /** JSONL conversation key (default `conversations`). */
  conversationKey?: string;
  /** Column giving each row's output path, relative to the output dir. */
  outputNameColumn?: string;
  /** Images per row (several are named `_00`, `_01`, ...). */
  numImages: number;
  encoding: OutputEncoding;
  /** Row positions to attempt (`0:100,200:`); others stay pending. Not part of the run id. */
  filterRows?: string;
  /** Results table; results.jsonl goes beside it. Default `<outputDir>/results.csv`. */
  outputCsv?: string;
  /** Content-addressed cache of downloaded images. Default `<outputDir>/.atelier/image-cache`. */
  imageCacheDir?: string;
  /** Bounds on downloading a URL input image (--max-download-mb, --download-timeout). */
  download?: DownloadLimits;
  /** Required with backend diffusers. */
  gpu?: GpuRunSettings;
  /** Edit-mask column (a PNG whose transparent pixels mark the area to edit). */
  maskKey?: string;
  promptEnhance?: PromptEnhanceSettings;
  /** Model calls per second for this provider's whole task queue, shared by every worker (--rpm / 60). */
  rateLimitPerSecond?: number;
  /**
   * --max-cost: the run pauses when the estimated spend of the rows it finished reaches this (USD);
   * `atelier resume --max-cost` raises it. Not part of the run id.
   */
  maxCostUsd?: number;
  /** Row children in flight at once. */
  window: number;
  retry: RowRetrySettings;
  /** Upsert the project's search attributes (they must be registered on the server). */
  searchAttributes?: boolean;
  /** Run only a retry pass over these failed rows (a retry of a closed run). */
  retryOnly?: RetrySelection;
  /** Cap on parent history events before continuing as new (default 8,000). */
  maxHistoryEvents?: number;
  /** State carried across continue-as-new; absent on the first execution. */
  carried?: CarriedState;
}

/** What crosses continue-as-new: counts and cursors, never row lists (deferred rows ≤ window). */
export interface CarriedState {
  plan: { totalRows: number; selectedRows: number };
  /** Next plan position of the current pass, or null when the pass is exhausted. */
  cursor: number | null;
  pass: RetrySelection | 'main';
  retryQueue: RetrySelection[];
  /** Indexes of row children running now (they report by signal to whichever run is current). */
  inFlight: number[];
  /** Rows set aside while their provider's quota is exhausted, to run again on resume. */
  deferred: RowRef[];
  counts: RunCountsState;
  paused: PauseState | null;
  startedAt: string;
  continuedAsNew: number;
  /** The budget (--max-cost, raised by the budget signal), USD. */
  maxCostUsd?: number;
}

export interface RunCountsState {
  ok: number;
  failedByType: Record<string, number>;
  /** Rows that finished (either way) since the run started, for the rate. */
  finished: number;
  /** Estimated spend of the rows this run finished (their ledger cost), USD; absent until one reports a cost. */
  spentUsd?: number;
}

export interface PauseState {
  reason: string;
  /** When it lifts by itself (a quota reset), ISO time. */
  until?: string;
  /** Paused because the spend reached --max-cost: lifted by a higher budget. */
  budget?: boolean;
}

/** A row child's report to its dataset workflow (a signal, sent from the child's finally). */
export interface RowDone {
  position: number;
  index: number;
  /** deferred: the provider's quota is exhausted; the row runs again when the run resumes. */
  status: 'ok' | 'failed' | 'deferred';
  errorType?: string;
  error?: string;
  /** Quota pauses: when the provider says the quota resets (ISO time). */
  resetAt?: string;
  /** An ok row's estimated cost, when known (USD). */
  costUsd?: number;
}

/** A row as the dataset workflow knows it while dispatching: position in the plan plus a label. */
export interface RowRef {
  position: number;
  index: number;
  /** Short instruction snippet, for the Temporal UI. */
  summary: string;
  /** The row's failure class in the ledger, when it failed before (it is being tried again). */
  previousErrorType?: string;
}

export interface PlanRunResult {
  /** The workflow input after validation, defaults filled in. */
  input: DatasetWorkflowInput;
  totalRows: number;
  /** Rows selected by --filter-rows (all rows without a filter). */
  selectedRows: number;
  /** Selected rows already ok in the ledger (they make no provider call). */
  alreadyOk: number;
  /** Selected rows the ledger holds as failed, by failure class. */
  failedByType: Record<string, number>;
  /** Selected rows done for a request they no longer make (the dataset changed): done again. */
  changed?: number;
}

export interface RowsPage {
  rows: RowRef[];
  /** Position to continue from, or null when the plan is exhausted. */
  nextCursor: number | null;
}

/** Input of a row child workflow. */
export interface RowWorkflowInput {
  task: RowTask;
  retry: RowRetrySettings;
  /** Set the AtelierErrorType search attribute on failure. */
  searchAttributes?: boolean;
}

/** Input of the model activity. */
export interface RowTask {
  runId: string;
  outputDir: string;
  position: number;
  index: number;
  backend: Backend;
  model: string;
  params: ModelParams;
  numImages: number;
  encoding: OutputEncoding;
  imageCacheDir: string;
  download?: DownloadLimits;
  gpu?: GpuRunSettings;
  promptEnhance?: PromptEnhanceSettings;
}

/** `--prompt-enhance <model>`: an OpenAI-compatible chat model rewrites each instruction first. */
export interface PromptEnhanceSettings {
  model: string;
  /** Show it the row's input images too. */
  withImages: boolean;
}

export type RowStatus = 'ok' | 'failed';

export interface RowOutcome {
  position: number;
  index: number;
  status: RowStatus;
  /** Output paths relative to the output dir, when ok. */
  outputImages?: string[];
  errorType?: string;
  error?: string;
  /** True when the ledger already had this row ok and no provider call was made. */
  fromLedger?: boolean;
  /** A row deferred for an exhausted quota (status failed, errorType QuotaExhausted): when it resets. */
  resetAt?: string;
  /** An ok row's estimated cost (its ledger cost), when known; absent for rows found done in the ledger. */
  costUsd?: number;
}

export interface RecordFailureInput {
  runId: string;
  model: string;
  outputDir: string;
  position: number;
  index: number;
  errorType: string;
  error: string;
  /** Attempts the model call made before it failed for good, when known. */
  attempts?: number;
}

export interface RunCounts {
  total: number;
  ok: number;
  failed: number;
  pending: number;
}

export interface DatasetRunSummary extends RunCounts {
  runId: string;
  /** Rows whose outputs answer a request the row no longer makes (counted in pending too). */
  changed?: number;
  resultsCsv: string;
  resultsJsonl: string;
  /** Failed rows by class. */
  failedByType: Record<string, number>;
  /** Summed over the rows' ledger entries. */
  attempts: number;
  /** Summed over the rows whose cost is known. */
  costUsd: number;
  /** Rows done whose cost is unknown (no published price): costUsd leaves them out. */
  costUnknownRows?: number;
  usage: Record<string, number>;
}

export interface ProgressSnapshot {
  runId: string;
  phase: 'planning' | 'running' | 'paused' | 'writing-results' | 'done';
  /** Rows this run attempts (selected by --filter-rows). */
  total: number;
  ok: number;
  failed: number;
  failedByType: Record<string, number>;
  inFlight: number;
  /** Set aside while a quota is exhausted. */
  deferred: number;
  pending: number;
  paused: PauseState | null;
  /** Rows finished since the run started, and when it started: the rate. */
  finished: number;
  startedAt: string;
  continuedAsNew: number;
  retryPassesQueued: number;
  /** Estimated spend of the rows this run finished, USD (absent until one reports a cost). */
  spentUsd?: number;
  /** --max-cost, when set. */
  maxCostUsd?: number;
}
