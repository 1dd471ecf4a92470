// Types that cross Temporal payloads (workflow and activity inputs/outputs). They hold references
// (paths, positions, counts), never image bytes or whole tables, and never API keys: keys live only
// in worker environments.

import type { Backend } from './backends';
import type { RetrySelection } from './retrySelection';
import type {
  DownloadLimits,
  GpuRunSettings,
  ModelParams,
  OutputEncoding,
  PromptEnhanceSettings,
  RowRetrySettings,
  WorkflowInputFields,
} from '../run/workflowInput';
import type { TaskPlanRow } from '../run/plan';

export type { ApiBackend, Backend } from './backends';
export type { RetrySelection } from './retrySelection';
export type {
  DownloadLimits,
  GpuRunSettings,
  ModelParams,
  OutputEncoding,
  PromptEnhanceSettings,
  RowRetrySettings,
} from '../run/workflowInput';

/** Input of the dataset workflow: one per run. Safe to write by hand for `temporal workflow start`. */
export type DatasetWorkflowInput = WorkflowInputFields & {
  /** State carried across continue-as-new; absent on the first execution. */
  carried?: CarriedState;
};

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
  /** A row's cost from the model's price table, USD (planning's estimate; absent when unknown). */
  rowCostEstimateUsd?: number;
  /** Rows that reported one after another that they could not connect to the provider. */
  unreachableRows?: number;
  /** The results refresher's clock and the rows it still owes a rewrite (workflows/dataset/resultsRefresh.ts). */
  refresh?: ResultsRefreshCarried;
  /**
   * The run's --batch phase, when the direct pass takes over only the rows its batches did not
   * refuse for good (BatchPhaseOutcome.directPhase): the main pass leaves that phase's final failures.
   */
  batchDirectPhase?: string;
}

export interface ResultsRefreshCarried {
  /** Rows finished at the last rewrite. */
  lastFinished: number;
  /** When the last rewrite started, ms since the epoch (workflow time). */
  lastAt: number;
  /** A full rewrite was made in this run: the next ones read only the rows finished since. */
  based: boolean;
  /** Rows finished since the last rewrite, as [first, last] index ranges. */
  changed: Array<[number, number]>;
}

export interface RunCountsState {
  ok: number;
  failedByType: Record<string, number>;
  /** Rows that finished (either way) since the run started, for the rate. */
  finished: number;
  /** Estimated spend of the rows this run finished (their ledger cost), USD; absent until one reports a cost. */
  spentUsd?: number;
  /** Rows finished with a cost since the budget was set (the mean cost of a row). */
  costedRows?: number;
}

export interface PauseState {
  reason: string;
  /** When it lifts by itself (a quota reset), ISO time. */
  until?: string;
  /** Paused because the spend reached --max-cost: lifted by a higher budget. */
  budget?: boolean;
  /** Paused because rows one after another could not connect to the provider. */
  unreachable?: boolean;
  /**
   * Paused because the run's store failed (down, its bucket gone, credentials refused): lifts by
   * itself once a probe write to the run folder succeeds (workflows/dataset/storePause.ts).
   */
  store?: boolean;
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
  /** The row as the Temporal UI shows it in the row child's input: instruction(s) and input images. */
  display?: RowDisplay;
  /** The row's plan line, for its task (the page read it): small rows of runs that ask for it. */
  plan?: TaskPlanRow;
  /** The page found no ledger entry and no stored answer for the row. */
  fresh?: boolean;
}

/** What a row child's input shows a person in the Temporal UI (not used by any code). */
export interface RowDisplay {
  /** The instruction (turns joined by →), cut to a few hundred characters. */
  instruction: string;
  /** Where the input images are: paths, URLs without their query, blob keys; inline images as `data:…`. */
  inputs: string[];
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
  /** A row's cost from the model's price table, USD, when the table gives one (the --max-cost reserve). */
  rowCostEstimateUsd?: number;
}

/** What nextRowsPage reads: the page of the plan from `cursor` and how its rows are chosen. */
export interface RowsPageArgs {
  outputDir: string;
  cursor: number;
  limit: number;
  filterRows?: string;
  selection?: RetrySelection;
  /**
   * The run's --batch phase (direct fallback): rows its batches failed with a final class are
   * left failed, and the others are not counted as a retry of a counted failure (the phase did
   * not count them).
   */
  batchPhase?: string;
  /**
   * Each row comes with its plan line (when small) and whether it is fresh (no ledger entry, no
   * stored answer), for its task: the row activity then reads neither on its first attempt.
   */
  carryRows?: boolean;
  /**
   * A store fault fails the page at once (no activity retry): the workflow pauses the run for the
   * store (patch `atelier-store-pause-lifts`). Absent (older histories): retried as before.
   */
  pauseOnStore?: boolean;
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
  /** For people reading the row in the Temporal UI; the row itself is read from the plan. */
  row?: RowDisplay;
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
  /** The run's endpoint tag (`--base-url`): the row's model call goes to that endpoint's queue. */
  endpoint?: string;
  /** The row's plan line, carried from the page that read it (absent: the activity reads the plan). */
  row?: TaskPlanRow;
  /**
   * When the row was paged it had no ledger entry and no stored answer: a first attempt reads
   * neither (a retry, which may follow a stored answer, reads both).
   */
  fresh?: boolean;
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
  /** A row deferred for an exhausted quota (status failed, errorType QuotaExhausted): when it resets. */
  resetAt?: string;
  /** An ok row's estimated cost (its ledger cost), when known; absent for rows found done in the ledger. */
  costUsd?: number;
  /** An ok row's time from its attempt's start to its commit (GPU rows: the GPU calls'), ms. */
  latencyMs?: number;
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
  /** Rows whose ledger entry could not be read while writing the tables (shown pending, with the reason). */
  unreadableRows?: number;
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
