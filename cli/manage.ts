import { resolve } from 'node:path';
import { WorkflowNotFoundError, type Client, type WorkflowHandle } from '@temporalio/client';
import { UsageError } from '../lib/shared/errors';
import { parseFilterRows } from '../lib/shared/filterRows';
import { ROW_ERROR_TYPES } from '../lib/shared/errorTypes';
import { normaliseErrorType } from '../lib/shared/retrySelection';
import { findRun, type RegisteredRun } from '../lib/run/runRegistry';
import { AtelierRowsFailed, AtelierRowsOk, AtelierRowsTotal } from '../lib/shared/searchAttributes';
import { summarizeLedger } from '../lib/run/summary';
import { formatDuration } from '../lib/shared/eta';
import type { ProgressSnapshot, RetrySelection } from '../lib/shared/types';
import type { datasetWorkflow } from '../workflows';
import { batchJobsQuery } from '../workflows/batchMessages';
import { budgetSignal, pauseSignal, progressQuery, resumeSignal, retryRowsUpdate } from '../workflows/messages';
import { checkModelChoice, startRun, waitForRun } from './edit';
import { ExitCodes, type CliIO } from './io';
import { describeBatchJob, describeMultiTurn } from './progress';
import { openSession } from './session';
import { doneRowsToRedo, failedRowsMatching, retryConclusion, setAsideAll, type MatchedRow } from './retryRows';

// Run management: status, watch, list, retry, cancel, pause, resume. They talk to the server named
// by TEMPORAL_ADDRESS or run by `atelier server` for the state dir; `status` and `retry` also work
// from the run's ledger after the server has forgotten the run.

export interface ManageOptions {
  stateDir: string;
  /** resume: a new budget (--max-cost USD). */
  maxCost?: number;
}

type Handle = WorkflowHandle<typeof datasetWorkflow>;

async function isOpen(handle: Handle): Promise<boolean> {
  try {
    return (await handle.describe()).status.name === 'RUNNING';
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

function failedLines(failedByType: Record<string, number>): string[] {
  return Object.entries(failedByType)
    .filter(([, n]) => n > 0)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([type, n]) => `  failed ${type}: ${n}`);
}

/** The lines `atelier status` prints for a running run. */
export function describeProgress(p: ProgressSnapshot, now = Date.now()): string[] {
  const elapsed = (now - Date.parse(p.startedAt)) / 1000;
  const rate = elapsed > 0 ? p.finished / elapsed : 0;
  const remaining = p.pending + p.inFlight + p.deferred;
  return [
    `state: ${p.phase}${p.paused ? ` (${p.paused.reason}${p.paused.until ? `; resumes at ${p.paused.until}` : '; `atelier resume` to go on'})` : ''}`,
    `rows: ${p.total}  ok: ${p.ok}  failed: ${p.failed}  in flight: ${p.inFlight}  pending: ${p.pending}${p.deferred ? `  deferred: ${p.deferred}` : ''}`,
    ...failedLines(p.failedByType),
    `rate: ${rate.toFixed(2)} rows/s  eta: ${rate > 0 ? formatDuration(remaining / rate) : 'unknown'}`,
    ...(p.spentUsd !== undefined || p.maxCostUsd !== undefined
      ? [`spent (estimate): $${(p.spentUsd ?? 0).toFixed(4)}${p.maxCostUsd !== undefined ? ` of $${p.maxCostUsd} (--max-cost)` : ''}`]
      : []),
  ];
}

async function connect(options: ManageOptions) {
  return openSession({ stateDir: options.stateDir, withWorkers: false, mayStartServer: false });
}

/** Connects if a server is reachable; `status` and `retry` can go on without one. */
async function connectIfPossible(options: ManageOptions) {
  try {
    return await connect(options);
  } catch (err) {
    if (err instanceof UsageError) return undefined;
    throw err;
  }
}

export async function runStatus(runId: string, options: ManageOptions, io: CliIO): Promise<number> {
  const session = await connectIfPossible(options);
  try {
    if (session) {
      const handle = session.client.workflow.getHandle<typeof datasetWorkflow>(runId);
      if (await isOpen(handle)) {
        // A --batch run also shows each job's provider status and request counts.
        const batch = await handle.query(batchJobsQuery).catch(() => null);
        io.out(
          [
            `run ${runId}`,
            ...describeProgress(await handle.query(progressQuery)),
            ...(batch?.jobs ?? []).map(describeBatchJob),
            ...describeMultiTurn(batch),
          ].join('\n'),
        );
        return ExitCodes.ok;
      }
    }
    const known = await findRun(resolve(options.stateDir), runId);
    if (!known) throw new UsageError(`no run ${runId} is running, and the state dir ${options.stateDir} has no record of it`);
    const s = await summarizeLedger(known.input.outputDir, known.input.filterRows);
    const failed = Object.values(s.failedByType).reduce((a, b) => a + b, 0);
    io.out(
      [
        `run ${runId}`,
        'state: not running (from the ledger)',
        `rows: ${s.total}  ok: ${s.ok}  failed: ${failed}  pending: ${s.pending}`,
        ...failedLines(s.failedByType),
        `output dir: ${known.input.outputDir}`,
      ].join('\n'),
    );
    return ExitCodes.ok;
  } finally {
    await session?.close();
  }
}

export async function runWatch(runId: string, options: ManageOptions, io: CliIO): Promise<number> {
  const session = await connect(options);
  try {
    return await waitForRun(session, runId, io);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError)
      throw new UsageError(`the server has no run ${runId}; \`atelier status ${runId}\` reads its ledger`);
    throw err;
  } finally {
    await session.close();
  }
}

