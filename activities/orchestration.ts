import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { keyProblem, openStorage, StoreFault, type Storage } from '../storage';
import { readRunDataset, type DatasetHeader } from '../lib/dataset';
import { isHubLocation, type HubReadStats } from '../lib/dataset/hub';
import { boundedMessage, ClassifiedError, DatasetError } from '../lib/shared/errors';
import { rowDigests } from '../lib/run/rowDigest';
import { S3InputListing } from '../lib/dataset/inputIdentity';
import { runBlobStore } from '../lib/dataset/blobs';
import { rowSelector } from '../lib/shared/filterRows';
import { retrySelector } from '../lib/shared/retrySelection';
import { BATCH_FINAL_ERROR_TYPES } from '../lib/shared/batch';
import { countFailure, ledgerReader, readLedgerEntry, writeLedgerEntry } from '../lib/run/ledger';
import { defaultOutputs, namedOutputs } from '../lib/run/outputNames';
import {
  allPlanRows,
  childLocation,
  pinnedInputCommit,
  PlanWriter,
  readPlanRows,
  taskPlanRow,
  type ImageRef,
  type PlanMeta,
  type PlanRow,
} from '../lib/run/plan';
import { parseDatasetWorkflowInput } from '../lib/run/workflowInput';
import { ChildErrorTypes, ErrorTypes, RunErrorTypes } from '../lib/shared/errorTypes';
import { carriedHistory } from '../lib/run/redo';
import { ResultsRecords } from '../lib/run/resultsRecords';
import { layout, RunStore, whileStoreDown } from '../lib/run/runStore';
import { resultsTargets, writeResultsTables, type WriteResultsArgs } from './resultsTables';
import { estimateCostUsd } from './providers/models';
import type {
  DatasetRunSummary,
  DatasetWorkflowInput,
  PlanRunResult,
  RecordFailureInput,
  RetrySelection,
  RowDisplay,
  RowRef,
  RowsPage,
  RowsPageArgs,
} from '../lib/shared/types';

/** Records a row's final failure, unless the row already succeeded; finished turns are kept. */
async function recordFailure(input: RecordFailureInput): Promise<void> {
  const existing = await readLedgerEntry(input.outputDir, input.index);
  if (existing?.status === 'ok') return;
  await writeLedgerEntry(input.outputDir, {
    index: input.index,
    position: input.position,
    status: 'failed',
    runId: input.runId,
    model: input.model,
    errorType: input.errorType,
    error: boundedMessage(input.error),
    ...(input.attempts !== undefined ? { attempts: input.attempts } : {}),
    ...(existing?.turnsDone
      ? {
          turnsDone: existing.turnsDone,
          outputImages: existing.outputImages ?? [],
          ...(existing.digest ? { digest: existing.digest } : {}),
        }
      : {}),
    // A redone row that failed keeps its earlier outputs' history (and a later redo its seed).
    ...carriedHistory(existing),
    finishedAt: new Date().toISOString(),
  });
}

