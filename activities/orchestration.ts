import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { stringify } from 'csv-stringify';
import { isS3Location, keyProblem, objectAt, openStorage, type Storage } from '../storage';
import { LocalStorage } from '../storage/local';
import { readRunDataset, type DatasetHeader } from '../lib/dataset';
import { boundedMessage, ClassifiedError, DatasetError } from '../lib/shared/errors';
import { rowDigest } from '../lib/run/rowDigest';
import { runBlobStore } from '../lib/dataset/blobs';
import { rowSelector } from '../lib/shared/filterRows';
import { retrySelector } from '../lib/shared/retrySelection';
import { countFailure, ledgerReader, readLedgerEntry, writeLedgerEntry } from '../lib/run/ledger';
import { defaultOutputs, namedOutputs } from '../lib/run/outputNames';
import { runMetaKey } from '../lib/shared/constants';
import {
  allPlanRows,
  childLocation,
  PlanWriter,
  readPlanMeta,
  readPlanRows,
  type ImageRef,
  type PlanMeta,
  type PlanRow,
} from '../lib/run/plan';
import { parseDatasetWorkflowInput } from '../lib/run/workflowInput';
import { ChildErrorTypes, RunErrorTypes } from '../lib/shared/errorTypes';
import { carriedHistory } from '../lib/run/redo';
import { readJudgeRecords, scoreStillHolds } from '../lib/run/judgeScores';
import { inferKind, ParquetTableWriter, type TableColumn } from '../lib/export/parquetTable';
import type {
  DatasetRunSummary,
  DatasetWorkflowInput,
  PlanRunResult,
  RecordFailureInput,
  RetrySelection,
  RowDisplay,
  RowRef,
  RowsPage,
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

const DISPLAY_CHARS = 300;
const DISPLAY_INPUTS = 8;
const SUMMARY_CHARS = 80;
const RESULT_COLUMNS = ['output_image', 'status', 'error'] as const;
const RESULTS_CHUNK = 1000;
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
  const key = runMetaKey('run.json');
  const ownership: RunOwnership = { runId: input.runId, inputPath: input.inputPath, backend: input.backend, model: input.model };
  if (await storage.create(key, JSON.stringify(ownership, null, 2))) return;
  const owner = JSON.parse((await storage.read(key))!.toString('utf8')) as RunOwnership;
  if (owner.runId !== input.runId) {
    throw ApplicationFailure.nonRetryable(
      `output dir ${input.outputDir} already holds run ${owner.runId} (${owner.backend} ${owner.model}, input ${owner.inputPath}); ` +
        `use another --output-dir, or pass --run-id ${owner.runId} to continue that run`,
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

/** Where the results tables go: beside the outputs, or where --output-csv says (results.jsonl beside it). */
function resultsTargets(input: { outputDir: string; outputCsv?: string | undefined }): {
  storage: Storage;
  csv: string;
  jsonl: string;
  parquet: string;
} {
  let storage: Storage;
  let csv: string;
  if (!input.outputCsv) [storage, csv] = [openStorage(input.outputDir), 'results.csv'];
  else if (isS3Location(input.outputCsv)) ({ storage, key: csv } = objectAt(input.outputCsv));
  else [storage, csv] = [new LocalStorage(dirname(input.outputCsv)), basename(input.outputCsv)];
  const stem = csv.replace(/\.csv$/i, '');
  return { storage, csv, jsonl: `${stem}.jsonl`, parquet: `${stem}.parquet` };
}

/**
 * results.parquet: the JSONL's rows as a typed table (pandas, DuckDB, `datasets` read it as is).
 * Input columns get the narrowest type holding all their values; outputs are paths, not images
 * (`atelier export --format hf` embeds them).
 */
async function writeResultsParquet(
  path: string,
  rows: Array<Record<string, unknown>>,
  inputColumns: readonly string[],
  instructionEnhanced: boolean,
): Promise<void> {
  const columns: TableColumn[] = [
    ...inputColumns.map((name) => ({ name, kind: inferKind(rows.map((r) => r[name])) })),
    ...(instructionEnhanced ? [{ name: 'instruction_enhanced', kind: 'string' } as const] : []),
    { name: 'output_image', kind: 'stringList' },
    { name: 'status', kind: 'string' },
    { name: 'error', kind: 'string' },
    { name: 'attempts', kind: 'int' },
    { name: 'request_id', kind: 'string' },
    { name: 'latency_ms', kind: 'int' },
    { name: 'cost_usd', kind: 'double' },
    { name: 'generation', kind: 'int' },
    { name: 'score', kind: 'double' },
    { name: 'score_instruction_following', kind: 'double' },
    { name: 'score_preservation', kind: 'double' },
    { name: 'score_quality', kind: 'double' },
    { name: 'score_reason', kind: 'string' },
    { name: 'judge_model', kind: 'string' },
  ];
  const writer = new ParquetTableWriter(path, columns);
  await writer.write(rows, RESULTS_CHUNK);
  await writer.finish();
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

function csvCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

async function finish(stream: WriteStream): Promise<void> {
  stream.end();
  await once(stream, 'finish');
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
      input.imageCacheDir ??= childLocation(input.outputDir, runMetaKey('image-cache'));
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
        const stateOf = await ledgerReader(input.outputDir);
        try {
          const rows = readRunDataset(input, runBlobStore(storage), (h) => (header = h));
          // Selected rows are counted against the ledger a batch at a time (their states read
          // concurrently: a re-run over object storage would otherwise wait for each in turn).
          let batch: Array<{ index: number; digest: string }> = [];
          const countBatch = async (): Promise<void> => {
            await stateOf.prefetch(batch);
            for (const key of batch) {
              const state = await stateOf(key);
              if (state.status === 'ok') alreadyOk += 1;
              else if (state.status === 'changed') changed += 1;
              else if (state.status === 'failed') countFailure(failedByType, state.errorType);
            }
            batch = [];
          };
          for await (const row of rows) {
            const planned = planOutputs(input, row.index, row.turns.length, row.record, usedNames, rules);
            const digest = await rowDigest({ ...row, ...planned }, input);
            await writer.add({ ...row, ...planned, digest });
            if (selected(row.position)) {
              selectedRows += 1;
              batch.push({ index: row.index, digest });
              if (batch.length >= LEDGER_BATCH) await countBatch();
            }
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
        });
      } catch (err) {
        if (err instanceof DatasetError) throw ApplicationFailure.nonRetryable(err.message, RunErrorTypes.dataset);
        throw planningFailure(err);
      }
      return { input, totalRows: meta.totalRows, selectedRows, alreadyOk, failedByType, ...(changed ? { changed } : {}) };
    },

    /**
     * The next rows to dispatch from `cursor`: selected rows not done in the ledger, or, with a
     * retry `selection`, only failed rows it matches.
     */
    async nextRowsPage(args: {
      outputDir: string;
      cursor: number;
      limit: number;
      filterRows?: string;
      selection?: RetrySelection;
    }): Promise<RowsPage> {
      const selected = rowSelector(args.filterRows);
      const retryable = args.selection ? retrySelector(args.selection) : undefined;
      const rows = await readPlanRows(args.outputDir, args.cursor, args.limit);
      const stateOf = await ledgerReader(args.outputDir);
      await stateOf.prefetch(rows.filter((row) => selected(row.position)));
      const pending: RowRef[] = [];
      for (const row of rows) {
        if (!selected(row.position)) continue;
        const state = await stateOf(row);
        if (state.status === 'ok') continue;
        const previousErrorType = state.status === 'failed' ? state.errorType : undefined;
        if (retryable && !retryable(row.position, previousErrorType)) continue;
        const text = row.turns.join(' → ');
        const summary = text.length > SUMMARY_CHARS ? `${text.slice(0, SUMMARY_CHARS - 1)}…` : text;
        pending.push({
          position: row.position,
          index: row.index,
          summary,
          ...(previousErrorType ? { previousErrorType } : {}),
          display: rowDisplay(row),
        });
      }
      return { rows: pending, nextCursor: rows.length < args.limit ? null : args.cursor + rows.length };
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
     * Writes results.csv and results.jsonl from the plan and the ledger: every input row exactly
     * once, ok / failed / pending, whichever run or filter produced it.
     */
    async writeResults(args: {
      runId: string;
      outputDir: string;
      outputCsv?: string;
      instructionEnhanced?: boolean;
    }): Promise<DatasetRunSummary> {
      const meta = await readPlanMeta(args.outputDir);
      const target = resultsTargets(args);
      // Written to local temp files first, then stored whole: readers never see half a table.
      const temp = await mkdtemp(join(tmpdir(), 'atelier-results-'));
      const resultColumns: string[] = [...(args.instructionEnhanced ? ['instruction_enhanced'] : []), ...RESULT_COLUMNS];
      const inputColumns = meta.columns.filter((c) => !resultColumns.includes(c));
      const csvFile = createWriteStream(join(temp, 'results.csv'));
      const jsonlFile = createWriteStream(join(temp, 'results.jsonl'));
      const csv = stringify({ header: true, columns: [...inputColumns, ...resultColumns] });
      csv.pipe(csvFile);
      const counts = { total: 0, ok: 0, failed: 0, pending: 0 };
      let changed = 0;
      const failedByType: Record<string, number> = {};
      const usage: Record<string, number> = {};
      let attempts = 0;
      let costUsd = 0;
      let costUnknownRows = 0;
      const stateOf = await ledgerReader(args.outputDir);
      const parquetRows: Array<Record<string, unknown>> = [];
      const judged = await readJudgeRecords(args.outputDir);
      try {
        for (let start = 0; start < meta.totalRows; start += RESULTS_CHUNK) {
          const lines: string[] = [];
          const chunk = await readPlanRows(args.outputDir, start, RESULTS_CHUNK);
          await stateOf.prefetch(chunk);
          for (const row of chunk) {
            const state = await stateOf(row);
            const { status } = state;
            // A stale entry (the row changed and was not done again: filtered out, say) shows as
            // `changed`, with no output: its old output answers another request.
            const entry = status === 'changed' ? undefined : state.entry;
            const done = status === 'ok' ? entry : undefined;
            counts.total += 1;
            if (status === 'changed') {
              changed += 1;
              counts.pending += 1;
            } else counts[status] += 1;
            if (state.status === 'failed') countFailure(failedByType, state.errorType);
            attempts += entry?.attempts ?? 0;
            costUsd += entry?.costUsd ?? 0;
            if (status === 'ok' && entry?.costUsd === undefined) costUnknownRows += 1;
            for (const [k, v] of Object.entries(entry?.usage ?? {})) usage[k] = (usage[k] ?? 0) + v;
            const outputs = done?.outputImages ?? [];
            const error = state.status === 'failed' ? `${state.errorType}: ${state.entry.error ?? ''}` : '';
            // CSV: one path; the last turn's for multi-turn rows, a JSON list for several images.
            const outputCell =
              outputs.length === 0
                ? ''
                : row.turns.length > 1 || outputs.length === 1
                  ? outputs[outputs.length - 1]!
                  : JSON.stringify(outputs);
            const cells: Record<string, string> = {};
            for (const column of inputColumns) cells[column] = csvCell(row.record[column]);
            const enhanced = args.instructionEnhanced ? { instruction_enhanced: entry?.instructionEnhanced ?? '' } : {};
            if (!csv.write({ ...cells, ...enhanced, output_image: outputCell, status, error })) await once(csv, 'drain');
            // The judge's scores, while they are about this output (`atelier judge`).
            const score = done ? scoreStillHolds(judged.get(row.index), done) : undefined;
            const scoreFields = score
              ? {
                  score: score.scores.overall,
                  score_instruction_following: score.scores.instructionFollowing,
                  score_preservation: score.scores.preservation,
                  score_quality: score.scores.quality,
                  score_reason: score.reason,
                  judge_model: score.model,
                }
              : {};
            const metrics = entry
              ? {
                  attempts: entry.attempts ?? null,
                  request_id: entry.requestIds?.at(-1) ?? null,
                  latency_ms: entry.latencyMs ?? null,
                  usage: entry.usage ?? null,
                  cost_usd: entry.costUsd ?? null,
                  ...(entry.replacedDigest ? { replaced_changed_output: true } : {}),
                  // A redone row: which output this is, and the earlier ones (kept under .atelier/history/).
                  ...(entry.history?.length
                    ? {
                        generation: entry.history.length + 1,
                        history: entry.history.map((h) => ({
                          generation: h.generation,
                          output_image: h.outputImages,
                          cost_usd: h.costUsd ?? null,
                          reason: h.reason,
                        })),
                      }
                    : {}),
                }
              : {};
            lines.push(JSON.stringify({ ...row.record, ...enhanced, output_image: outputs, status, error, ...metrics, ...scoreFields }));
            const inputCells: Record<string, unknown> = {};
            for (const column of inputColumns) inputCells[column] = row.record[column];
            parquetRows.push({
              ...inputCells,
              ...enhanced,
              output_image: outputs,
              status,
              error,
              attempts: entry?.attempts,
              request_id: entry?.requestIds?.at(-1),
              latency_ms: entry?.latencyMs,
              cost_usd: entry?.costUsd,
              generation: entry ? (entry.history?.length ?? 0) + 1 : undefined,
              ...scoreFields,
            });
          }
          if (lines.length && !jsonlFile.write(`${lines.join('\n')}\n`)) await once(jsonlFile, 'drain');
        }
        csv.end();
        await once(csvFile, 'finish');
        await finish(jsonlFile);
        await writeResultsParquet(join(temp, 'results.parquet'), parquetRows, inputColumns, Boolean(args.instructionEnhanced));
        await target.storage.writeFromFile(target.csv, join(temp, 'results.csv'));
        await target.storage.writeFromFile(target.jsonl, join(temp, 'results.jsonl'));
        await target.storage.writeFromFile(target.parquet, join(temp, 'results.parquet'));
      } catch (err) {
        csvFile.destroy();
        jsonlFile.destroy();
        throw err;
      } finally {
        await rm(temp, { recursive: true, force: true });
      }
      return {
        runId: args.runId,
        resultsCsv: target.storage.describe(target.csv),
        resultsJsonl: target.storage.describe(target.jsonl),
        ...counts,
        ...(changed ? { changed } : {}),
        failedByType,
        attempts,
        costUsd,
        ...(costUnknownRows ? { costUnknownRows } : {}),
        usage,
      };
    },
  };
}

export type OrchestrationActivities = ReturnType<typeof createOrchestrationActivities>;
