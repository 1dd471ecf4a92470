import {
  ActivityFailure,
  allHandlersFinished,
  ApplicationFailure,
  CancelledFailure,
  CancellationScope,
  ChildWorkflowFailure,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  startChild,
  TerminatedFailure,
  TimeoutFailure,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { OrchestrationActivities } from '../activities/orchestration';
import { validateRetrySelection } from '../lib/retrySelection';
import { AtelierRowsFailed, AtelierRowsOk, AtelierRowsTotal } from '../lib/searchAttributes';
import { ErrorTypes, pauseReason, PAUSING_ERROR_TYPES } from '../lib/types';
import type {
  CarriedState,
  DatasetRunSummary,
  DatasetWorkflowInput,
  PlanRunResult,
  ProgressSnapshot,
  RetrySelection,
  RowDone,
  RowOutcome,
  RowRef,
} from '../lib/types';
import { budgetSignal, pauseSignal, progressQuery, reportBySignal, resumeSignal, retryRowsUpdate, rowDoneSignal } from './messages';
import { failureOf, rowWorkflow } from './row';

const { planRun, nextRowsPage, writeResults, countRetryRows } = proxyActivities<OrchestrationActivities>({
  // Planning streams the whole dataset; give large inputs room.
  startToCloseTimeout: '30 minutes',
  retry: { maximumAttempts: 5 },
});

/** Continue as new well before the 10k-event warning, whatever the server suggests. */
const DEFAULT_MAX_HISTORY_EVENTS = 8000;

/** Row children are ids `<runId>/row/<index>`: deterministic, so a re-run finds the same rows. */
export function rowWorkflowId(runId: string, index: number): string {
  return `${runId}/row/${index}`;
}

/**
 * A dataset problem fails the run with the activity's own ApplicationFailure (type and message),
 * so the UI and the CLI show "data.csv: no "instruction" column", not "activity task failed".
 */
async function planRunOrExplain(input: DatasetWorkflowInput): Promise<PlanRunResult> {
  try {
    return await planRun(input);
  } catch (err) {
    if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.nonRetryable) {
      throw ApplicationFailure.create({ type: err.cause.type ?? 'PlanningError', message: err.cause.message, nonRetryable: true });
    }
    throw err;
  }
}

function resultsArgs(input: DatasetWorkflowInput) {
  return {
    runId: input.runId,
    outputDir: input.outputDir,
    ...(input.outputCsv ? { outputCsv: input.outputCsv } : {}),
    ...(input.promptEnhance ? { instructionEnhanced: true } : {}),
  };
}

/** What a row child's completion says about its row: the same report it would have signalled. */
function reportOfResult(row: RowRef, outcome: RowOutcome): RowDone {
  const ref = { position: row.position, index: row.index };
  if (outcome.status === 'ok') return { ...ref, status: 'ok', ...(outcome.costUsd !== undefined ? { costUsd: outcome.costUsd } : {}) };
  const error = { errorType: outcome.errorType ?? 'Error', ...(outcome.error ? { error: outcome.error } : {}) };
  // A child returns (rather than fails) with a failure when the provider's quota ran out or the
  // run's storage refused a write: the run pauses.
  if (PAUSING_ERROR_TYPES.includes(outcome.errorType ?? '')) return { ...ref, status: 'deferred', ...error, ...(outcome.resetAt ? { resetAt: outcome.resetAt } : {}) };
  return { ...ref, status: 'failed', ...error };
}

/** What a row child's failure says about its row (the child fails with its row's error class). */
function reportOfFailure(row: RowRef, err: unknown): RowDone {
  const ref = { position: row.position, index: row.index, status: 'failed' as const };
  const cause = err instanceof ChildWorkflowFailure ? err.cause : err;
  // The child ran no code of its own to say why: name the reason the server gave.
  if (cause instanceof CancelledFailure) return { ...ref, errorType: 'Cancelled', error: 'the row was cancelled' };
  if (cause instanceof TerminatedFailure) return { ...ref, errorType: 'Terminated', error: 'the row child was terminated' };
  if (cause instanceof TimeoutFailure) return { ...ref, errorType: 'Timeout', error: 'the row child timed out' };
  return { ...ref, ...failureOf(err) };
}

