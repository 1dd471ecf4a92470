import { open, mkdtemp, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { stringify } from 'csv-stringify/sync';
import { isS3Location, objectAt, openStorage, type Storage } from '../storage';
import { LocalStorage } from '../storage/local';
import { countFailure, ledgerReader, type LedgerEntry } from '../lib/run/ledger';
import { readPlanMeta, readPlanRows, type PlanRow } from '../lib/run/plan';
import { readJudgeRecords, scoreStillHolds, type JudgeRecord } from '../lib/run/judgeScores';
import { planTag, ResultsRecords, type RecordedState } from '../lib/run/resultsRecords';
import { ParquetTableWriter, valuesKind, widenKind, type ColumnKind, type TableColumn } from '../lib/export/parquetTable';
import { markStillHolds, readReviewMarks, type ReviewMark } from '../lib/run/review';
import { resultsCsvColumns, resultsParquetColumns, reviewCells, scoreCells } from '../lib/run/resultsSchema';
import type { DatasetRunSummary } from '../lib/shared/types';

// results.csv, results.jsonl and results.parquet: every input row exactly once, ok / failed /
// pending, whichever run or filter produced it. A refresh names the rows finished since the last
// one (`changedRows`): only their ledger entries are read, the other rows' states come from the
// records the earlier passes kept (lib/run/resultsRecords.ts), so a refresh reads a number of
// entries in proportion to the rows just finished, not to the dataset. Without `changedRows` (or
// without usable records) every row's state is found again, as a full rewrite: one listing of the
// ledger gives each entry's tag, and only entries whose tag changed since the records kept them
// are read; outputs are checked against one listing per folder. Both give the same bytes.
//
// The three tables are written to local temp files, then replaced as one set: jsonl, parquet,
// then csv, back to back (Storage.replaceFromFiles). A reader that sees a results.csv sees the
// jsonl and parquet of the same refresh or a later one, never an older one or none.

export interface WriteResultsArgs {
  runId: string;
  outputDir: string;
  outputCsv?: string;
  instructionEnhanced?: boolean;
  /**
   * Rows finished since the last write, as [first, last] index ranges: only these are read from
   * the ledger. Absent: every row is (a full rewrite).
   */
  changedRows?: Array<[number, number]>;
}

/** What went into a write, beside the summary: how much it read (for the bench and the tests). */
export interface ResultsPassInfo {
  /** Ledger entries read: every row's on a full pass, the changed rows' on a refresh. */
  entriesRead: number;
  full: boolean;
  /** Rows whose ledger entry could not be read (shown pending, with the reason, and read again next time). */
  unreadable: Array<{ index: number; error: string }>;
}

const CHUNK = 1000;

/** Where the results tables go: beside the outputs, or where --output-csv says (results.jsonl beside it). */
export function resultsTargets(input: { outputDir: string; outputCsv?: string | undefined }): {
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
 * results.parquet's columns: each input column as the narrowest kind that holds all its values (a
 * first pass over the plan, a chunk at a time: the kind must be known before the first row group is
 * written), then the result columns.
 */
async function parquetColumns(
  outputDir: string,
  totalRows: number,
  inputColumns: readonly string[],
  enhanced: boolean,
  heartbeat: () => void,
): Promise<TableColumn[]> {
  const kinds = new Map<string, ColumnKind | undefined>(inputColumns.map((c) => [c, undefined]));
  for (let start = 0; start < totalRows; start += CHUNK) {
    heartbeat();
    const chunk = await readPlanRows(outputDir, start, CHUNK);
    for (const name of inputColumns) kinds.set(name, widenKind(kinds.get(name), valuesKind(chunk.map((row) => row.record[name]))));
  }
  return [...inputColumns.map((name) => ({ name, kind: kinds.get(name) ?? 'string' })), ...resultsParquetColumns(enhanced)];
}

function csvCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

function expandRanges(ranges: ReadonlyArray<[number, number]>): Set<number> {
  const out = new Set<number>();
  for (const [first, last] of ranges) for (let i = first; i <= last; i++) out.add(i);
  return out;
}

/** Sums and counts over the rows, for the run's summary. */
class Tally {
  readonly counts = { total: 0, ok: 0, failed: 0, pending: 0 };
  changed = 0;
  readonly failedByType: Record<string, number> = {};
  readonly usage: Record<string, number> = {};
  attempts = 0;
  costUsd = 0;
  costUnknownRows = 0;

  add(state: RecordedState, entry: LedgerEntry | undefined): void {
    this.counts.total += 1;
    if (state.status === 'changed') {
      this.changed += 1;
      this.counts.pending += 1;
    } else if (state.status === 'unreadable') this.counts.pending += 1;
    else this.counts[state.status] += 1;
    if (state.status === 'failed') countFailure(this.failedByType, state.errorType);
    this.attempts += entry?.attempts ?? 0;
    this.costUsd += entry?.costUsd ?? 0;
    if (state.status === 'ok' && entry?.costUsd === undefined) this.costUnknownRows += 1;
    for (const [k, v] of Object.entries(entry?.usage ?? {})) this.usage[k] = (this.usage[k] ?? 0) + v;
  }
}

/** One row as each table shows it. */
function rowCells(
  row: PlanRow,
  state: RecordedState,
  inputColumns: readonly string[],
  enhancedColumn: boolean,
  judged: ReadonlyMap<number, JudgeRecord>,
  marks: ReadonlyMap<number, ReviewMark>,
): { csv: Record<string, string>; json: string; parquet: Record<string, unknown>; entry: LedgerEntry | undefined } {
  const status = state.status === 'unreadable' ? 'pending' : state.status;
  // A stale entry (the row changed and was not done again: filtered out, say) shows as `changed`,
  // with no output: its old output answers another request.
  const entry = state.status === 'changed' || state.status === 'unreadable' ? undefined : state.entry;
  const done = state.status === 'ok' ? entry : undefined;
  const outputs = done?.outputImages ?? [];
  const error =
    state.status === 'failed'
      ? `${state.errorType}: ${state.entry.error ?? ''}`
      : state.status === 'unreadable'
        ? `LedgerUnreadable: ${state.error}`
        : '';
  // CSV: one path; the last turn's for multi-turn rows, a JSON list for several images.
  const outputCell =
    outputs.length === 0 ? '' : row.turns.length > 1 || outputs.length === 1 ? outputs[outputs.length - 1]! : JSON.stringify(outputs);
  const cells: Record<string, string> = {};
  for (const column of inputColumns) cells[column] = csvCell(row.record[column]);
  const enhanced: Record<string, string> = enhancedColumn ? { instruction_enhanced: entry?.instructionEnhanced ?? '' } : {};
  // The judge's scores, while they are about this output (`atelier judge`).
  const score = done ? scoreStillHolds(judged.get(row.index), done) : undefined;
  const scoreFields = scoreCells(score);
  // A person's mark from the viewer, while it is about this output.
  const reviewFields = reviewCells(done ? markStillHolds(marks.get(row.index), done) : undefined);
  const csvExtras: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...reviewFields, ...scoreFields })) csvExtras[k] = csvCell(v);
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
  const inputCells: Record<string, unknown> = {};
  for (const column of inputColumns) inputCells[column] = row.record[column];
  return {
    csv: { ...cells, ...enhanced, output_image: outputCell, status, error, ...csvExtras },
    json: JSON.stringify({ ...row.record, ...enhanced, output_image: outputs, status, error, ...metrics, ...reviewFields, ...scoreFields }),
    parquet: {
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
      ...reviewFields,
      ...scoreFields,
    },
    entry,
  };
}

