import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowNotFoundError, type Client, type WorkflowHandle } from '@temporalio/client';
import { UsageError } from '../lib/shared/errors';
import { API_BACKENDS } from '../activities/providers/registry';
import { ROW_ERROR_TYPES } from '../lib/shared/errorTypes';
import { normaliseErrorType } from '../lib/shared/retrySelection';
import { findRun, listRuns, type RegisteredRun } from '../lib/run/runRegistry';
import { AtelierRowsFailed, AtelierRowsOk, AtelierRowsTotal } from '../lib/shared/searchAttributes';
import { summarizeLedger } from '../lib/run/summary';
import { formatDuration } from '../lib/shared/eta';
import type { ProgressSnapshot, RetrySelection } from '../lib/shared/types';
import type { datasetWorkflow } from '../workflows';
import { batchJobsQuery } from '../workflows/batchMessages';
import { budgetSignal, pauseSignal, progressQuery, resumeSignal, retryRowsUpdate } from '../workflows/messages';
import { checkModelChoice, QUERY_DEADLINE_MS, startRun, waitForRun } from './edit';
import { runQueues, watchWorkers } from './workerCheck';
import type { Command } from 'commander';
import { ExitCodes, type CliIO, type CommandContext } from './io';
import { addExamples, addOptions, checkedRows, inGroup, nonNegativeNumber, Opt, type OptionsOf } from './options';
import { ROWS, RUN_CONTROL, STATE, WORKERS } from './optionGroups';
import { describeBatchJob, describeMultiTurn, pauseReason } from './progress';
import { openSession } from './session';
import { doneRowsToRedo, failedRowsMatching, positionsSpec, retryConclusion, setAsideAll, type MatchedRow } from './retryRows';

// Run management: status, watch, list, retry, cancel, pause, resume. They talk to the server named
// by TEMPORAL_ADDRESS or run by `atelier server` for the state dir; `status` and `retry` also work
// from the run's ledger after the server has forgotten the run.

/** `resume`'s options; the other commands on one run take only the state dir. */
export const RESUME_OPTIONS = {
  /** A new budget (USD). */
  maxCost: RUN_CONTROL.maxCost,
  ...STATE,
};

export type ManageOptions = OptionsOf<typeof RESUME_OPTIONS>;

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

/** Rows finished per second over a recent stretch of time (`atelier status` samples it twice). */
export interface RecentRate {
  finished: number;
  seconds: number;
}

/**
 * The lines `atelier status` prints for a running run. The rate and ETA come from `recent` (what
 * finished in the last seconds) when given: an average since the workflow's start says "0.02
 * rows/s" for a run that sat paused for an hour and now does 2 rows/s.
 */
export function describeProgress(p: ProgressSnapshot, now = Date.now(), recent?: RecentRate): string[] {
  const elapsed = (now - Date.parse(p.startedAt)) / 1000;
  const average = elapsed > 0 ? p.finished / elapsed : 0;
  const remaining = p.pending + p.inFlight + p.deferred;
  const rate = recent && recent.seconds > 0 ? recent.finished / recent.seconds : average;
  const over = recent ? ` over the last ${Math.round(recent.seconds)} s` : ' since the start';
  const advice = p.paused?.budget
    ? `; \`atelier resume ${p.runId} --max-cost USD\` raises the budget (a plain resume stays paused at it)`
    : p.paused?.until
      ? `; resumes at ${p.paused.until}`
      : p.paused?.store
        ? `; resumes by itself once the store answers (probed up to every minute), or \`atelier resume ${p.runId}\``
        : `; \`atelier resume ${p.runId}\` to go on`;
  return [
    `state: ${p.phase}${p.paused ? ` (${pauseReason(p)}${advice})` : ''}`,
    `rows: ${p.total}  ok: ${p.ok}  failed: ${p.failed}  in flight: ${p.inFlight}  pending: ${p.pending}${p.deferred ? `  deferred: ${p.deferred}` : ''}`,
    ...failedLines(p.failedByType),
    p.paused
      ? 'rate: paused  eta: none while paused'
      : `rate: ${rate.toFixed(2)} rows/s${over}  eta: ${rate > 0 ? formatDuration(remaining / rate) : 'unknown'}`,
    ...(p.spentUsd !== undefined || p.maxCostUsd !== undefined
      ? [`spent (estimate): $${(p.spentUsd ?? 0).toFixed(4)}${p.maxCostUsd !== undefined ? ` of $${p.maxCostUsd} (--max-cost)` : ''}`]
      : []),
  ];
}

