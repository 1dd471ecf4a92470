// The patch register: every `patched()` / `deprecatePatch()` id the workflow code uses, with the
// commit that added it, the recorded histories that still need its old branch and the recorded
// histories that prove its new branch replays. Workflow code names a patch only through `PATCH`, and
// test/replay/patches.test.ts checks the register against the code and the fixtures, so a patch
// cannot be added, deprecated or removed without this file (and CONTRIBUTING.md's retirement rule)
// saying so. Data only: the workflow bundle imports it.

/** Where a patch is in its life: `patched()` in the code, then `deprecatePatch()`, then gone. */
export type PatchStage = 'patched' | 'deprecated';

export interface PatchRecord {
  /** The marker id written into histories; never reuse one. */
  readonly id: string;
  /** The commit that added the `patched()` call (`git log -S'<id>' -- workflows`). */
  readonly addedIn: string;
  readonly stage: PatchStage;
  /** What the new branch does that the old one did not. */
  readonly change: string;
  /**
   * Fixtures (`<set>/<file>` under test/replay/fixtures/) recorded before the patch whose replay
   * fails when the new branch is forced (the call replaced by `true`, every fixture replayed): they
   * replay only through the old branch. Deprecating the patch retires them.
   */
  readonly neededBy: readonly string[];
  /**
   * Fixtures whose history holds the patch's marker: the new branch's replay is tested. A marker
   * no call consumes fails replay, so removing the call (after deprecatePatch) retires them.
   */
  readonly coveredBy: readonly string[];
}

/** The ids, as workflow code uses them: `patched(PATCH.batch)`. */
export const PATCH = {
  maxCost: 'atelier-max-cost',
  batch: 'atelier-batch',
  planningSignals: 'atelier-planning-signals',
  timedPauseWakes: 'atelier-timed-pause-wakes',
  ledgerChildOutcomes: 'atelier-ledger-child-outcomes',
  resultsRefresh: 'atelier-results-refresh',
  resultsIncremental: 'atelier-results-incremental',
  searchCountsSeconds: 'atelier-search-counts-seconds',
  rowRunId: 'atelier-row-run-id',
  budgetReserve: 'atelier-budget-reserve',
  unreachablePause: 'atelier-unreachable-pause',
  batchFallbackFinal: 'atelier-batch-fallback-final',
  rowPlanInTask: 'atelier-row-plan-in-task',
  storePauseLifts: 'atelier-store-pause-lifts',
  resultsStepWake: 'atelier-results-step-wake',
} as const;

export type PatchName = keyof typeof PATCH;

/** Ids whose calls were removed (the last step of retirement): never used again. */
export const RETIRED_PATCH_IDS: readonly string[] = [];

