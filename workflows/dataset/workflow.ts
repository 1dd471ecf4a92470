import {
  ActivityFailure,
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { OrchestrationActivities } from '../../activities/orchestration';
import { validateRetrySelection } from '../../lib/shared/retrySelection';
import { AtelierRowsFailed, AtelierRowsOk, AtelierRowsTotal } from '../../lib/shared/searchAttributes';
import type { DatasetRunSummary, DatasetWorkflowInput, PauseState, PlanRunResult, RetrySelection } from '../../lib/shared/types';
import { runBatchPhase } from '../batchJob';
import { budgetSignal, pauseSignal, progressQuery, resumeSignal, retryRowsUpdate, rowDoneSignal } from '../messages';
import { rowWorkflowId } from './rowReports';
import { ResultsRefresher } from './resultsRefresh';
import { RowWindow } from './rowWindow';
import { liftStorePauses, storeFailureOf } from './storePause';
import { RunState, type EarlyRequests, type RunBranch, type RunPhase } from './runState';
import { PATCH } from '../patches';

const { planRun, countRetryRows } = proxyActivities<OrchestrationActivities>({
  // Planning streams the whole dataset; give large inputs room.
  startToCloseTimeout: '30 minutes',
  retry: { maximumAttempts: 5 },
});

/** The tables rewritten while the run goes: a failure just waits for the next rewrite. */
const { writeResults: refreshResults } = proxyActivities<OrchestrationActivities>({
  startToCloseTimeout: '30 minutes',
  // The write heartbeats every thousand rows: a crashed attempt is retried within minutes, not 30.
  heartbeatTimeout: '2 minutes',
  retry: { maximumAttempts: 2 },
});

/** The final tables (a full rewrite after a cancel): up to 5 attempts, each heartbeating. */
const { writeResults: writeFinalResults } = proxyActivities<OrchestrationActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '2 minutes',
  retry: { maximumAttempts: 5 },
});

/** Continue as new well before the 10k-event warning, whatever the server suggests. */
const DEFAULT_MAX_HISTORY_EVENTS = 8000;

/**
 * One dataset run. Plans the rows (first execution only), then keeps a sliding window of row
 * children: at most `window` in flight (RowWindow). The run's bookkeeping lives in RunState; how
 * rows report back is described in rowReports.ts. Rows the ledger holds as done start no child. The
 * history stays bounded: the workflow continues as new when the server suggests it or past
 * `maxHistoryEvents`, carrying counts and cursors only. Pause, resume and retry arrive as signals and
 * an update; a provider's exhausted quota pauses the run until its reset time instead of failing rows.
 */
