import { CancellationScope, ParentClosePolicy, patched, proxyActivities, startChild } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { OrchestrationActivities } from '../../activities/orchestration';
import { ChildErrorTypes } from '../../lib/shared/errorTypes';
import type { DatasetWorkflowInput, RowDone, RowRef, RowsPage } from '../../lib/shared/types';
import { AtelierRunId } from '../../lib/shared/searchAttributes';
import { rowWorkflow } from '../row';
import { failedOutsideRow, handOver, reportOfFailure, reportOfResult, rowWorkflowId } from './rowReports';
import type { RunState } from './runState';
import { storeFailureOf } from './storePause';
import { PATCH } from '../patches';

const { nextRowsPage } = proxyActivities<OrchestrationActivities>({
  startToCloseTimeout: '30 minutes',
  retry: { maximumAttempts: 5 },
});

const { recordRowFailure, recordCancelledRows } = proxyActivities<OrchestrationActivities>({
  startToCloseTimeout: '1 minute',
  retry: { maximumAttempts: 10 },
});

/**
 * The sliding window of row children: reads the plan a page at a time, starts children, hears how
 * they end and hands the running ones over before a continue-as-new. Everything it learns goes to
 * the RunState. `view.refresh` redraws what the Temporal UI shows; `view.countsChanged` also lets
 * the search attributes catch up (a row finished).
 */
export class RowWindow {
  /** Rows fetched but not dispatched yet (not carried: the cursor points back at the first of them). */
  private page: RowRef[] = [];
  // Child starts in flight: many start in one workflow task instead of one task each. Awaited
  // before continuing as new, so no start is lost in between.
  private readonly starting = new Set<Promise<void>>();
  // Children this run started and is still waiting on: it hears of their end from their
  // completion (no signal, no extra history), unless it continues as new first.
  private readonly ownChildren = new Map<number, Promise<void>>();
  // Ledger writes for rows whose child ended without writing one (cancelled, terminated, ...).
  private readonly ledgerWrites = new Set<Promise<void>>();
  // The first of those that failed for good: settle() throws it (the run must not end as if written).
  private ledgerFailure: unknown;
  // Plan positions of the rows this run dispatched (rows carried in flight are known by index).
  private readonly positions = new Map<number, number>();

  constructor(
    private readonly input: DatasetWorkflowInput,
    private readonly state: RunState,
    private readonly view: { refresh(): void; countsChanged(): void; rowFinished?(index: number): void },
  ) {}

  /**
   * A page that fails on the run's store pauses the run (set by the workflow for new histories,
   * `atelier-store-pause-lifts`); in older ones that failure fails the run.
   */
  storePausesLift = false;

  /**
   * The next row of the current pass, undefined when the pass is exhausted, or `paused` when its
   * page could not be read from the run's store: the run is paused for the store then, and the
   * page is read again once the pause lifts (the cursor stays where it was).
   */
  async nextRow(): Promise<RowRef | undefined | 'paused'> {
    for (;;) {
      const row = this.page.shift();
      if (row) return row;
      const cursor = this.state.cursor;
      if (cursor === null) return undefined;
      const result = await this.readPage(cursor);
      if (result === 'paused') return 'paused';
      this.page = result.rows;
      this.state.cursor = result.nextCursor;
    }
  }

  private async readPage(cursor: number): Promise<RowsPage | 'paused'> {
    const { input, state } = this;
    try {
      return await nextRowsPage({
        outputDir: input.outputDir,
        cursor,
        limit: Math.max(100, input.window * 4),
        ...(input.filterRows ? { filterRows: input.filterRows } : {}),
        ...(state.pass !== 'main' ? { selection: state.pass } : {}),
        // --batch-fallback direct: the main pass leaves the batch's final refusals alone, as its
        // batch phase decided (a phase recorded before that decision asks for every failed row).
        ...(state.pass === 'main' && state.batchDirectPhase ? { batchPhase: state.batchDirectPhase } : {}),
        // API rows take their plan line and freshness from the page into their task, so the row
        // activity reads neither the plan nor (on a first attempt) the ledger. New histories only:
        // older ones replay the pages and tasks they recorded.
        ...(input.backend !== 'diffusers' && patched(PATCH.rowPlanInTask) ? { carryRows: true } : {}),
        ...(this.storePausesLift ? { pauseOnStore: true } : {}),
      });
    } catch (err) {
      const fault = this.storePausesLift ? storeFailureOf(err) : undefined;
      if (fault === undefined) throw err;
      // A pause that came while the page was read (a user's, the budget's) stays: it is lifted its own way.
      if (!state.paused || state.paused.store) state.storePause(`reading the next rows failed: ${fault}`);
      this.view.refresh();
      return 'paused';
    }
  }

  /** Where the current pass resumes after a continue-as-new: the first fetched row not yet started. */
  get resumeCursor(): number | null {
    return this.page[0]?.position ?? this.state.cursor;
  }

