import { ActivityFailure, ApplicationFailure, condition, executeChild, proxyActivities, setHandler } from '@temporalio/workflow';
import type { OrchestrationActivities } from '../activities/orchestration';
import type { DatasetRunSummary, DatasetWorkflowInput, PlanRunResult, ProgressSnapshot, RowRef, RowsPage } from '../lib/types';
import { progressQuery } from './messages';
import { rowWorkflow } from './row';

const { planRun, nextRowsPage, writeResults } = proxyActivities<OrchestrationActivities>({
  // Planning streams the whole dataset; give large inputs room.
  startToCloseTimeout: '30 minutes',
  retry: { maximumAttempts: 5 },
});

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

/**
 * One dataset run: plan the rows, run one child workflow per pending row with at most `window` in
 * flight, then write the results table. Rows already done (per the ledger) start no child at all.
 */
export async function datasetWorkflow(rawInput: DatasetWorkflowInput): Promise<DatasetRunSummary> {
  const progress: ProgressSnapshot = {
    runId: rawInput.runId,
    phase: 'planning',
    total: 0,
    alreadyOk: 0,
    ok: 0,
    failed: 0,
    inFlight: 0,
  };
  setHandler(progressQuery, () => progress);

  const plan = await planRunOrExplain(rawInput);
  const input = plan.input;
  progress.total = plan.selectedRows;
  progress.alreadyOk = plan.alreadyOk;
  progress.phase = 'running';

  const running = new Set<Promise<void>>();
  const runRow = async (row: RowRef): Promise<void> => {
    try {
      const outcome = await executeChild(rowWorkflow, {
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
            },
            retry: input.retry,
          },
        ],
        staticSummary: `row ${row.index}: ${row.summary}`,
        // The child catches model failures itself; this covers worker-side crashes of the child.
        retry: { maximumAttempts: 3, initialInterval: '1 second' },
      });
      if (outcome.status === 'ok') progress.ok += 1;
      else progress.failed += 1;
    } catch {
      // The child itself failed (not its model call, which it records): counted here, and the
      // ledger has no ok entry for the row, so results show it as not done and a re-run retries it.
      progress.failed += 1;
    }
  };

  const pageSize = Math.max(100, input.window * 4);
  let cursor: number | null = 0;
  while (cursor !== null) {
    const page: RowsPage = await nextRowsPage({
      outputDir: input.outputDir,
      cursor,
      limit: pageSize,
      ...(input.filterRows ? { filterRows: input.filterRows } : {}),
    });
    for (const row of page.rows) {
      await condition(() => running.size < input.window);
      const task = runRow(row).finally(() => {
        running.delete(task);
        progress.inFlight = running.size;
      });
      running.add(task);
      progress.inFlight = running.size;
    }
    cursor = page.nextCursor;
  }
  await Promise.all(running);

  progress.phase = 'writing-results';
  const summary = await writeResults({
    runId: input.runId,
    outputDir: input.outputDir,
    ...(input.outputCsv ? { outputCsv: input.outputCsv } : {}),
  });
  progress.phase = 'done';
  return summary;
}