export const PATCH_REGISTER: Readonly<Record<PatchName, PatchRecord>> = {
  maxCost: {
    id: PATCH.maxCost,
    addedIn: '863f90e',
    stage: 'patched',
    change: '--max-cost: the run pauses when the spend of its finished rows reaches the budget',
    neededBy: [],
    coveredBy: ['patches-d31c45d/budget.datasetWorkflow-0.binpb', 'safe-b042613/reserve.datasetWorkflow-0.binpb'],
  },
  batch: {
    id: PATCH.batch,
    addedIn: '89c8865',
    stage: 'patched',
    change: '--batch: a provider batch phase (child workflows) before the direct pass',
    neededBy: [],
    coveredBy: ['batch-69e2c6b/batch.dataset.binpb', 'batch-a8ec7b9/batch.dataset.binpb'],
  },
  planningSignals: {
    id: PATCH.planningSignals,
    addedIn: 'a6ff2ef',
    stage: 'patched',
    change: 'pause / resume / budget signals heard while planning are applied once the run is planned (were dropped)',
    neededBy: [],
    coveredBy: ['patches-d31c45d/early.datasetWorkflow-0.binpb'],
  },
  timedPauseWakes: {
    id: PATCH.timedPauseWakes,
    addedIn: 'a6ff2ef',
    stage: 'patched',
    change: 'a wait wakes when a pause with an end time (a quota reset) begins during it, so the pause lifts itself then',
    neededBy: [],
    coveredBy: ['519e2a6/quota.datasetWorkflow-0.binpb'],
  },
  ledgerChildOutcomes: {
    id: PATCH.ledgerChildOutcomes,
    addedIn: 'a6ff2ef',
    stage: 'patched',
    change: 'rows the server ended (child terminated or never started, cancelled with the run) are recorded in the ledger',
    neededBy: [],
    coveredBy: ['519e2a6/cancel.datasetWorkflow-0.binpb'],
  },
  resultsRefresh: {
    id: PATCH.resultsRefresh,
    addedIn: '37cb646',
    stage: 'patched',
    change: 'the results tables are rewritten while the run goes (an activity every few percent of rows or every minute)',
    neededBy: [
      '90beffe/datasetWorkflow-00.binpb',
      '90beffe/datasetWorkflow-01.binpb',
      '519e2a6/can.datasetWorkflow-0.binpb',
      '519e2a6/can.datasetWorkflow-1.binpb',
      '519e2a6/cancel.datasetWorkflow-0.binpb',
      '519e2a6/gpu.datasetWorkflow-0.binpb',
      '519e2a6/plain.datasetWorkflow-0.binpb',
      '519e2a6/quota.datasetWorkflow-0.binpb',
      '519e2a6/retry.datasetWorkflow-0.binpb',
      'batch-69e2c6b/batch.dataset.binpb',
    ],
    coveredBy: [
      'patches-d31c45d/budget.datasetWorkflow-0.binpb',
      'patches-d31c45d/early.datasetWorkflow-0.binpb',
      'results-9154966/can.datasetWorkflow-0.binpb',
      'results-9154966/can.datasetWorkflow-1.binpb',
      'results-9154966/can.datasetWorkflow-2.binpb',
      'safe-b042613/reserve.datasetWorkflow-0.binpb',
      'safe-b042613/unreachable.datasetWorkflow-0.binpb',
      'batch-a8ec7b9/batch.dataset.binpb',
      'store-9d6224f/plain.datasetWorkflow-0.binpb',
      'store-066835c/store.datasetWorkflow-0.binpb',
      'results-3d54c29/can.datasetWorkflow-0.binpb',
      'results-3d54c29/can.datasetWorkflow-1.binpb',
    ],
  },
  resultsIncremental: {
    id: PATCH.resultsIncremental,
    addedIn: '9154966',
    stage: 'patched',
    change:
      'results refreshes read only the rows finished since the last (rows passed to writeResults); the refresher clock, counts and owed rows cross continue-as-new',
    neededBy: [],
    coveredBy: [
      'results-9154966/can.datasetWorkflow-0.binpb',
      'results-9154966/can.datasetWorkflow-1.binpb',
      'results-9154966/can.datasetWorkflow-2.binpb',
      'safe-b042613/reserve.datasetWorkflow-0.binpb',
      'safe-b042613/unreachable.datasetWorkflow-0.binpb',
      'batch-a8ec7b9/batch.dataset.binpb',
      'store-9d6224f/plain.datasetWorkflow-0.binpb',
      'store-066835c/store.datasetWorkflow-0.binpb',
      'results-3d54c29/can.datasetWorkflow-0.binpb',
      'results-3d54c29/can.datasetWorkflow-1.binpb',
    ],
  },

  searchCountsSeconds: {
    id: PATCH.searchCountsSeconds,
    addedIn: '7a53a7b',
    stage: 'patched',
    change: 'the count search attributes are upserted every few seconds of progress (were every 50 rows)',
    neededBy: ['519e2a6/gpu.datasetWorkflow-0.binpb'],
    coveredBy: ['patches-d31c45d/budget.datasetWorkflow-0.binpb'],
  },
  rowRunId: {
    id: PATCH.rowRunId,
    addedIn: '7a53a7b',
    stage: 'patched',
    change: 'row children carry the AtelierRunId search attribute',
    neededBy: [],
    coveredBy: ['patches-d31c45d/budget.datasetWorkflow-0.binpb'],
  },
  budgetReserve: {
    id: PATCH.budgetReserve,
    addedIn: 'b042613',
    stage: 'patched',
    change: '--max-cost: a row starts only while the spend plus the rows in flight (at the cost of a row) stays under the budget',
    neededBy: [],
    coveredBy: ['safe-b042613/reserve.datasetWorkflow-0.binpb'],
  },
  unreachablePause: {
    id: PATCH.unreachablePause,
    addedIn: 'b042613',
    stage: 'patched',
    change: 'rows failing one after another to connect to the provider pause the run (were all failed)',
    neededBy: [],
    coveredBy: ['safe-b042613/unreachable.datasetWorkflow-0.binpb'],
  },
  batchFallbackFinal: {
    id: PATCH.batchFallbackFinal,
    addedIn: 'a8ec7b9',
    stage: 'patched',
    change:
      '--batch-fallback direct: rows a batch refused (Blocked) or found bad (InputError) stay failed instead of going down the direct pass; the rows that do go are counted pending, not failed, until they finish',
    neededBy: [],
    coveredBy: ['batch-a8ec7b9/batch.dataset.binpb'],
  },
  rowPlanInTask: {
    id: PATCH.rowPlanInTask,
    addedIn: '9d6224f',
    stage: 'patched',
    change:
      "API rows' pages carry each row's plan line and whether it has any state yet into the row task, so the row activity reads neither the plan nor (first attempt) the ledger",
    neededBy: [],
    coveredBy: [
      'store-9d6224f/plain.datasetWorkflow-0.binpb',
      'store-066835c/store.datasetWorkflow-0.binpb',
      'results-3d54c29/can.datasetWorkflow-0.binpb',
      'results-3d54c29/can.datasetWorkflow-1.binpb',
    ],
  },
  storePauseLifts: {
    id: PATCH.storePauseLifts,
    addedIn: '02f8a10',
    stage: 'patched',
    change:
      "a pause for the run's store (rows deferred on it, a page of rows or the final tables failing on it: bucket gone, credentials refused, an outage) probes the store and lifts by itself once it answers; a page or the final tables failing on the store pause the run (failed it)",
    neededBy: [],
    coveredBy: [
      'store-066835c/store.datasetWorkflow-0.binpb',
      'results-3d54c29/can.datasetWorkflow-0.binpb',
      'results-3d54c29/can.datasetWorkflow-1.binpb',
    ],
  },
  resultsStepWake: {
    id: PATCH.resultsStepWake,
    addedIn: '1e71dc9',
    stage: 'patched',
    change:
      "the results refresher aims inside its bounds: its first minute counts from the run's start, a rewrite starts by 0.9 of a minute or of 5 % of the rows, and the wait after a rewrite ends at that share of rows once the minute (less the rewrite's time) is over (was slept out: a run that sped up fell behind by both a minute and 5 % of the rows)",
    neededBy: [],
    coveredBy: ['results-3d54c29/can.datasetWorkflow-0.binpb', 'results-3d54c29/can.datasetWorkflow-1.binpb'],
  },
};