export async function datasetWorkflow(rawInput: DatasetWorkflowInput): Promise<DatasetRunSummary> {
  let phase: RunPhase = rawInput.carried ? 'running' : 'planning';
  let input = rawInput;
  let refresher: ResultsRefresher | undefined;
  // Before planning ends there is no state: pause, resume and budget requests wait here.
  const early: EarlyRequests = {};
  let earlyHeard = false;
  // The carried state is in place before any handler is registered: setHandler delivers the
  // signals buffered for this run at once, and a row's report must find its row in flight.
  let state: RunState | undefined = rawInput.carried ? RunState.resume(rawInput.runId, rawInput.carried, branchAllowed) : undefined;
  let window: RowWindow | undefined = state
    ? new RowWindow(
        input,
        state,
        viewOf(
          input,
          state,
          () => phase,
          (i) => refresher?.rowFinished(i),
        ),
      )
    : undefined;

  setHandler(
    progressQuery,
    () => state?.snapshot(phase) ?? RunState.planningSnapshot(input.runId, new Date(workflowInfo().startTime).toISOString()),
  );
  setHandler(rowDoneSignal, (done) => window?.report(done));
  setHandler(pauseSignal, ({ reason }) => {
    if (!state) return void ((early.pause = { reason: reason ?? 'paused by request' }), (earlyHeard = true));
    state.pause(reason);
    refreshDetails(state, phase);
  });
  setHandler(resumeSignal, () => {
    if (!state) return void ((early.pause = null), (earlyHeard = true));
    state.resume();
    refreshDetails(state, phase);
  });
  setHandler(budgetSignal, ({ maxCostUsd }) => {
    if (!state) return void ((early.maxCostUsd = maxCostUsd), (earlyHeard = true));
    state.setBudget(maxCostUsd);
    refreshDetails(state, phase);
  });
  setHandler(
    retryRowsUpdate,
    async (selection: RetrySelection) => {
      const count = await countRetryRows({ outputDir: input.outputDir, selection, filterRows: input.filterRows });
      if (count > 0) state!.queueRetry(selection);
      refreshDetails(state!, phase);
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
    if (!state) {
      const plan = await planRunOrExplain(rawInput);
      input = plan.input;
      state = RunState.planned(input.runId, plan, new Date(workflowInfo().startTime).toISOString(), rawInput.retryOnly, branchAllowed);
      window = new RowWindow(
        input,
        state,
        viewOf(
          input,
          state,
          () => phase,
          (i) => refresher?.rowFinished(i),
        ),
      );
      if (input.searchAttributes) upsertSearchAttributes([{ key: AtelierRowsTotal, value: plan.selectedRows }]);
      // Requests heard while planning used to be dropped; older histories replay without them.
      if (earlyHeard && patched(PATCH.planningSignals)) state.applyEarly(early);
    }
    phase = 'running';
    refreshDetails(state, phase);
    // --batch: the provider batch phase runs first, once per run; with `--batch-fallback fail`
    // what the batches did not answer stays failed, so no direct pass follows. Older histories have
    // no batch settings and never reach the marker.
    if (!rawInput.carried && !rawInput.retryOnly && input.batch && patched(PATCH.batch)) {
      state.applyBatchPhase(await runBatchPhase(input, input.batch));
      if (input.batch.fallback === 'fail') state.cursor = null;
      upsertCounts(input, state, true);
      refreshDetails(state, phase);
    }
    // Results tables refreshed while the run goes (new in this version: older histories replay without).
    const runState = state;
    const runInput = input;
    if (patched(PATCH.resultsRefresh)) {
      // Incremental rewrites whose clock crosses continue-as-new (older histories: the loop they recorded).
      const incremental = patched(PATCH.resultsIncremental);
      // The wait after a rewrite ends once 5 % more rows finished (older histories slept it out).
      const stepWake = incremental && patched(PATCH.resultsStepWake);
      refresher = new ResultsRefresher(
        (changedRows) => refreshResults(resultsArgs(runInput, changedRows)),
        () => runState.finished,
        runState.selectedRows,
        incremental,
        rawInput.carried?.refresh,
        stepWake,
      );
    }
    // A pause for the run's store lifts by itself once the store answers; a page or the final
    // tables failing on the store pause the run. Older histories waited for `atelier resume`.
    const storePausesLift = patched(PATCH.storePauseLifts);
    if (storePausesLift) {
      window!.storePausesLift = true;
      liftStorePauses(runState, runInput.outputDir, () => refreshDetails(runState, phase), runInput.outputCsv);
    }
    refresher?.start();
    await dispatchAll(input, state, window!, refresher);

    await window!.settle();
    await condition(allHandlersFinished);
    await refresher?.stop();
    phase = 'writing-results';
    refreshDetails(state, phase);
    // The final tables are a full pass over the ledger: the live refreshes read only the rows
    // reported to them, and a report can miss its execution (a row handed over around a
    // continue-as-new reports before this execution's refresher exists), so only a full pass is
    // sure to be identical to the ledger. Same command either way (only its input differs).
    const summary = await finalTables(input, state, storePausesLift);
    phase = 'done';
    upsertCounts(input, state, true);
    refreshDetails(state, phase);
    return summary;
  } catch (err) {
    if (isCancellation(err)) {
      // Cancelling the run cancels its rows (they were started ABANDON, so it must be said), then
      // leaves the ledger and the results table saying so.
      await CancellationScope.nonCancellable(async () => {
        if (!state) return;
        await refresher?.stop();
        await Promise.all(
          [...state.inFlight].map((i) =>
            getExternalWorkflowHandle(rowWorkflowId(input.runId, i))
              .cancel()
              .catch(() => undefined),
          ),
        );
        await window!.recordCancelled();
        await writeFinalResults(resultsArgs(input));
      });
    }
    throw err;
  }
}

/**
 * The dispatch loop: start rows while the window has room and the run is not paused; then the
 * queued retry passes; then wait for the rows in flight. Continues as new when the history is long.
 */
async function dispatchAll(
  input: DatasetWorkflowInput,
  state: RunState,
  window: RowWindow,
  refresher: ResultsRefresher | undefined,
): Promise<void> {
  const historyCap = input.maxHistoryEvents ?? DEFAULT_MAX_HISTORY_EVENTS;
  const shouldContinueAsNew = () => {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= historyCap;
  };
  for (;;) {
    if (shouldContinueAsNew()) {
      await window.settle();
      await window.handOverRunningRows();
      await condition(allHandlersFinished);
      // A rewrite must not outlive this execution (the next one has its own).
      await refresher?.stop();
      const refresh = refresher?.carry();
      const carried = { ...state.carry(window.resumeCursor), ...(refresh ? { refresh } : {}) };
      upsertCounts(input, state, true);
      await continueAsNew<typeof datasetWorkflow>({ ...input, carried });
    }
    await waitFor(state, () => state.hasRoom(input.window) || shouldContinueAsNew());
    if (shouldContinueAsNew()) continue;
    const row = state.takeDeferred() ?? (await window.nextRow());
    // The page's store failed: the run is paused for it, and the wait above holds until it lifts.
    if (row === 'paused') continue;
    if (row) {
      window.dispatch(row);
      continue;
    }
    if (state.startQueuedPass()) continue;
    // Nothing left to start: wait for the rows in flight, unless a retry or a deferred row arrives.
    await waitFor(state, () => state.needsAttention || shouldContinueAsNew());
    if (state.drained) return;
  }
}

/**
 * The final tables. When they fail on the run's store (new histories), the run pauses with the
 * reason until the store's probe or a resume lifts that pause, then writes them again; older
 * histories failed the run.
 */
async function finalTables(input: DatasetWorkflowInput, state: RunState, storePausesLift: boolean): Promise<DatasetRunSummary> {
  for (;;) {
    try {
      return await writeFinalResults({ ...resultsArgs(input), ...(storePausesLift ? { pauseOnStore: true } : {}) });
    } catch (err) {
      const fault = storePausesLift ? storeFailureOf(err) : undefined;
      if (fault === undefined) throw err;
      const pause = state.storePause(`writing the results tables failed: ${fault}`);
      refreshDetails(state, 'writing-results');
      await condition(() => state.paused !== pause);
      refreshDetails(state, 'writing-results');
    }
  }
}

/**
 * Waits for `ready`. A pause with an end time (a quota reset) lifts itself when the time comes,
 * including one that starts while this waits (a row deferred meanwhile): the wait wakes to set
 * the timer. Older histories never woke for it (the pause then waited for `atelier resume`); the
 * marker keeps them replaying as recorded.
 */
async function waitFor(state: RunState, ready: () => boolean): Promise<void> {
  for (;;) {
    const pause: PauseState | null = state.paused;
    if (!pause?.until) {
      await condition(() => ready() || (state.paused !== pause && state.paused?.until !== undefined));
      if (ready()) return;
      if (!patched(PATCH.timedPauseWakes)) return void (await condition(ready));
      continue;
    }
    const ms = Date.parse(pause.until) - Date.now();
    if (ms > 0 && (await condition(ready, ms))) return;
    if (state.liftExpired(pause)) refreshDetails(state, 'running');
  }
}

// RunState's patched branches (RunBranch): the --max-cost pause and reserve, taken only by runs
// with a budget, and the pause for an unreachable provider, taken only when rows fail to connect.
// Each marker keeps its branch out of the replay of older histories.
function branchAllowed(branch: RunBranch): boolean {
  switch (branch) {
    case 'budgetPause':
      return patched(PATCH.maxCost);
    case 'budgetReserve':
      return patched(PATCH.budgetReserve);
    case 'unreachablePause':
      return patched(PATCH.unreachablePause);
  }
}

/** What the row window redraws: the UI's details, and the search attributes when counts moved. */
function viewOf(input: DatasetWorkflowInput, state: RunState, phase: () => RunPhase, rowFinished: (index: number) => void) {
  return {
    rowFinished,
    refresh: () => refreshDetails(state, phase()),
    countsChanged: () => {
      upsertCounts(input, state, false);
      refreshDetails(state, phase());
    },
  };
}

// The Temporal UI shows this on the run's page.
function refreshDetails(state: RunState, phase: RunPhase): void {
  setCurrentDetails(state.details(phase));
}

function upsertCounts(input: DatasetWorkflowInput, state: RunState, force: boolean): void {
  if (!input.searchAttributes) return;
  // Counts every few seconds instead of every 50 rows: more upserts, so new histories only.
  const counts = state.searchCounts(force, force || !patched(PATCH.searchCountsSeconds) ? undefined : Date.now());
  if (!counts) return;
  upsertSearchAttributes([
    { key: AtelierRowsTotal, value: counts.total },
    { key: AtelierRowsOk, value: counts.ok },
    { key: AtelierRowsFailed, value: counts.failed },
  ]);
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

function resultsArgs(input: DatasetWorkflowInput, changedRows?: Array<[number, number]>) {
  return {
    runId: input.runId,
    outputDir: input.outputDir,
    ...(input.outputCsv ? { outputCsv: input.outputCsv } : {}),
    ...(input.promptEnhance ? { instructionEnhanced: true } : {}),
    ...(changedRows ? { changedRows } : {}),
  };
}
