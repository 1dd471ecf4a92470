// Types that cross Temporal payloads (workflow and activity inputs/outputs). They hold references
// (paths, positions, counts), never image bytes or whole tables, and never API keys: keys live only
// in worker environments.

/** Which provider family serves the model activity; each has its own task queue. */
export type Backend = 'openai';

/** Parameters forwarded to the model. Part of the run id: changing one is a different run. */
export interface ModelParams {
  size?: string;
  quality?: string;
}

/** Activity retry settings for model calls (the child workflow turns them into a RetryPolicy). */
export interface RowRetrySettings {
  /** Total attempts per row, first included. */
  maxAttempts: number;
  initialIntervalMs: number;
  maximumIntervalMs: number;
}

/** Input of the dataset workflow: one per run. Safe to write by hand for `temporal workflow start`. */
export interface DatasetWorkflowInput {
  runId: string;
  /** Absolute path of the dataset file. */
  inputPath: string;
  /** Absolute path of the output directory (shared by every worker that serves this run). */
  outputDir: string;
  backend: Backend;
  model: string;
  params: ModelParams;
  instructionKey: string;
  /** Image column; when absent the first present of input_images, image_url, image. */
  imageKey?: string;
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
  /** Rows already ok in the ledger (they make no provider call). */
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
  /** Output path relative to the output dir, when ok. */
  outputImage?: string;
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
}

export interface ProgressSnapshot {
  runId: string;
  phase: 'planning' | 'running' | 'writing-results' | 'done';
  total: number;
  alreadyOk: number;
  ok: number;
  failed: number;
  inFlight: number;
}