/**
 * Writes the three tables. `heartbeat` is called between chunks (the activity's liveness; it throws
 * once the activity is cancelled). A row whose ledger entry cannot be read (unparsable, a failed
 * read) is shown pending with the reason and counted in `info.unreadable`: one bad entry does not
 * cost the run its tables.
 */
export async function writeResultsTables(
  args: WriteResultsArgs,
  heartbeat: () => void = () => undefined,
): Promise<{ summary: DatasetRunSummary; info: ResultsPassInfo }> {
  const meta = await readPlanMeta(args.outputDir);
  const tag = planTag(meta);
  const target = resultsTargets(args);
  const loaded = args.changedRows ? await ResultsRecords.load(args.outputDir, tag) : undefined;
  const records = loaded ?? ResultsRecords.fresh(args.outputDir, tag);
  // Incremental: the rows named, and those unreadable last time. Full: every row.
  const toRead = loaded ? expandRanges(args.changedRows!) : undefined;
  if (loaded && toRead) for (const i of loaded.unreadable()) toRead.add(i);
  // A refresh reads the rows named and trusts their outputs (written before their entries; the
  // final pass checks them). A full pass lists the ledger and the outputs' folders once and reads
  // only the entries that changed since the records kept them: the same states as reading them all.
  const stateOf = await ledgerReader(
    args.outputDir,
    toRead ? { only: toRead, trustOutputs: true } : { kept: await ResultsRecords.keptEntries(args.outputDir), listOutputs: true },
  );
  const judged = await readJudgeRecords(args.outputDir);
  const marks = await readReviewMarks(args.outputDir);
  const enhancedColumn = Boolean(args.instructionEnhanced);
  // results.csv has review and score columns once the run has marks or scores (every table then).
  const resultColumns = resultsCsvColumns({ enhanced: enhancedColumn, reviewed: marks.size > 0, scored: judged.size > 0 });
  const inputColumns = meta.columns.filter((c) => !resultColumns.includes(c));
  const tally = new Tally();
  const read = new Map<number, RecordedState>();
  const tags = new Map<number, string>();
  const info: ResultsPassInfo = { entriesRead: 0, full: !loaded, unreadable: [] };

  const temp = await mkdtemp(join(tmpdir(), 'atelier-results-'));
  const files = { csv: join(temp, 'results.csv'), jsonl: join(temp, 'results.jsonl'), parquet: join(temp, 'results.parquet') };
  // Plain file handles: every failure is a rejected promise this function sees (a stream with no
  // error listener took the worker process down with ERR_STREAM_DESTROYED).
  let csvFile: FileHandle | undefined;
  let jsonlFile: FileHandle | undefined;
  let parquet: ParquetTableWriter | undefined;
  try {
    // Row groups are written as the rows stream (one per chunk), so no pass holds every row.
    parquet = new ParquetTableWriter(
      files.parquet,
      await parquetColumns(args.outputDir, meta.totalRows, inputColumns, enhancedColumn, heartbeat),
    );
    csvFile = await open(files.csv, 'w');
    jsonlFile = await open(files.jsonl, 'w');
    await csvFile.write(stringify([], { header: true, columns: [...inputColumns, ...resultColumns] }));
    for (let start = 0; start < meta.totalRows; start += CHUNK) {
      heartbeat();
      const chunk = await readPlanRows(args.outputDir, start, CHUNK);
      const fresh = toRead ? chunk.filter((row) => toRead.has(row.index)) : chunk;
      await stateOf.prefetch(fresh);
      const csvRows: Array<Record<string, string>> = [];
      const lines: string[] = [];
      const parquetRows: Array<Record<string, unknown>> = [];
      for (const row of chunk) {
        let state: RecordedState;
        if (!toRead || toRead.has(row.index)) {
          info.entriesRead += 1;
          try {
            state = await stateOf(row);
          } catch (err) {
            const error = err instanceof Error ? err.message : String(err);
            state = { status: 'unreadable', error: error.slice(0, 300) };
            info.unreadable.push({ index: row.index, error });
          }
          read.set(row.index, state);
          const tag = stateOf.tagOf(row.index);
          if (tag !== undefined) tags.set(row.index, tag);
        } else state = records.get(row.index) ?? { status: 'pending' };
        const cells = rowCells(row, state, inputColumns, enhancedColumn, judged, marks);
        tally.add(state, cells.entry);
        csvRows.push(cells.csv);
        lines.push(cells.json);
        parquetRows.push(cells.parquet);
      }
      if (csvRows.length) await csvFile.write(stringify(csvRows, { header: false, columns: [...inputColumns, ...resultColumns] }));
      if (lines.length) await jsonlFile.write(`${lines.join('\n')}\n`);
      await parquet.write(parquetRows, CHUNK);
    }
    await csvFile.close();
    csvFile = undefined;
    await jsonlFile.close();
    jsonlFile = undefined;
    await parquet.finish();
    parquet = undefined;
    // The records first: tables written from them can always be written again.
    await records.commit(read, tags);
    heartbeat();
    await target.storage.replaceFromFiles([
      { key: target.jsonl, localPath: files.jsonl },
      { key: target.parquet, localPath: files.parquet },
      { key: target.csv, localPath: files.csv },
    ]);
  } finally {
    await csvFile?.close().catch(() => undefined);
    await jsonlFile?.close().catch(() => undefined);
    parquet?.abort();
    await rm(temp, { recursive: true, force: true });
  }
  const { counts, changed, failedByType, attempts, costUsd, costUnknownRows, usage } = tally;
  return {
    summary: {
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
      ...(info.unreadable.length ? { unreadableRows: info.unreadable.length } : {}),
    },
    info,
  };
}
