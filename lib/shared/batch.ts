// Types and rules of provider batch jobs (`atelier edit --batch`) that workflows and activities
// share. Workflow-safe: no Node built-ins. A job's rows live in the run's storage (a manifest per
// job), never in workflow payloads; workflows carry ids and counts.

import { ErrorTypes } from './errorTypes';
import type { BatchBackend } from '../../activities/providers/registry';
import type { DatasetWorkflowInput, DownloadLimits, ModelParams, OutputEncoding } from './types';

/** Backends whose batch APIs Atelier drives: those whose provider spec has a `batch` capability (activities/providers/registry.ts). */
export type { BatchBackend } from '../../activities/providers/registry';

/** `--batch` settings carried in the dataset workflow's input (defined by its schema, lib/run/workflowInput.ts). */
export type BatchSettings = NonNullable<DatasetWorkflowInput['batch']>;

/** What happens to a row the batch did not answer with an image (a per-line error, an expired batch). */
export type BatchFallback = BatchSettings['fallback'];

/**
 * Failure classes a batch records that stay final with `--batch-fallback direct`: the direct path
 * would refuse a safety refusal again (and, with OpenAI, bill the attempt at full price), and an
 * input error is the row's own. The other classes (a transient line error, an expired batch, a 400
 * a batch gives where a direct call may not) go down the direct path.
 */
export const BATCH_FINAL_ERROR_TYPES: readonly string[] = [ErrorTypes.blocked, ErrorTypes.inputError];

/**
 * Provider calls a failed entry records that a batch made for the row's request (its line ran and
 * was answered with an error): the direct path's attempts add to them, so a row called by its batch
 * and then directly says 2.
 */
export function batchCallsBefore(
  prior: { status?: string; digest?: string; attempts?: number; info?: Record<string, string | number> } | undefined,
  digest: string | undefined,
): number {
  if (!prior || prior.status !== 'failed' || !prior.info?.batchId || prior.digest !== digest) return 0;
  return prior.attempts ?? 1;
}

/** Both providers sell batch answers at half the standard price (OpenAI batch guide; Gemini batch-mode page). */
export const BATCH_PRICE_FACTOR = 0.5;

/** One batch job: a child workflow's input. */
export interface BatchJobSpec {
  runId: string;
  outputDir: string;
  /** Unique per job and tagged on the provider's batch (metadata / display name): `<runId>#<phase>-r<round>j<job>`. */
  jobId: string;
  /** The dataset execution that planned the job: rows a batch of this phase failed are not batched again. */
  phaseId: string;
  backend: BatchBackend;
  model: string;
  params: ModelParams;
  numImages: number;
  encoding: OutputEncoding;
  imageCacheDir: string;
  download?: DownloadLimits;
  /** Rows in the job's manifest. */
  rows: number;
  fallback: BatchFallback;
}

/** What `planBatchJobs` found for one round. */
export interface BatchPlan {
  jobs: { jobId: string; rows: number }[];
  /** Multi-turn rows left for the direct path (a batch cannot chain turns). */
  multiTurnDirect: number;
  /** Multi-turn rows failed because the fallback is `fail`. */
  multiTurnRefused: number;
  /** Rows put in a job (or refused) that an earlier run had recorded failed, by class: in flight again. */
  retried: Record<string, number>;
}

/** The provider's batch as Atelier records it before waiting on it. */
export interface BatchSubmission {
  /** Absent when no row of the job needed a call (all done, or all failed their input checks). */
  batchId?: string;
  inputFileId?: string;
  /** Requests sent (rows × calls per row). */
  requests: number;
  /** Rows in the batch. */
  rows: number;
  /** Rows already ok in the ledger (no request). */
  alreadyDone: number;
  /** Rows failed before any call (their own input). */
  inputErrors: number;
  /** Rows that did not fit the provider's file limit: the next round batches them. */
  leftOver: number;
  /** True when an existing batch tagged with this job was found instead of creating one. */
  found?: boolean;
}

/** A provider batch's state, normalised across providers. */
export interface BatchStatus {
  /** The provider's own word (`in_progress`, `JOB_STATE_RUNNING`, ...). */
  providerStatus: string;
  terminal: boolean;
  /** Request counts, when the provider reports them while running. */
  total?: number;
  completed?: number;
  failed?: number;
  /** Why the batch failed as a whole (the provider's validation errors), when it did. */
  error?: string;
}

/** A job's outcome, per row. */
export interface BatchJobResult {
  jobId: string;
  batchId?: string;
  providerStatus?: string;
  ok: number;
  /** Rows the batch did not answer with an image, by failure class (recorded in the ledger). */
  failedByType: Record<string, number>;
  inputErrors: number;
  leftOver: number;
  /** Estimated spend at batch prices, USD. */
  costUsd?: number;
}

/** What the dataset workflow's `batchJobs` query shows per job. */
export interface BatchJobView {
  jobId: string;
  rows: number;
  phase: 'submitting' | 'waiting' | 'collecting' | 'done' | 'cancelled' | 'failed';
  batchId?: string;
  status?: BatchStatus;
  result?: BatchJobResult;
}

/** What a run's batch phase did, for its counts (RunState.applyBatchPhase). */
export interface BatchPhaseOutcome {
  ok: number;
  /**
   * Rows a batch failed that the direct pass sends again (`--batch-fallback direct`, a class not in
   * BATCH_FINAL_ERROR_TYPES): not finished, not counted failed, so the progress never goes back.
   */
  toDirect?: number;
  /**
   * Set (the phase id) when the phase counted only final refusals and the direct pass must leave
   * them (the `atelier-batch-fallback-final` branch); absent in histories recorded before it.
   */
  directPhase?: string;
  /** Rows recorded failed (per-line errors, input errors, refused multi-turn rows), by class. */
  failedByType: Record<string, number>;
  /** Rows an earlier run had recorded failed that went through a batch again, by class. */
  retriedByType: Record<string, number>;
  finished: number;
  costUsd?: number;
}

export interface BatchPhaseView {
  jobs: BatchJobView[];
  multiTurnDirect: number;
  multiTurnRefused: number;
}

/** Where a row's request is named in a batch: `row-<index>` (one call) or `row-<index>-<k>` (Gemini, k-th image). */
export function batchRequestKey(index: number, call?: number): string {
  return call === undefined ? `row-${index}` : `row-${index}-${call}`;
}

export function parseBatchRequestKey(key: string): { index: number; call?: number } | undefined {
  const m = /^row-(\d+)(?:-(\d+))?$/.exec(key);
  if (!m) return undefined;
  return { index: Number(m[1]), ...(m[2] !== undefined ? { call: Number(m[2]) } : {}) };
}
