// Types that cross Temporal payloads (workflow and activity inputs/outputs). They hold references
// (paths, positions, counts), never image bytes or whole tables, and never API keys: keys live only
// in worker environments.

/** Which provider family serves the model activity; each has its own task queue. */
export type Backend = 'openai' | 'gemini' | 'openrouter' | 'modelscope';

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
  /** ModelScope and others that accept one. */
  seed?: number;
}

/** Activity retry settings for model calls (the child workflow turns them into a RetryPolicy). */
export interface RowRetrySettings {
  /** Total attempts per row, first included. */
  maxAttempts: number;
  initialIntervalMs: number;
  maximumIntervalMs: number;
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
  /** Row children in flight at once. */
  window: number;
  retry: RowRetrySettings;
}

/** A row as the dataset workflow knows it while dispatching: position in the plan plus a label. */
export interface RowRef {
  position: number;
  index: number;
  /** Short instruction snippet, for the Temporal UI. */
  summary: string;
}

export interface PlanRunResult {
  /** The workflow input after validation, defaults filled in. */
  input: DatasetWorkflowInput;
  totalRows: number;
  /** Rows selected by --filter-rows (all rows without a filter). */
  selectedRows: number;
  /** Selected rows already ok in the ledger (they make no provider call). */
  alreadyOk: number;
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
}

export type RowStatus = 'ok' | 'failed';

/** Failure classes recorded per row; also the ApplicationFailure `type` names. */
export const ErrorTypes = {
  /** Transient (429, 5xx, timeouts, connection errors): retried with backoff until attempts run out. */
  retryable: 'Retryable',
  /** Refused by the provider's safety system: final. */
  blocked: 'Blocked',
  /** Any other 4xx: final. */
  invalidRequest: 'InvalidRequest',
  /** Billing or daily quota exhausted: final for the row. */
  quotaExhausted: 'QuotaExhausted',
  /** The row's own input (missing or undecodable image, bad value): final, no provider call made. */
  inputError: 'InputError',
  /** Worker set-up problem (missing API key): final. */
  configError: 'ConfigError',
} as const;
export type ErrorType = (typeof ErrorTypes)[keyof typeof ErrorTypes];

export const NON_RETRYABLE_ERROR_TYPES: string[] = [
  ErrorTypes.blocked,
  ErrorTypes.invalidRequest,
  ErrorTypes.quotaExhausted,
  ErrorTypes.inputError,
  ErrorTypes.configError,
];

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
}

export interface RecordFailureInput {
  runId: string;
  model: string;
  outputDir: string;
  position: number;
  index: number;
  errorType: string;
  error: string;
}

export interface RunCounts {
  total: number;
  ok: number;
  failed: number;
  pending: number;
}

export interface DatasetRunSummary extends RunCounts {
  runId: string;
  resultsCsv: string;
  resultsJsonl: string;
}

export interface ProgressSnapshot {
  runId: string;
  phase: 'planning' | 'running' | 'writing-results' | 'done';
  /** Rows this run attempts (selected by --filter-rows). */
  total: number;
  alreadyOk: number;
  ok: number;
  failed: number;
  inFlight: number;
}