export async function runList(options: ManageOptions, io: CliIO): Promise<number> {
  const session = await connect(options);
  try {
    const seen = new Set<string>();
    const lines: string[] = [];
    for await (const wf of session.client.workflow.list({ query: "WorkflowType = 'datasetWorkflow'" })) {
      // Continue-as-new leaves one execution per step: show the newest of each run.
      if (seen.has(wf.workflowId)) continue;
      seen.add(wf.workflowId);
      const attrs = wf.typedSearchAttributes;
      const counts = [AtelierRowsTotal, AtelierRowsOk, AtelierRowsFailed].map((k) => attrs.get(k));
      const rows = counts[0] !== undefined ? `rows ${counts[0]} ok ${counts[1] ?? 0} failed ${counts[2] ?? 0}` : '';
      lines.push(`${wf.workflowId}  ${wf.status.name}  started ${wf.startTime.toISOString()}  ${rows}`.trim());
      if (lines.length >= 200) break;
    }
    io.out(lines.length ? lines.join('\n') : 'no runs');
    return ExitCodes.ok;
  } finally {
    await session.close();
  }
}

export interface RetryOptions extends ManageOptions {
  failed?: boolean;
  rows?: string;
  errorType?: string;
  /** Make done rows again (new seed where the backend takes one; the old output kept as history). */
  redo?: boolean;
  /** Done rows rejected in `atelier view` (implies --redo). */
  rejected?: boolean;
  /** Done rows the judge scored below this (implies --redo). */
  scoreBelow?: number;
  detach?: boolean;
  withWorkers?: boolean;
}

/** The CLI's retry flags as a selection; at least one is required. */
export function retrySelectionFrom(options: RetryOptions): RetrySelection {
  if (!options.failed && options.rows === undefined && options.errorType === undefined) {
    throw new UsageError(
      'say which rows to retry: --failed, --rows 3,7,10:20 and/or --error-type blocked,retryable (done rows: --redo --rows, or --rejected)',
    );
  }
  const selection: RetrySelection = {};
  if (options.rows !== undefined) selection.rows = checkedRows(options.rows);
  if (options.errorType !== undefined) {
    selection.errorTypes = options.errorType.split(',').map((name) => {
      const type = normaliseErrorType(name.trim());
      if (!type) throw new UsageError(`--error-type: unknown class "${name.trim()}"; known: ${ROW_ERROR_TYPES.join(', ')}`);
      return type;
    });
  }
  return selection;
}

function checkedRows(rows: string): string {
  try {
    parseFilterRows(rows);
  } catch (err) {
    throw new UsageError((err as Error).message.replace('--filter-rows', '--rows'));
  }
  return rows;
}

/** What a retry is about to do: the selection to send and the rows it matched in the ledger. */
async function planRetry(
  options: RetryOptions,
  known: RegisteredRun | undefined,
  runId: string,
): Promise<{ selection: RetrySelection; rows?: MatchedRow[]; what: string }> {
  if (options.redo || options.rejected || options.scoreBelow !== undefined) {
    if (options.failed || options.errorType !== undefined)
      throw new UsageError('--redo makes done rows again; --failed and --error-type pick failed rows: use one or the other');
    if (!known)
      throw new UsageError(
        `run ${runId}: the state dir ${options.stateDir} has no record of it, so its output dir is unknown (--redo needs the run's ledger)`,
      );
    const choice = {
      ...(options.rows !== undefined ? { rows: checkedRows(options.rows) } : {}),
      rejected: Boolean(options.rejected),
      ...(options.scoreBelow !== undefined ? { scoreBelow: options.scoreBelow } : {}),
    };
    const rows = await doneRowsToRedo(known.input.outputDir, choice, known.input.filterRows);
    const what = `done row(s)${options.rows !== undefined ? ` at --rows ${options.rows}` : ''}${options.rejected ? ' rejected in the viewer' : ''}${options.scoreBelow !== undefined ? ` scored below ${options.scoreBelow}` : ''}`;
    if (rows.length === 0) return { selection: {}, rows, what };
    return { selection: await setAsideAll(known.input.outputDir, rows), rows, what };
  }
  const selection = retrySelectionFrom(options);
  const what = `failed row(s)${selection.rows !== undefined ? ` at --rows ${selection.rows}` : ''}${selection.errorTypes ? ` of class ${selection.errorTypes.join(', ')}` : ''}`;
  // Without the run's record the ledger is out of reach; the run itself counts (open runs only).
  if (!known) return { selection, what };
  return { selection, rows: await failedRowsMatching(known.input.outputDir, selection, known.input.filterRows), what };
}