function sum(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/**
 * One dataset run. Plans the rows (first execution only), then keeps a sliding window of row
 * children: at most `window` in flight. A run hears of its own children's end from their completion;
 * children that outlive it (continue-as-new) report by signal to the workflow id. Rows the ledger holds as done
 * start no child. The history stays bounded: the workflow continues as new when the server suggests
 * it or past `maxHistoryEvents`, carrying counts and cursors only. Pause, resume and retry arrive as
 * signals and an update; a provider's exhausted quota pauses the run instead of failing rows.
 */
export async function datasetWorkflow(rawInput: DatasetWorkflowInput): Promise<DatasetRunSummary> {
  let phase: ProgressSnapshot['phase'] = rawInput.carried ? 'running' : 'planning';
  let input = rawInput;
  // The carried state is in place before any handler is registered: setHandler delivers the
  // signals buffered for this run at once, and a row's report must find its row in flight.
  let state: CarriedState = rawInput.carried!;
  const inFlight = new Set<number>(rawInput.carried?.inFlight ?? []);
  // Rows fetched but not dispatched yet (not carried: the cursor points back at the first of them).
  let page: RowRef[] = [];

  const snapshot = (): ProgressSnapshot => {
    const failed = state ? sum(state.counts.failedByType) : 0;
    const total = state?.plan.selectedRows ?? 0;
    const ok = state?.counts.ok ?? 0;
    return {
      runId: input.runId,
      phase: phase === 'running' && state?.paused ? 'paused' : phase,
      total,
      ok,
      failed,
      failedByType: { ...(state?.counts.failedByType ?? {}) },
      inFlight: inFlight.size,
      deferred: state?.deferred.length ?? 0,
      pending: Math.max(0, total - ok - failed - inFlight.size),
      paused: state?.paused ?? null,
      finished: state?.counts.finished ?? 0,
      startedAt: state?.startedAt ?? new Date().toISOString(),
      continuedAsNew: state?.continuedAsNew ?? 0,
      retryPassesQueued: state?.retryQueue.length ?? 0,
      ...(state?.counts.spentUsd !== undefined ? { spentUsd: state.counts.spentUsd } : {}),
      ...(state?.maxCostUsd !== undefined ? { maxCostUsd: state.maxCostUsd } : {}),
    };
  };

  // The Temporal UI shows this on the run's page.
  const refreshDetails = () => {
    const p = snapshot();
    const failedRows = Object.entries(p.failedByType)
      .filter(([, n]) => n > 0)
      .map(([type, n]) => `| failed: ${type} | ${n} |`);
    setCurrentDetails(
      [
        `**${p.runId}**: ${p.phase}${p.paused ? ` (${p.paused.reason}${p.paused.until ? `, until ${p.paused.until}` : ''})` : ''}`,
        '',
        '| rows | count |',
        '| --- | --- |',
        `| total | ${p.total} |`,
        `| ok | ${p.ok} |`,
        ...failedRows,
        `| in flight | ${p.inFlight} |`,
        `| pending | ${p.pending} |`,
        ...(p.deferred ? [`| deferred (quota) | ${p.deferred} |`] : []),
        ...(p.spentUsd !== undefined || p.maxCostUsd !== undefined ? [`| spent (estimate) | $${(p.spentUsd ?? 0).toFixed(4)}${p.maxCostUsd !== undefined ? ` of $${p.maxCostUsd}` : ''} |`] : []),
      ].join('\n'),
    );
  };

  let lastSearchUpsert = 0;
  const upsertCounts = (force: boolean) => {
    if (!input.searchAttributes || !state) return;
    const done = state.counts.finished;
    // One history event per upsert: a few dozen per run at most.
    if (!force && done - lastSearchUpsert < Math.max(50, Math.ceil(state.plan.selectedRows / 40))) return;
    lastSearchUpsert = done;
    upsertSearchAttributes([
      { key: AtelierRowsTotal, value: state.plan.selectedRows },
      { key: AtelierRowsOk, value: state.counts.ok },
      { key: AtelierRowsFailed, value: sum(state.counts.failedByType) },
    ]);
  };

  const overBudget = (): boolean => state?.maxCostUsd !== undefined && (state.counts.spentUsd ?? 0) >= state.maxCostUsd;
  const budgetReason = () => `budget reached: $${(state.counts.spentUsd ?? 0).toFixed(4)} of $${state.maxCostUsd} spent (raise it with \`atelier resume <run-id> --max-cost USD\`)`;
  // --max-cost: the spend reached the budget: stop dispatching (rows in flight finish). Only runs
  // with a budget take this path; the marker keeps it out of the replay of older histories.
  const checkBudget = (): void => {
    if (!state.paused && overBudget() && patched('atelier-max-cost')) state.paused = { reason: budgetReason(), budget: true };
  };

  // A row's end, whether it comes as the child's completion or as its rowDone signal (rows that
  // outlived the run that started them); the first report of a row in flight counts.
  const finishRow = (done: RowDone): void => {
    if (!state || !inFlight.delete(done.index)) return; // not ours, or reported twice
    if (done.costUsd !== undefined) state.counts.spentUsd = Math.round(((state.counts.spentUsd ?? 0) + done.costUsd) * 1e6) / 1e6;
    checkBudget();
    if (done.status === 'ok') state.counts.ok += 1;
    else if (done.status === 'failed') {
      const type = done.errorType ?? 'Error';
      state.counts.failedByType[type] = (state.counts.failedByType[type] ?? 0) + 1;
    } else {
      const why = done.errorType === ErrorTypes.storageError ? 'storage' : 'quota';
      state.deferred.push({ position: done.position, index: done.index, summary: `row ${done.index} (deferred: ${why})` });
      state.paused ??= { reason: pauseReason(done.errorType, done.error), ...(done.resetAt ? { until: done.resetAt } : {}) };
    }
    if (done.status !== 'deferred') state.counts.finished += 1;
    upsertCounts(false);
    refreshDetails();
  };
  setHandler(progressQuery, snapshot);
  setHandler(rowDoneSignal, finishRow);
  setHandler(pauseSignal, ({ reason }) => {
    if (!state) return;
    state.paused = { reason: reason ?? 'paused by request' };
    refreshDetails();
  });
  setHandler(resumeSignal, () => {
    if (!state) return;
    // Over the budget, a plain resume keeps the budget pause: only a higher budget lifts it.
    state.paused = overBudget() ? { reason: budgetReason(), budget: true } : null;
    refreshDetails();
  });
  setHandler(budgetSignal, ({ maxCostUsd }) => {
    if (!state) return;
    state.maxCostUsd = maxCostUsd;
    if (state.paused?.budget && !overBudget()) state.paused = null;
    checkBudget();
    refreshDetails();
  });
  setHandler(
    retryRowsUpdate,
    async (selection: RetrySelection) => {
      const count = await countRetryRows({ outputDir: input.outputDir, selection, filterRows: input.filterRows });
      if (count > 0) state.retryQueue.push(selection);
      refreshDetails();
      return count;
    },
    {
      validator: (selection: RetrySelection) => {
        validateRetrySelection(selection);
        if (phase !== 'running') throw new Error(`the run is ${phase}; retry rows of a finished run with a new execution`);
      },
    },
  );

  try {
    if (!rawInput.carried) {
      const plan = await planRunOrExplain(rawInput);
      input = plan.input;
      state = {
        plan: { totalRows: plan.totalRows, selectedRows: plan.selectedRows },
        cursor: 0,
        pass: rawInput.retryOnly ?? 'main',
        retryQueue: [],
        inFlight: [],
        deferred: [],
        counts: { ok: plan.alreadyOk, failedByType: plan.failedByType, finished: 0 },
        paused: null,
        startedAt: new Date(workflowInfo().startTime).toISOString(),
        continuedAsNew: 0,
        ...(input.maxCostUsd !== undefined ? { maxCostUsd: input.maxCostUsd } : {}),
      };
      if (input.searchAttributes) upsertSearchAttributes([{ key: AtelierRowsTotal, value: plan.selectedRows }]);
    }
    phase = 'running';
    refreshDetails();

    const nextRow = async (): Promise<RowRef | undefined> => {
      for (;;) {
        const row = page.shift();
        if (row) return row;
        if (state.cursor === null) return undefined;
        const result = await nextRowsPage({
          outputDir: input.outputDir,
          cursor: state.cursor,
          limit: Math.max(100, input.window * 4),
          ...(input.filterRows ? { filterRows: input.filterRows } : {}),
          ...(state.pass !== 'main' ? { selection: state.pass } : {}),
        });
        page = result.rows;
        state.cursor = result.nextCursor;
      }
    };

    // Child starts in flight: many start in one workflow task instead of one task each. Awaited
    // before continuing as new, so no start is lost in between.
    const starting = new Set<Promise<void>>();
    // Children this run started and is still waiting on: it hears of their end from their
    // completion (no signal, no extra history), unless it continues as new first.
    const ownChildren = new Map<number, Promise<void>>();

    /** Tells a running row child to report by signal; false when it has already ended. */
    const handOver = (index: number): Promise<boolean> =>
      getExternalWorkflowHandle(rowWorkflowId(input.runId, index))
        .signal(reportBySignal)
        .then(
          () => true,
          () => false,
        );

    const startRow = async (row: RowRef, attempt = 1): Promise<void> => {
      let handle;
      try {
        handle = await startChild(rowWorkflow, {
          workflowId: rowWorkflowId(input.runId, row.index),
          args: [
            {
              task: {
                runId: input.runId,
                outputDir: input.outputDir,
                position: row.position,
                index: row.index,
                backend: input.backend,
                model: input.model,
                params: input.params,
                numImages: input.numImages,
                encoding: input.encoding,
                imageCacheDir: input.imageCacheDir!,
                ...(input.download ? { download: input.download } : {}),
                ...(input.gpu ? { gpu: input.gpu } : {}),
                ...(input.promptEnhance ? { promptEnhance: input.promptEnhance } : {}),
              },
              retry: input.retry,
              ...(input.searchAttributes ? { searchAttributes: true } : {}),
            },
          ],
          staticSummary: `row ${row.index}: ${row.summary}`,
          // Children may outlive this run (continue-as-new); they must not be cancelled with it.
          parentClosePolicy: ParentClosePolicy.ABANDON,
          // Retries live on the model activity; a row child runs once and reports.
          retry: { maximumAttempts: 1 },
        });
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError && attempt < 3) {
          // Still running from an earlier execution of this run (before a reset or a terminate): it
          // reports by signal once told to. If it ended in between, start the row again; the
          // ledger makes that a no-op for a finished row.
          if (await handOver(row.index)) return;
          return startRow(row, attempt + 1);
        }
        inFlight.delete(row.index);
        state.counts.failedByType.ChildStartFailed = (state.counts.failedByType.ChildStartFailed ?? 0) + 1;
        state.counts.finished += 1;
        refreshDetails();
        return;
      }
      const ended = handle
        .result()
        .then(
          (outcome) => finishRow(reportOfResult(row, outcome)),
          (err: unknown) => finishRow(reportOfFailure(row, err)),
        )
        .finally(() => ownChildren.delete(row.index));
      ownChildren.set(row.index, ended);
    };

    const dispatch = (row: RowRef): void => {
      if (row.previousErrorType) {
        // It counted as failed; now it is in flight again.
        const n = (state.counts.failedByType[row.previousErrorType] ?? 1) - 1;
        state.counts.failedByType[row.previousErrorType] = Math.max(0, n);
      }
      inFlight.add(row.index);
      const tracked: Promise<void> = startRow(row).finally(() => starting.delete(tracked));
      starting.add(tracked);
      refreshDetails();
    };

    // Before continuing as new: the rows still running will outlive this run, so from now on they
    // report by signal to the workflow id. One that has ended meanwhile (the signal fails) has its
    // completion on the way to this run, which waits for it. A few signals per continue-as-new,
    // against one per row if every child signalled.
    const handOverRunningRows = async (): Promise<void> => {
      await Promise.all(
        [...ownChildren.entries()].map(async ([index, ended]) => {
          if (!(await handOver(index))) await ended;
        }),
      );
    };

    // Waits for `ready`; a pause with an end time (a quota reset) lifts itself when it comes.
    const waitFor = async (ready: () => boolean): Promise<void> => {
      for (;;) {
        const pause = state.paused;
        if (!pause?.until) return void (await condition(ready));
        const ms = Date.parse(pause.until) - Date.now();
        if (ms > 0 && (await condition(ready, ms))) return;
        if (state.paused === pause) {
          state.paused = null;
          refreshDetails();
        }
      }
    };

    const historyCap = input.maxHistoryEvents ?? DEFAULT_MAX_HISTORY_EVENTS;
    const shouldContinueAsNew = () => {
      const info = workflowInfo();
      return info.continueAsNewSuggested || info.historyLength >= historyCap;
    };

    for (;;) {
      if (shouldContinueAsNew()) {
        await Promise.all([...starting]);
        await handOverRunningRows();
        await condition(allHandlersFinished);
        const carried: CarriedState = {
          ...state,
          cursor: page[0]?.position ?? state.cursor,
          inFlight: [...inFlight],
          continuedAsNew: state.continuedAsNew + 1,
        };
        upsertCounts(true);
        await continueAsNew<typeof datasetWorkflow>({ ...input, carried });
      }
      await waitFor(() => (!state.paused && inFlight.size < input.window) || shouldContinueAsNew());
      if (shouldContinueAsNew()) continue;
      const row = state.deferred.shift() ?? (await nextRow());
      if (row) {
        dispatch(row);
        continue;
      }
      const queued = state.retryQueue.shift();
      if (queued) {
        state.pass = queued;
        state.cursor = 0;
        continue;
      }
      // Nothing left to start: wait for the rows in flight, unless a retry or a deferred row arrives.
      await waitFor(
        () =>
          (inFlight.size === 0 && state.deferred.length === 0) ||
          state.retryQueue.length > 0 ||
          (!state.paused && state.deferred.length > 0) ||
          shouldContinueAsNew(),
      );
      if (inFlight.size === 0 && state.deferred.length === 0 && state.retryQueue.length === 0) break;
    }

    await Promise.all([...starting]);
    await condition(allHandlersFinished);
    phase = 'writing-results';
    refreshDetails();
    const summary = await writeResults(resultsArgs(input));
    phase = 'done';
    upsertCounts(true);
    refreshDetails();
    return summary;
  } catch (err) {
    if (isCancellation(err)) {
      // Cancelling the run cancels its rows (they were started ABANDON, so it must be said), then
      // leaves the results table consistent with the ledger.
      await CancellationScope.nonCancellable(async () => {
        await Promise.all([...inFlight].map((i) => getExternalWorkflowHandle(rowWorkflowId(input.runId, i)).cancel().catch(() => undefined)));
        if (state) await writeResults(resultsArgs(input));
      });
    }
    throw err;
  }
}