/** How a row child's input shows the row in the Temporal UI: its instruction and where its inputs are. */
function rowDisplay(row: PlanRow): RowDisplay {
  const text = row.turns.join(' → ');
  const where = (ref: ImageRef): string => {
    if (ref.kind === 'data') return 'data:… (inline image)';
    // A URL's query may hold a token (presigned links): shown without it.
    if (ref.kind === 'url') return ref.source.split(/[?#]/)[0]!;
    return ref.source;
  };
  return {
    instruction: text.length > DISPLAY_CHARS ? `${text.slice(0, DISPLAY_CHARS - 1)}…` : text,
    inputs: row.images.slice(0, DISPLAY_INPUTS).map(where),
  };
}

/** What a page hands a row's task: its plan line (when small) and whether it has any state yet. */
function carried(row: PlanRow, fresh: boolean): Pick<RowRef, 'plan' | 'fresh'> {
  const plan = taskPlanRow(row);
  return { ...(plan ? { plan } : {}), ...(fresh ? { fresh: true } : {}) };
}

const DISPLAY_CHARS = 300;
const DISPLAY_INPUTS = 8;
const SUMMARY_CHARS = 80;
/** Rows whose ledger states planning reads together. */
const LEDGER_BATCH = 256;

interface RunOwnership {
  runId: string;
  inputPath: string;
  backend: string;
  model: string;
}

/**
 * An output dir belongs to one run: its outputs and ledger mean nothing to a run with other
 * settings. The claim is one create-only write, so of two runs racing for one output dir exactly
 * one proceeds; the other is told who owns it.
 */
async function claimOutputDir(input: DatasetWorkflowInput): Promise<void> {
  const storage = openStorage(input.outputDir);
  const key = layout.run;
  const ownership: RunOwnership = { runId: input.runId, inputPath: input.inputPath, backend: input.backend, model: input.model };
  if (await storage.create(key, JSON.stringify(ownership, null, 2))) return;
  const owner = JSON.parse((await storage.read(key))!.toString('utf8')) as RunOwnership;
  if (owner.runId !== input.runId) {
    throw ApplicationFailure.nonRetryable(
      `output dir ${input.outputDir} already holds run ${owner.runId} (${owner.backend} ${owner.model}, input ${owner.inputPath}); ` +
        `use another --out, or pass --run-id ${owner.runId} to continue that run`,
      RunErrorTypes.outputDirInUse,
    );
  }
}

/**
 * Output names must be storable as named: within the target's limits (NUL, component length), and
 * no name may be a folder of another (`a.png` and `a.png/b.png` can't both exist on a disk).
 */
class OutputNameRules {
  private readonly files = new Map<string, number>();
  private readonly folders = new Map<string, number>();

  constructor(private readonly kind: Storage['kind']) {}

  problem(path: string): string | undefined {
    const bad = keyProblem(path, this.kind);
    if (bad) return `output name ${JSON.stringify(path.slice(0, 80))}: ${bad}`;
    const asFolder = this.folders.get(path);
    if (asFolder !== undefined) return `output name ${path} is a folder of row ${asFolder}'s output`;
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const folder = parts.slice(0, i).join('/');
      const owner = this.files.get(folder);
      if (owner !== undefined) return `output name ${path} needs ${folder} as a folder, but it is row ${owner}'s output`;
    }
    return undefined;
  }

  add(path: string, index: number): void {
    this.files.set(path, index);
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) this.folders.set(parts.slice(0, i).join('/'), index);
  }
}

/** Plans where a row's outputs go; a bad or already-used name becomes the row's own error. */
function planOutputs(
  input: DatasetWorkflowInput,
  index: number,
  turns: number,
  record: Record<string, unknown>,
  used: Map<string, number>,
  rules: OutputNameRules,
): Pick<PlanRow, 'outputs' | 'plannedError'> {
  const count = turns > 1 ? turns : input.numImages;
  let outputs = defaultOutputs(index, count);
  if (input.outputNameColumn) {
    const raw = record[input.outputNameColumn];
    const named = namedOutputs(raw === undefined || raw === null ? '' : String(raw), count);
    if ('error' in named) return { outputs: [], plannedError: `${named.error} (column "${input.outputNameColumn}")` };
    outputs = named;
  }
  for (const o of outputs) {
    const owner = used.get(o.path);
    if (owner !== undefined) return { outputs: [], plannedError: `output name ${o.path} is already used by row ${owner}` };
    const problem = rules.problem(o.path);
    if (problem) return { outputs: [], plannedError: problem };
  }
  for (const o of outputs) {
    used.set(o.path, index);
    rules.add(o.path, index);
  }
  return { outputs };
}

/** The running activity's context, or undefined outside an activity (a test, the CLI). */
function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/**
 * The activity's heartbeat. Throws once the activity is cancelled (its heartbeat timed out and
 * another attempt took over), so a stalled attempt stops instead of racing its successor.
 */
function heartbeatOf(context: Context | undefined): () => void {
  return () => {
    if (!context) return;
    if (context.cancellationSignal.aborted) throw context.cancellationSignal.reason ?? new Error('activity cancelled');
    context.heartbeat();
  };
}

/**
 * A storage failure while planning says what failed, where, instead of "Workflow execution
 * failed": final ones end the run at once, transient ones are retried by planRun's policy.
 */
function planningFailure(err: unknown): unknown {
  if (!(err instanceof ClassifiedError)) return err;
  return ApplicationFailure.create({
    type: err.errorType,
    message: `planning failed: ${err.message}`,
    nonRetryable: err.kind !== 'retryable',
  });
}

/**
 * A row's cost from the model's price table (its images at the requested quality and size, no
 * usage known yet): what --max-cost reserves for each row in flight until rows report their cost.
 * Undefined for a local GPU model or a model priced only from usage.
 */