/**
 * `atelier retry`: failed rows run again, or with --redo done rows are made again. The rows are
 * matched in the ledger first (none matched: say so, exit 1). An open run takes them through a
 * validated update; a closed run gets a new execution that plans from its recorded input and runs
 * only those rows, and the end reports only them and what this retry spent.
 */
export async function runRetry(runId: string, options: RetryOptions, io: CliIO): Promise<number> {
  const known = await findRun(resolve(options.stateDir), runId);
  const startedAt = new Date().toISOString();
  const { selection, rows, what } = await planRetry(options, known, runId);
  const redo = Boolean(options.redo || options.rejected || options.scoreBelow !== undefined);
  if (rows && rows.length === 0) {
    io.err(`no ${what} in run ${runId}: nothing to retry${redo ? '' : ' (done rows are made again only with --redo)'}`);
    return ExitCodes.usage;
  }
  if (rows) io.out(`${rows.length} ${what} matched${redo ? '; their outputs are kept in the history and they are made again' : ''}`);
  const probe = await connectIfPossible(options);
  if (probe) {
    try {
      const handle = probe.client.workflow.getHandle<typeof datasetWorkflow>(runId);
      if (await isOpen(handle)) {
        const count = await handle.executeUpdate(retryRowsUpdate, { args: [selection] });
        if (count === 0) {
          io.err(`no ${what} in run ${runId}: nothing to retry`);
          return ExitCodes.usage;
        }
        io.out(`${count} row(s) queued to run again in run ${runId}`);
        return ExitCodes.ok;
      }
    } finally {
      await probe.close();
    }
  }
  if (!known) throw new UsageError(`run ${runId} is not running and the state dir ${options.stateDir} has no record of it`);
  // A model retired since the run (or a deprecated one past its shutdown) would fail every row.
  for (const warning of checkModelChoice(known.input)) io.err(`warning: ${warning}`);
  const session = await openSession({
    stateDir: options.stateDir,
    withWorkers: options.withWorkers ?? false,
    mayStartServer: !options.detach,
  });
  try {
    await startRun(session, { ...known.input, retryOnly: selection }, io);
    if (options.detach) {
      io.out(runId);
      return ExitCodes.ok;
    }
    return await waitForRun(session, runId, io, rows ? retryConclusion(known.input.outputDir, rows, startedAt) : undefined);
  } finally {
    await session.close();
  }
}

async function withOpenRun(
  runId: string,
  options: ManageOptions,
  action: (handle: Handle, client: Client) => Promise<string>,
  io: CliIO,
): Promise<number> {
  const session = await connect(options);
  try {
    const handle = session.client.workflow.getHandle<typeof datasetWorkflow>(runId);
    if (!(await isOpen(handle))) throw new UsageError(`run ${runId} is not running`);
    io.out(await action(handle, session.client));
    return ExitCodes.ok;
  } finally {
    await session.close();
  }
}

export const runCancel = (runId: string, options: ManageOptions, io: CliIO) =>
  withOpenRun(
    runId,
    options,
    async (h) => (await h.cancel(), `run ${runId}: cancellation requested (rows in flight are cancelled too)`),
    io,
  );

export const runPause = (runId: string, options: ManageOptions, io: CliIO) =>
  withOpenRun(
    runId,
    options,
    async (h) => (await h.signal(pauseSignal, { reason: 'paused with `atelier pause`' }), `run ${runId}: paused (rows in flight finish)`),
    io,
  );

export const runResume = (runId: string, options: ManageOptions, io: CliIO) =>
  withOpenRun(
    runId,
    options,
    async (h) => {
      // A higher budget first: it lifts a budget pause that a plain resume keeps.
      if (options.maxCost !== undefined) await h.signal(budgetSignal, { maxCostUsd: options.maxCost });
      await h.signal(resumeSignal);
      const p = await h.query(progressQuery);
      if (p.paused?.budget) return `run ${runId}: still paused: ${p.paused.reason}`;
      return `run ${runId}: resumed${options.maxCost !== undefined ? ` with a budget of $${options.maxCost}` : ''}`;
    },
    io,
  );