  dispatch(row: RowRef): void {
    this.state.dispatched(row);
    this.positions.set(row.index, row.position);
    const tracked: Promise<void> = this.startRow(row).finally(() => this.starting.delete(tracked));
    this.starting.add(tracked);
    this.view.refresh();
  }

  /** A row's report, from its completion or its rowDone signal. */
  report(done: RowDone): void {
    if (!this.state.finishRow(done)) return;
    this.view.rowFinished?.(done.index);
    this.positions.delete(done.index);
    if (failedOutsideRow(done)) this.recordInLedger(done);
    this.view.countsChanged();
  }

  /** Waits for the child starts under way and the ledger writes this run owes. */
  async settle(): Promise<void> {
    await Promise.all([...this.starting]);
    await Promise.all([...this.ledgerWrites]);
    if (this.ledgerFailure !== undefined) throw this.ledgerFailure;
  }

  // Before continuing as new: the rows still running will outlive this run, so from now on they
  // report by signal to the workflow id. One that has ended meanwhile (the signal fails) has its
  // completion on the way to this run, which waits for it. A few signals per continue-as-new,
  // against one per row if every child signalled.
  async handOverRunningRows(): Promise<void> {
    await Promise.all(
      [...this.ownChildren.entries()].map(async ([index, ended]) => {
        if (!(await handOver(this.input.runId, index))) await ended;
      }),
    );
  }

  /**
   * The run was cancelled: its rows in flight are recorded as cancelled (unless already done), and
   * the ledger writes under way finish before the run ends.
   */
  async recordCancelled(): Promise<void> {
    await Promise.all([...this.ledgerWrites]);
    if (this.state.inFlight.size === 0 || !patched(PATCH.ledgerChildOutcomes)) return;
    const { runId, model, outputDir } = this.input;
    const rows = [...this.state.inFlight].map((index) => {
      const position = this.positions.get(index);
      return position === undefined ? { index } : { index, position };
    });
    await recordCancelledRows({ runId, model, outputDir, rows });
  }

  // The server ended the row's child (or never started it): no row code wrote its ledger entry,
  // so results.csv would show it pending and `retry --error-type` could not find it. Older
  // histories made no such call: the marker keeps them replaying.
  private recordInLedger(done: RowDone): void {
    if (!patched(PATCH.ledgerChildOutcomes)) return;
    const { runId, model, outputDir } = this.input;
    // Not cancellable: a row cancelled with its run is recorded while the run winds down.
    const write: Promise<void> = CancellationScope.nonCancellable(() =>
      recordRowFailure({
        runId,
        model,
        outputDir,
        index: done.index,
        position: done.position,
        errorType: done.errorType ?? 'Error',
        error: done.error ?? '',
      }),
    )
      // The entry is in the ledger now: the results refresh must read it (again).
      .then(() => this.view.rowFinished?.(done.index))
      .catch((err: unknown) => void (this.ledgerFailure ??= err))
      .finally(() => this.ledgerWrites.delete(write));
    this.ledgerWrites.add(write);
  }

  private async startRow(row: RowRef, attempt = 1): Promise<void> {
    const { input } = this;
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
              ...(input.endpoint ? { endpoint: input.endpoint } : {}),
              ...(row.plan ? { row: row.plan } : {}),
              // A row started again (its earlier child ended meanwhile) may have left state: not fresh.
              ...(row.fresh && attempt === 1 ? { fresh: true } : {}),
            },
            retry: input.retry,
            ...(input.searchAttributes ? { searchAttributes: true } : {}),
            // For the row's page in the Temporal UI: what it asks, from which inputs.
            ...(row.display ? { row: row.display } : {}),
          },
        ],
        staticSummary: `row ${row.index}: ${row.summary}`,
        // The run's id on each row child, so `AtelierRunId="<run>"` finds the rows too (new children only).
        ...(input.searchAttributes && patched(PATCH.rowRunId)
          ? { typedSearchAttributes: [{ key: AtelierRunId, value: input.runId }] }
          : {}),
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
        if (await handOver(input.runId, row.index)) return;
        return this.startRow(row, attempt + 1);
      }
      this.state.childStartFailed(row.index, ChildErrorTypes.childStartFailed);
      const error = err instanceof Error ? err.message : String(err);
      this.recordInLedger({
        position: row.position,
        index: row.index,
        status: 'failed',
        errorType: ChildErrorTypes.childStartFailed,
        error,
      });
      this.view.refresh();
      return;
    }
    const ended = handle
      .result()
      .then(
        (outcome) => this.report(reportOfResult(row, outcome)),
        (err: unknown) => this.report(reportOfFailure(row, err)),
      )
      .finally(() => this.ownChildren.delete(row.index));
    this.ownChildren.set(row.index, ended);
  }
}