/** How long `atelier status` watches a running run to measure its current rate. */
const STATUS_SAMPLE_MS = 3000;

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
  let openButSilent = false;
  try {
    if (session) {
      const handle = session.client.workflow.getHandle<typeof datasetWorkflow>(runId);
      const quick = <T>(read: () => Promise<T>) => session.client.connection.withDeadline(Date.now() + QUERY_DEADLINE_MS, read);
      if (await quick(() => isOpen(handle)).catch(() => false)) {
        // No worker may be there to answer (the query then times out): the ledger still knows.
        const first = await quick(() => handle.query(progressQuery)).catch(() => undefined);
        let progress = first;
        let recent: RecentRate | undefined;
        if (first && !first.paused && first.phase === 'running' && first.pending + first.inFlight > 0) {
          const startedAt = Date.now();
          await sleep(STATUS_SAMPLE_MS);
          const second = await quick(() => handle.query(progressQuery)).catch(() => undefined);
          if (second && second.finished >= first.finished) {
            progress = second;
            recent = { finished: second.finished - first.finished, seconds: (Date.now() - startedAt) / 1000 };
          }
        }
        if (progress) {
          // A --batch run also shows each job's provider status and request counts.
          const batch = await quick(() => handle.query(batchJobsQuery)).catch(() => null);
          io.out(
            [
              `run ${runId}`,
              ...describeProgress(progress, Date.now(), recent),
              ...(batch?.jobs ?? []).map(describeBatchJob),
              ...describeMultiTurn(batch),
            ].join('\n'),
          );
          return ExitCodes.ok;
        }
        openButSilent = true;
      }
    }
    const known = await findRun(resolve(options.stateDir), runId);
    if (!known) throw new UsageError(`no run ${runId} is running, and the state dir ${options.stateDir} has no record of it`);
    // A run no worker has planned yet has no plan to count from: said, not thrown.
    const s = await summarizeLedger(known.input.outputDir, known.input.filterRows).catch((err: unknown) => {
      if (/has no plan yet/.test((err as Error).message)) return undefined;
      throw err;
    });
    const failed = s ? Object.values(s.failedByType).reduce((a, b) => a + b, 0) : 0;
    io.out(
      [
        `run ${runId}`,
        openButSilent
          ? `state: open, but no worker answered its progress query within ${QUERY_DEADLINE_MS / 1000} s (is \`npx atelier worker\` running for this server?); counts from the ledger`
          : `state: not running${session ? '' : ' (or no server is up for this state dir)'}; counts from the ledger`,
        s
          ? `rows: ${s.total}  ok: ${s.ok}  failed: ${failed}  pending: ${s.pending}`
          : 'rows: not planned yet (no worker has read the dataset)',
        ...(s ? failedLines(s.failedByType) : []),
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

/** The most runs `atelier list` shows. */
const LIST_LIMIT = 200;

/**
 * `atelier list` with no server up: the runs the state dir records, newest first, with counts
 * from each run's ledger (what `status` shows for a run the server does not know).
 */
async function listRecordedRuns(options: ManageOptions, io: CliIO): Promise<number> {
  const runs = (await listRuns(resolve(options.stateDir))).slice(0, LIST_LIMIT);
  if (runs.length === 0) {
    io.out(`no runs: no server is up for state dir ${options.stateDir}, and it records none`);
    return ExitCodes.ok;
  }
  const lines = [`no server is up for state dir ${options.stateDir}: the runs it records (counts from each ledger)`];
  for (const { input, createdAt } of runs) {
    const counts = await summarizeLedger(input.outputDir, input.filterRows).then(
      (s) => `rows ${s.total} ok ${s.ok} failed ${Object.values(s.failedByType).reduce((a, b) => a + b, 0)}`,
      (err: unknown) => (/has no plan yet/.test((err as Error).message) ? 'not planned yet' : 'ledger unreadable'),
    );
    lines.push(`${input.runId}  started ${createdAt}  ${counts}  ${input.outputDir}`);
  }
  io.out(lines.join('\n'));
  return ExitCodes.ok;
}

export async function runList(options: ManageOptions, io: CliIO): Promise<number> {
  const session = await connectIfPossible(options);
  if (!session) return listRecordedRuns(options, io);
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
      if (lines.length >= LIST_LIMIT) break;
    }
    io.out(lines.length ? lines.join('\n') : 'no runs');
    return ExitCodes.ok;
  } finally {
    await session.close();
  }
}

/** Which rows `retry` takes again. */
const RETRY_SELECTION = inGroup('Row selection:', {
  failed: Opt.flag('--failed', 'every failed row'),
  ...ROWS,
  errorType: Opt.text(
    '--error-type <list>',
    'only rows failed with these classes: retryable, blocked, invalid-request, quota-exhausted, input-error, ...',
  ),
  /** Make done rows again (new seed where the backend takes one; the old output kept as history). */
  redo: Opt.flag(
    '--redo',
    'make done rows again (with --rows): a new seed where the backend takes one, the old output kept in .atelier/history/',
  ),
  /** Done rows rejected in `atelier view` (implies --redo). */
  rejected: Opt.flag('--rejected', 'make again the done rows rejected in `atelier view` (implies --redo; with --score-below: either)'),
  /** Done rows the judge scored below this (implies --redo). */
  scoreBelow: Opt.parsed(
    '--score-below <x>',
    'make again the done rows `atelier judge` scored below this overall score, 0-10 (implies --redo)',
    nonNegativeNumber,
  ),
  /** With --score-below: also rows a person accepted in the viewer (kept otherwise). */
  includeAccepted: Opt.flag(
    '--include-accepted',
    'with --score-below: also rows a person accepted in `atelier view` (kept and reported otherwise)',
  ),
});

export const RETRY_OPTIONS = { ...RETRY_SELECTION, ...STATE, detach: RUN_CONTROL.detach, withWorkers: WORKERS.withWorkers };

export type RetryOptions = OptionsOf<typeof RETRY_OPTIONS>;

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

/** What a retry is about to do: the selection to send and the rows it matched in the ledger. */
async function planRetry(
  options: RetryOptions,
  known: RegisteredRun | undefined,
  runId: string,
  say: (line: string) => void,
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
      includeAccepted: Boolean(options.includeAccepted),
    };
    const { rows, keptAccepted } = await doneRowsToRedo(known.input.outputDir, choice, known.input.filterRows);
    if (keptAccepted.length > 0)
      say(
        `${keptAccepted.length} row(s) scored below ${options.scoreBelow} were accepted in the viewer and are kept (positions ${positionsSpec(keptAccepted.map((r) => r.position))}; --include-accepted redoes them too)`,
      );
    const flags = [
      options.rejected ? 'rejected in the viewer' : '',
      options.scoreBelow !== undefined ? `scored below ${options.scoreBelow}` : '',
    ]
      .filter(Boolean)
      .join(' or ');
    const what = `done row(s)${options.rows !== undefined ? ` at --rows ${options.rows}` : ''}${flags ? ` ${flags}` : ''}`;
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
  const { selection, rows, what } = await planRetry(options, known, runId, io.err);
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
  // A run started with --base-url: in-process workers serve its endpoint queue only with that URL.
  if (known.input.endpoint && known.baseUrl && known.input.backend !== 'diffusers')
    process.env[API_BACKENDS[known.input.backend].baseUrl] = known.baseUrl;
  const session = await openSession({
    stateDir: options.stateDir,
    withWorkers: options.withWorkers ?? false,
    mayStartServer: !options.detach,
  });
  let stopWatching: (() => void) | undefined;
  try {
    await startRun(session, { ...known.input, retryOnly: selection }, io);
    stopWatching = session.workers.length === 0 ? await watchWorkers(session, runQueues(known.input, known.baseUrl), io.err) : undefined;
    if (options.detach) {
      io.out(runId);
      return ExitCodes.ok;
    }
    return await waitForRun(session, runId, io, rows ? retryConclusion(known.input.outputDir, rows, startedAt) : undefined);
  } finally {
    stopWatching?.();
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

/** A command on one run (`<run-id>`) that takes only the state dir. */
function registerOnRun(
  program: Command,
  { io, setExit }: CommandContext,
  name: string,
  description: string,
  run: (runId: string, opts: ManageOptions, io: CliIO) => Promise<number>,
  examples: ReadonlyArray<readonly [string, string]>,
): void {
  const cmd = program.command(`${name} <run-id>`).description(description);
  addOptions(cmd, STATE).action(async (runId: string, opts: ManageOptions) => setExit(await run(runId, opts, io)));
  addExamples(cmd, examples);
}

/** The run management commands: status, watch, cancel, pause, resume, list, retry. */
export function registerManage(program: Command, ctx: CommandContext): void {
  const { io, setExit } = ctx;
  registerOnRun(program, ctx, 'status', 'counts (ok, failed by class, pending, in flight), rate and ETA of a run', runStatus, [
    ['atelier status atelier-edits-1a2b3c4d5e6f', 'how far a run is (from its ledger once the server has forgotten it)'],
    ['TEMPORAL_ADDRESS=host:7233 atelier status atelier-edits-1a2b3c4d5e6f', 'a run on a shared server'],
  ]);
  registerOnRun(program, ctx, 'watch', 'a live progress bar until the run ends; exit codes as for edit', runWatch, [
    ['atelier watch atelier-edits-1a2b3c4d5e6f', 'follow a run started with --detach'],
  ]);
  registerOnRun(program, ctx, 'cancel', 'cancel a run and its rows in flight', runCancel, [
    ['atelier cancel atelier-edits-1a2b3c4d5e6f', 'stop a run for good (the same edit command starts it again)'],
  ]);
  registerOnRun(program, ctx, 'pause', 'stop dispatching rows (rows in flight finish)', runPause, [
    ['atelier pause atelier-edits-1a2b3c4d5e6f', 'let the rows in flight finish and send no more'],
  ]);

  const resume = program
    .command('resume <run-id>')
    .description('dispatch rows again after a pause, a quota stop or a budget stop (--max-cost raises the budget)');
  addOptions(resume, RESUME_OPTIONS).action(async (runId: string, opts: ManageOptions) => setExit(await runResume(runId, opts, io)));
  addExamples(resume, [
    ['atelier resume atelier-edits-1a2b3c4d5e6f', 'go on after a pause or a quota stop'],
    ['atelier resume atelier-edits-1a2b3c4d5e6f --max-cost 20', 'go on after a budget stop, with a budget of $20'],
  ]);

  const list = program.command('list').description('runs on the server, newest first, with their state');
  addOptions(list, STATE).action(async (opts: ManageOptions) => setExit(await runList(opts, io)));
  addExamples(list, [['atelier list', "the runs of the server for ./.atelier (or TEMPORAL_ADDRESS's)"]]);

  const retry = program
    .command('retry <run-id>')
    .description(
      'run failed rows again, or with --redo make done rows again: an open run takes them at once; a closed run gets a new execution from its ledger',
    );
  addOptions(retry, RETRY_OPTIONS).action(async (runId: string, opts: RetryOptions) => setExit(await runRetry(runId, opts, io)));
  addExamples(retry, [
    ['atelier retry atelier-edits-1a2b3c4d5e6f --failed', 'every failed row again'],
    ['atelier retry atelier-edits-1a2b3c4d5e6f --error-type retryable,quota-exhausted', 'only rows failed for these reasons'],
    ['atelier retry atelier-edits-1a2b3c4d5e6f --redo --rows 3,7,10:20', 'make these done rows again (old outputs kept in the history)'],
    ['atelier retry atelier-edits-1a2b3c4d5e6f --rejected --score-below 5', 'rows rejected in the viewer or scored below 5 by the judge'],
  ]);
}