function rowCostEstimate(input: DatasetWorkflowInput): number | undefined {
  if (input.backend === 'diffusers') return undefined;
  try {
    return estimateCostUsd(input.backend, input.model, input.params, undefined, input.numImages);
  } catch {
    return undefined; // a model the table does not know: counted from the rows' reported costs
  }
}

/** One page of rows to dispatch (nextRowsPage's work). */
async function rowsPage(args: RowsPageArgs): Promise<RowsPage> {
  const selected = rowSelector(args.filterRows);
  const retryable = args.selection ? retrySelector(args.selection) : undefined;
  const rows = await readPlanRows(args.outputDir, args.cursor, args.limit);
  // The run's first pass skips the rows planning found done (read moments ago). A retry
  // selection reads every state: a redo sets done rows aside after planning.
  const candidates = rows.filter((row) => selected(row.position) && !(row.doneAtPlanning && !args.selection));
  // Which of the page's rows have an entry, from their own key range: a listing of the whole ledger
  // per page made a run's pages cost in proportion to rows² (4.4 s a page at 1M rows).
  const stateOf = await ledgerReader(args.outputDir, { among: candidates.map((row) => row.index) });
  await stateOf.prefetch(candidates);
  // Stored answers are rare (kept only when a step after a paid call failed): one listing a page.
  const answered = args.carryRows ? await RunStore.open(args.outputDir).answerIndexes() : undefined;
  const pending: RowRef[] = [];
  for (const row of candidates) {
    const state = await stateOf(row);
    if (state.status === 'ok') continue;
    const fromBatch = args.batchPhase !== undefined && state.status === 'failed' && state.entry.info?.batchPhase === args.batchPhase;
    if (fromBatch && BATCH_FINAL_ERROR_TYPES.includes(state.errorType)) continue;
    const previousErrorType = state.status === 'failed' && !fromBatch ? state.errorType : undefined;
    if (retryable && !retryable(row.position, previousErrorType)) continue;
    const text = row.turns.join(' → ');
    const summary = text.length > SUMMARY_CHARS ? `${text.slice(0, SUMMARY_CHARS - 1)}…` : text;
    pending.push({
      position: row.position,
      index: row.index,
      summary,
      ...(previousErrorType ? { previousErrorType } : {}),
      display: rowDisplay(row),
      ...(answered ? carried(row, !stateOf.hasEntry(row.index) && !answered.has(row.index)) : {}),
    });
  }
  return { rows: pending, nextCursor: rows.length < args.limit ? null : args.cursor + rows.length };
}

/**
 * The run's own bookkeeping (a page of rows, the results tables) failing on its store (a StoreFault:
 * down past the worker's patience, the bucket gone, credentials refused; or a disk refusing the
 * write) leaves the activity as a final StorageError: more attempts would meet the same store,
 * and the workflow pauses the run with this reason until the store answers (a run recorded before
 * that fails as before).
 */
async function pausingOnStore<T>(pauseOnStore: boolean | undefined, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (pauseOnStore && (err instanceof StoreFault || (err instanceof ClassifiedError && err.kind === 'storageError')))
      throw ApplicationFailure.create({ type: ErrorTypes.storageError, message: boundedMessage(err.message), nonRetryable: true });
    throw err;
  }
}

export function createOrchestrationActivities() {
  return {
    /**
     * Validates the input and streams the whole dataset into the plan: one line per row with its
     * instructions, image references and output names. Counts the selected rows already done.
     */
    async planRun(raw: DatasetWorkflowInput): Promise<PlanRunResult> {
      let input: DatasetWorkflowInput;
      try {
        input = parseDatasetWorkflowInput(raw);
      } catch (err) {
        throw ApplicationFailure.nonRetryable((err as Error).message, RunErrorTypes.invalidInput);
      }
      input.imageCacheDir ??= childLocation(input.outputDir, layout.imageCache);
      const storage = openStorage(input.outputDir);
      let meta: PlanMeta;
      let selectedRows = 0;
      let alreadyOk = 0;
      let changed = 0;
      const failedByType: Record<string, number> = {};
      try {
        await claimOutputDir(input);
        const selected = rowSelector(input.filterRows);
        const writer = new PlanWriter(input.outputDir);
        await writer.open();
        let header: DatasetHeader | undefined;
        const usedNames = new Map<string, number>();
        const rules = new OutputNameRules(storage.kind);
        // One listing of the ledger, and of the outputs' folders: the entries the results records
        // kept (tags unchanged) are not read again, and outputs are not checked one by one.
        const stateOf = await ledgerReader(input.outputDir, {
          kept: await ResultsRecords.keptEntries(input.outputDir),
          listOutputs: true,
        });
        // An hf:// input is read at the commit the run's earlier plan read (a branch moves; the rows must not).
        const hub: HubReadStats = { repoBytes: 0, bytesRead: 0, requests: 0 };
        const pinned = isHubLocation(input.inputPath) ? await pinnedInputCommit(input.outputDir, input.inputPath) : undefined;
        if (pinned) hub.pinned = pinned;
        try {
          const rows = readRunDataset(input, runBlobStore(storage), (h) => (header = h), hub);
          // Selected rows are counted against the ledger a batch at a time (their states read
          // concurrently: a re-run over object storage would otherwise wait for each in turn). A
          // batch's rows are written to the plan once their states are known, so a row found done
          // says so in the plan and the pages skip it without reading its entry a second time.
          let held: PlanRow[] = [];
          let batch: PlanRow[] = [];
          // S3 inputs' ETags, one listing per folder; rows whose digest an earlier release made without them.
          const s3Inputs = new S3InputListing();
          const legacyDigests = new Map<number, string>();
          const store = RunStore.open(input.outputDir);
          const countBatch = async (): Promise<void> => {
            const keys = batch.map((row) => ({ index: row.index, digest: row.digest! }));
            await stateOf.prefetch(keys);
            for (const [i, key] of keys.entries()) {
              let state = await stateOf(key);
              const legacy = legacyDigests.get(key.index);
              if (state.status === 'changed' && legacy !== undefined && state.entry.digest === legacy) {
                const adopted = await store.adoptInputs(state.entry, key.digest, batch[i]!.inputs);
                if (adopted) state = { status: 'ok', entry: adopted };
              }
              if (state.status === 'ok') {
                alreadyOk += 1;
                batch[i]!.doneAtPlanning = true;
              } else if (state.status === 'changed') changed += 1;
              else if (state.status === 'failed') countFailure(failedByType, state.errorType);
            }
            for (const row of held) {
              await writer.add(row);
              legacyDigests.delete(row.index);
            }
            held = [];
            batch = [];
          };
          for await (const row of rows) {
            const planned = planOutputs(input, row.index, row.turns.length, row.record, usedNames, rules);
            const { digest, inputs, legacyDigest } = await rowDigests({ ...row, ...planned }, input, s3Inputs);
            if (legacyDigest !== undefined) legacyDigests.set(row.index, legacyDigest);
            const planRow: PlanRow = { ...row, ...planned, digest, ...(inputs ? { inputs } : {}) };
            held.push(planRow);
            if (selected(row.position)) {
              selectedRows += 1;
              batch.push(planRow);
            }
            if (held.length >= LEDGER_BATCH) await countBatch();
          }
          await countBatch();
          if (input.outputNameColumn && !header!.columns.includes(input.outputNameColumn)) {
            throw new DatasetError(
              `${input.inputPath}: no "${input.outputNameColumn}" column (--output-name-column); columns are: ${header!.columns.join(', ')}`,
            );
          }
        } catch (err) {
          await writer.abort();
          throw err;
        }
        meta = await writer.commit({
          runId: input.runId,
          inputPath: input.inputPath,
          selectedRows,
          columns: header!.columns,
          imageKey: header!.imageKey,
          instructionKey: header!.instructionKey,
          ...(hub.commit ? { inputCommit: hub.commit } : {}),
        });
        if (hub.pinned && hub.head !== hub.commit)
          activityContext()?.log.info(
            `${input.inputPath}: read at commit ${hub.commit}, pinned by this run's first plan (the revision now points at ${hub.head}); plan into a new --out to read it as it is now`,
          );
      } catch (err) {
        if (err instanceof DatasetError) throw ApplicationFailure.nonRetryable(err.message, RunErrorTypes.dataset);
        throw planningFailure(err);
      }
      const rowCost = rowCostEstimate(input);
      return {
        input,
        totalRows: meta.totalRows,
        selectedRows,
        alreadyOk,
        failedByType,
        ...(changed ? { changed } : {}),
        ...(rowCost !== undefined ? { rowCostEstimateUsd: rowCost } : {}),
      };
    },

    /**
     * The next rows to dispatch from `cursor`: selected rows not done in the ledger, or, with a
     * retry `selection`, only failed rows it matches.
     */
    async nextRowsPage(args: RowsPageArgs): Promise<RowsPage> {
      // The store down for a while is waited out here; then, or at once for a bucket gone or
      // credentials refused, the failure is a StorageError and the run pauses for the store.
      return pausingOnStore(args.pauseOnStore, () => whileStoreDown(() => rowsPage(args)));
    },

    /**
     * A run paused for its store asks whether the store is back (workflows/dataset/storePause.ts):
     * one small write into the run folder. Its failure is the answer (not back), with the reason.
     */
    async probeStore(args: { outputDir: string; outputCsv?: string }): Promise<{ answered: boolean; reason?: string }> {
      try {
        await RunStore.open(args.outputDir).probe();
        // Results tables kept elsewhere (--output-csv): their store must answer too, or the final
        // tables would fail again as soon as the pause lifts. A read there: nothing is written
        // where the user pointed only the tables.
        if (args.outputCsv) {
          const target = resultsTargets({ outputDir: args.outputDir, outputCsv: args.outputCsv });
          await target.storage.stat(target.csv);
        }
        return { answered: true };
      } catch (err) {
        return { answered: false, reason: boundedMessage((err as Error)?.message ?? String(err)) };
      }
    },

    /** How many failed rows a retry selection matches (the answer to `atelier retry`). */
    async countRetryRows(args: { outputDir: string; selection: RetrySelection; filterRows?: string }): Promise<number> {
      const selected = rowSelector(args.filterRows);
      const retryable = retrySelector(args.selection);
      const stateOf = await ledgerReader(args.outputDir);
      let count = 0;
      for await (const row of allPlanRows(args.outputDir)) {
        if (!selected(row.position)) continue;
        const state = await stateOf(row);
        if (state.status === 'failed' && retryable(row.position, state.errorType)) count += 1;
      }
      return count;
    },

    /** Records a row's final failure, unless the row already succeeded; finished turns are kept. */
    async recordRowFailure(input: RecordFailureInput): Promise<void> {
      await recordFailure(input);
    },

    /**
     * Records the rows a cancelled run had in flight as Cancelled (rows already ok are left alone).
     * Rows carried over a continue-as-new are known by index only: their positions come from the plan.
     */
    async recordCancelledRows(args: {
      runId: string;
      model: string;
      outputDir: string;
      rows: { index: number; position?: number }[];
    }): Promise<void> {
      const positions = new Map(args.rows.map((r) => [r.index, r.position]));
      if ([...positions.values()].some((p) => p === undefined)) {
        for await (const row of allPlanRows(args.outputDir)) if (positions.has(row.index)) positions.set(row.index, row.position);
      }
      for (const [index, position] of positions) {
        if (position === undefined) continue; // not in this run's plan: nothing to record
        await recordFailure({
          runId: args.runId,
          model: args.model,
          outputDir: args.outputDir,
          index,
          position,
          errorType: ChildErrorTypes.cancelled,
          error: 'the run was cancelled while the row was in flight',
        });
      }
    },

    /**
     * Writes results.csv, .jsonl and .parquet from the plan and the ledger (activities/resultsTables.ts):
     * in full, or, given `changedRows`, reading only those rows' entries. Heartbeats as it goes;
     * rows whose entry cannot be read are reported (logged, counted in the summary), not fatal.
     */
    async writeResults(args: WriteResultsArgs): Promise<DatasetRunSummary> {
      const context = activityContext();
      const heartbeat = heartbeatOf(context);
      // A store down for a while is waited out (the tables written again from the start once it is back).
      // Past that, or at once for a bucket gone or credentials refused, the run pauses for the store.
      const { summary, info } = await pausingOnStore(args.pauseOnStore, () =>
        whileStoreDown(() => writeResultsTables(args, heartbeat), heartbeat),
      );
      if (info.unreadable.length) {
        const shown = info.unreadable.slice(0, 5).map((u) => `row ${u.index}: ${u.error}`);
        context?.log.warn(`results: ${info.unreadable.length} ledger entries could not be read (shown pending): ${shown.join('; ')}`);
      }
      return summary;
    },
  };
}

export type OrchestrationActivities = ReturnType<typeof createOrchestrationActivities>;
