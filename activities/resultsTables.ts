import { createHash } from 'node:crypto';
import { open, mkdtemp, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { stringify } from 'csv-stringify/sync';
import { isS3Location, objectAt, openStorage, StoreFault, type Storage } from '../storage';
import { LocalStorage } from '../storage/local';
import { countFailure, ledgerReader, type LedgerEntry } from '../lib/run/ledger';
import { readPlanMeta, readPlanRows, type PlanRow } from '../lib/run/plan';
import { readJudgeRecords, scoreStillHolds, type JudgeRecord } from '../lib/run/judgeScores';
import { RecordsGone } from '../lib/run/resultsErrors';
import { planTag, ResultsRecords, type RecordedState } from '../lib/run/resultsRecords';
import {
  chunkLocator,
  indexRanges,
  KeptChunksGone,
  KeptPartReader,
  loadTablesManifest,
  MAX_PACKS,
  newPackId,
  removeUnusedPacks,
  saveTablesManifest,
  tablesSchema,
  type ChunkEntry,
  type PartSource,
  type TablesManifest,
  type TallyData,
} from '../lib/run/resultsChunks';
import { layout } from '../lib/run/runStore';
import {
  encodeRowGroup,
  ParquetAssembler,
  valuesKind,
  widenKind,
  type ColumnKind,
  type EncodedRowGroup,
  type TableColumn,
} from '../lib/export/parquetTable';
import { markStillHolds, readReviewMarks, type ReviewMark } from '../lib/run/review';
import { resultsCsvColumns, resultsParquetColumns, reviewCells, scoreCells } from '../lib/run/resultsSchema';
import type { DatasetRunSummary } from '../lib/shared/types';

// results.csv, results.jsonl and results.parquet: every input row exactly once, ok / failed /
// pending, whichever run or filter produced it. The tables are written in chunks of CHUNK plan rows
// (a results.parquet row group each), and each chunk's bytes are kept (lib/run/resultsChunks.ts).
// A refresh names the rows finished since the last one (`changedRows`): only their ledger entries
// are read (the other rows' states come from the records the earlier passes kept,
// lib/run/resultsRecords.ts), only the chunks that hold them (or whose judge scores or review marks
// changed) are encoded again, and the tables are assembled from those and the kept bytes of the
// others: a refresh's encoding and reading cost in proportion to the rows just finished, not to the
// dataset (the assembly is a byte copy). Without `changedRows`, or with records or kept chunks that
// do not match this plan and these columns, every row's state is found again, as a full write: one
// listing of the ledger gives each entry's tag, and only entries whose tag changed since the records
// kept them are read; outputs are checked against one listing per folder. Both give the same bytes.
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
  /**
   * A store fault fails the write at once (no activity retry): the workflow pauses the run for the
   * store (patch `atelier-store-pause-lifts`). Absent (refreshes, older histories): retried as before.
   */
  pauseOnStore?: boolean;
}

/** What went into a write, beside the summary: how much it read (for the bench and the tests). */
export interface ResultsPassInfo {
  /** Ledger entries read: every row's on a full pass, the changed rows' on a refresh. */
  entriesRead: number;
  full: boolean;
  /** Chunks of rows (CHUNK each) encoded again; the others' bytes were kept from earlier writes. */
  chunksEncoded: number;
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

/** Sums and counts over rows, for the run's summary: one per chunk, kept with it, and the chunks' summed in order. */
class Tally implements TallyData {
  counts = { total: 0, ok: 0, failed: 0, pending: 0 };
  changed = 0;
  failedByType: Record<string, number> = {};
  usage: Record<string, number> = {};
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

  merge(other: TallyData): void {
    for (const k of ['total', 'ok', 'failed', 'pending'] as const) this.counts[k] += other.counts[k];
    this.changed += other.changed;
    for (const [k, v] of Object.entries(other.failedByType)) this.failedByType[k] = (this.failedByType[k] ?? 0) + v;
    for (const [k, v] of Object.entries(other.usage)) this.usage[k] = (this.usage[k] ?? 0) + v;
    this.attempts += other.attempts;
    this.costUsd += other.costUsd;
    this.costUnknownRows += other.costUnknownRows;
  }

  data(): TallyData {
    const { counts, changed, failedByType, usage, attempts, costUsd, costUnknownRows } = this;
    return { counts: { ...counts }, changed, failedByType, usage, attempts, costUsd, costUnknownRows };
  }
}

/** The judge's scores and review marks of some rows, hashed: a chunk is encoded again when its hash changes. */
function marksHash(rows: Array<[number, JudgeRecord | undefined, ReviewMark | undefined]>): string {
  if (rows.length === 0) return '';
  rows.sort((x, y) => x[0] - y[0]);
  return createHash('sha256').update(JSON.stringify(rows)).digest('hex').slice(0, 16);
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
  try {
    return await tablesPass(args, heartbeat, true);
  } catch (err) {
    // A kept chunk or record could not be read as the manifest says (a pack removed meanwhile): a full write.
    if (err instanceof KeptChunksGone || err instanceof RecordsGone) return tablesPass(args, heartbeat, false);
    throw err;
  }
}

async function tablesPass(
  args: WriteResultsArgs,
  heartbeat: () => void,
  mayKeep: boolean,
): Promise<{ summary: DatasetRunSummary; info: ResultsPassInfo }> {
  const meta = await readPlanMeta(args.outputDir);
  const tag = planTag(meta);
  const target = resultsTargets(args);
  const store = openStorage(args.outputDir);
  const judged = await readJudgeRecords(args.outputDir);
  const marks = await readReviewMarks(args.outputDir);
  const enhancedColumn = Boolean(args.instructionEnhanced);
  // results.csv has review and score columns once the run has marks or scores (every table then).
  const resultColumns = resultsCsvColumns({ enhanced: enhancedColumn, reviewed: marks.size > 0, scored: judged.size > 0 });
  const inputColumns = meta.columns.filter((c) => !resultColumns.includes(c));
  const csvColumns = [...inputColumns, ...resultColumns];
  const chunkCount = Math.ceil(meta.totalRows / CHUNK);
  const schema = tablesSchema({
    plan: tag,
    chunkRows: CHUNK,
    csvColumns,
    enhanced: enhancedColumn,
    tables: [target.csv, target.jsonl, target.parquet].map((key) => target.storage.describe(key)),
  });

  // Incremental: records and kept chunks that agree with this plan and these columns. Else a full write.
  // The records' pointer only: the states of the rows a refresh does not read come from the kept chunks.
  let loaded = mayKeep && args.changedRows ? await ResultsRecords.load(args.outputDir, tag, { pointerOnly: true }) : undefined;
  const kept = loaded ? await loadTablesManifest(store, { records: loaded.version, schema, chunks: chunkCount }) : undefined;
  if (!kept) loaded = undefined;
  const records = loaded ?? ResultsRecords.fresh(args.outputDir, tag);
  const columns = kept?.columns ?? (await parquetColumns(args.outputDir, meta.totalRows, inputColumns, enhancedColumn, heartbeat));

  // Incremental: the rows named, and those unreadable last time; the chunks that hold them, and
  // those whose marks or scores changed, are encoded again. Full: every row and chunk.
  const toRead = loaded ? expandRanges(args.changedRows!) : undefined;
  if (kept && toRead) for (const i of kept.chunks.flatMap((c) => c.unreadable)) toRead.add(i);
  const redo = new Set<number>();
  if (kept && toRead) {
    const locate = chunkLocator(kept.chunks);
    for (const i of toRead) {
      const chunk = locate(i);
      if (chunk !== undefined) redo.add(chunk);
    }
    const marked = new Map<number, Array<[number, JudgeRecord | undefined, ReviewMark | undefined]>>();
    for (const i of new Set([...judged.keys(), ...marks.keys()])) {
      const chunk = locate(i);
      if (chunk === undefined) continue;
      const list = marked.get(chunk) ?? [];
      list.push([i, judged.get(i), marks.get(i)]);
      marked.set(chunk, list);
    }
    kept.chunks.forEach((entry, chunk) => {
      if (marksHash(marked.get(chunk) ?? []) !== entry.marks) redo.add(chunk);
    });
  } else for (let chunk = 0; chunk < chunkCount; chunk++) redo.add(chunk);
  const keptChunks = kept ? kept.chunks.map((entry, chunk) => ({ chunk, entry })).filter(({ chunk }) => !redo.has(chunk)) : [];
  // A write that would leave too many packs in use writes every chunk's parts as one new pack instead.
  const packsInUse = new Set(keptChunks.map(({ entry }) => entry.pack)).size + (redo.size ? 1 : 0);
  // So does one whose records commit makes a new base: the kept states that lie in the current base go with it.
  const whole = !kept || packsInUse > MAX_PACKS || records.rebasesOnCommit;

  // A refresh reads the rows named and trusts their outputs (written before their entries; the
  // final pass checks them). A full pass lists the ledger and the outputs' folders once and reads
  // only the entries that changed since the records kept them: the same states as reading them all.
  const stateOf = await ledgerReader(
    args.outputDir,
    toRead
      ? { only: toRead, trustOutputs: true, recordTags: true }
      : { kept: await ResultsRecords.keptEntries(args.outputDir), listOutputs: true, recordTags: true },
  );
  const read = new Map<number, RecordedState>();
  const tags = new Map<number, string>();
  const info: ResultsPassInfo = { entriesRead: 0, full: !loaded, chunksEncoded: redo.size, unreadable: [] };
  // The kept chunks' table bytes, from the tables this write replaces (read before it replaces them),
  // each only while it is the version the manifest names.
  // (A manifest's tags are non-empty strings, loadTablesManifest checks; readRangeIf trusts no empty one.)
  const table = (key: string, tag: string | undefined): PartSource => ({ storage: target.storage, key: () => key, tag: tag ?? '' });
  const readers = {
    csv: new KeptPartReader(table(target.csv, kept?.tables.csv), 'csv', keptChunks),
    jsonl: new KeptPartReader(table(target.jsonl, kept?.tables.jsonl), 'jsonl', keptChunks),
    parquet: new KeptPartReader(table(target.parquet, kept?.tables.parquet), 'parquet', keptChunks),
    // The states of the chunks encoded again (and of every chunk when this write makes the one pack).
    states: new KeptPartReader(
      { storage: store, key: (entry) => entry.statesKey ?? layout.results.pack(entry.pack, 'states') },
      'states',
      (kept?.chunks ?? []).map((entry, chunk) => ({ chunk, entry })).filter(({ chunk }) => whole || redo.has(chunk)),
    ),
  };
  // Each pack's row group metadata, read whole (a few kB per chunk) when a kept chunk needs it.
  const packMetas = new Map<string, Buffer>();
  const keptMeta = async (entry: ChunkEntry): Promise<Buffer> => {
    let bytes = packMetas.get(entry.pack);
    if (!bytes) {
      bytes = await store.read(layout.results.pack(entry.pack, 'meta')).catch((err: unknown) => {
        if (err instanceof StoreFault) throw err; // the store down ends the pass (whileStoreDown)
        throw new KeptChunksGone(`pack ${entry.pack}.meta: ${(err as Error).message}`);
      });
      if (!bytes) throw new KeptChunksGone(`pack ${entry.pack}.meta is gone`);
      packMetas.set(entry.pack, bytes);
    }
    const [offset, length] = entry.meta;
    if (offset + length > bytes.length) throw new KeptChunksGone(`pack ${entry.pack}.meta is shorter than its manifest says`);
    return bytes.subarray(offset, offset + length);
  };

  const temp = await mkdtemp(join(tmpdir(), 'atelier-results-'));
  const files = { csv: join(temp, 'results.csv'), jsonl: join(temp, 'results.jsonl'), parquet: join(temp, 'results.parquet') };
  const packFiles = { meta: join(temp, 'pack.meta'), states: join(temp, 'pack.states') };
  const packId = newPackId();
  const entries: ChunkEntry[] = [];
  const summed = new Tally();
  // Plain file handles: every failure is a rejected promise this function sees (a stream with no
  // error listener took the worker process down with ERR_STREAM_DESTROYED).
  const handles: FileHandle[] = [];
  const openFile = async (path: string): Promise<Appender> => {
    const handle = await open(path, 'w');
    handles.push(handle);
    return new Appender(handle);
  };
  let parquet: ParquetAssembler | undefined;
  try {
    const csvFile = await openFile(files.csv);
    const jsonlFile = await openFile(files.jsonl);
    // The metadata and states of the chunks encoded by this write (of every chunk when `whole`): its pack.
    const metas = await openFile(packFiles.meta);
    const statesFile = await openFile(packFiles.states);
    parquet = new ParquetAssembler(files.parquet, columns);
    await csvFile.append(Buffer.from(stringify([], { header: true, columns: csvColumns })));
    for (let chunk = 0; chunk < chunkCount; chunk++) {
      heartbeat();
      let parts: { csv: Buffer; jsonl: Buffer; group: EncodedRowGroup; states?: Buffer };
      let entry: Omit<ChunkEntry, 'pack' | 'csv' | 'jsonl' | 'parquet' | 'meta' | 'states'>;
      let keptEntry: ChunkEntry | undefined;
      if (redo.has(chunk)) {
        const rows = await readPlanRows(args.outputDir, chunk * CHUNK, CHUNK);
        const fresh = toRead ? rows.filter((row) => toRead.has(row.index)) : rows;
        await stateOf.prefetch(fresh);
        const tally = new Tally();
        const csvRows: Array<Record<string, string>> = [];
        const lines: string[] = [];
        const parquetRows: Array<Record<string, unknown>> = [];
        const marked: Array<[number, JudgeRecord | undefined, ReviewMark | undefined]> = [];
        const keptStates = kept ? await readers.states.get(chunk).then(parseStates) : undefined;
        const stateLines: string[] = [];
        const unreadable: number[] = [];
        for (const row of rows) {
          let state: RecordedState;
          let tag: string | undefined;
          if (!toRead || toRead.has(row.index)) {
            info.entriesRead += 1;
            try {
              state = await stateOf(row);
            } catch (err) {
              // A fault of the store as a whole (down, bucket gone, credentials refused) is not this
              // row's: shown as "pending", the final tables would lose rows that are done. It ends the
              // pass, and the run pauses on it (activities/orchestration.ts) until the store is back.
              if (err instanceof StoreFault) throw err;
              const error = err instanceof Error ? err.message : String(err);
              state = { status: 'unreadable', error: error.slice(0, 300) };
              info.unreadable.push({ index: row.index, error });
            }
            tag = stateOf.tagOf(row.index);
            // A full write keeps no state in memory: its records are the states file it writes.
            if (kept) {
              read.set(row.index, state);
              if (tag !== undefined) tags.set(row.index, tag);
            }
          } else {
            const record = keptStates?.get(row.index);
            [state, tag] = [record?.s ?? { status: 'pending' }, record?.t];
          }
          stateLines.push(stateLine(row.index, state, tag));
          if (state.status === 'unreadable') unreadable.push(row.index);
          const cells = rowCells(row, state, inputColumns, enhancedColumn, judged, marks);
          tally.add(state, cells.entry);
          csvRows.push(cells.csv);
          lines.push(cells.json);
          parquetRows.push(cells.parquet);
          if (judged.has(row.index) || marks.has(row.index)) marked.push([row.index, judged.get(row.index), marks.get(row.index)]);
        }
        parts = {
          csv: Buffer.from(stringify(csvRows, { header: false, columns: csvColumns })),
          jsonl: Buffer.from(`${lines.join('\n')}\n`),
          group: encodeRowGroup(columns, parquetRows),
          states: Buffer.from(stateLines.join('')),
        };
        entry = { indexes: indexRanges(rows.map((r) => r.index)), tally: tally.data(), marks: marksHash(marked), unreadable };
      } else {
        keptEntry = kept!.chunks[chunk]!;
        parts = {
          csv: await readers.csv.get(chunk),
          jsonl: await readers.jsonl.get(chunk),
          group: { bytes: await readers.parquet.get(chunk), meta: await keptMeta(keptEntry) },
          ...(whole ? { states: await readers.states.get(chunk) } : {}),
        };
        entry = { indexes: keptEntry.indexes, tally: keptEntry.tally, marks: keptEntry.marks, unreadable: keptEntry.unreadable };
      }
      summed.merge(entry.tally);
      const at = { csv: await csvFile.append(parts.csv), jsonl: await jsonlFile.append(parts.jsonl), parquet: parquet.append(parts.group) };
      const sizes = { csv: parts.csv.length, jsonl: parts.jsonl.length, parquet: parts.group.bytes.length };
      // Every chunk's table bytes are where this write put them in the new tables.
      const ranges = { csv: [at.csv, sizes.csv], jsonl: [at.jsonl, sizes.jsonl], parquet: [at.parquet, sizes.parquet] } satisfies Pick<
        ChunkEntry,
        'csv' | 'jsonl' | 'parquet'
      >;
      if (keptEntry && !whole) entries.push({ ...keptEntry, ...ranges });
      else {
        const states = parts.states!;
        entries.push({
          ...entry,
          ...ranges,
          pack: packId,
          meta: [await metas.append(Buffer.from(parts.group.meta)), parts.group.meta.length],
          states: [await statesFile.append(states), states.length],
        });
      }
    }
    for (const handle of handles.splice(0)) await handle.close();
    heartbeat();
    await parquet.finish();
    parquet = undefined;
    // The records first: tables written from them can always be written again. A write whose
    // states file holds every chunk's rows (a full write, or `whole`) makes that file the records'
    // new base, its chunks' states read from there: a refresh past the records' last segment never
    // reads them whole (at a million rows, more than V8's longest string). A write that read no row
    // (the viewer's, after a mark) leaves the records as they are: a refresh may have moved them.
    const asBase = !kept || (whole && read.size > 0);
    if (asBase) {
      const statesKey = await records.commitBase(packFiles.states);
      for (const entry of entries) entry.statesKey = statesKey;
    } else await records.commit(read, tags);
    heartbeat();
    if (redo.size || whole) {
      for (const part of asBase ? (['meta'] as const) : (['meta', 'states'] as const))
        await store.writeFromFile(layout.results.pack(packId, part), packFiles[part]);
      heartbeat();
    }
    const [jsonlTag, parquetTag, csvTag] = await target.storage.replaceFromFiles([
      { key: target.jsonl, localPath: files.jsonl },
      { key: target.parquet, localPath: files.parquet },
      { key: target.csv, localPath: files.csv },
    ]);
    // The manifest last: until it names them, the new pack, records and tables are not trusted.
    const manifest: TablesManifest = {
      version: 3,
      schema,
      records: records.version!,
      columns,
      tables: { csv: csvTag!, jsonl: jsonlTag!, parquet: parquetTag! },
      chunks: entries,
    };
    await saveTablesManifest(store, manifest);
    await removeUnusedPacks(store, manifest);
  } finally {
    for (const handle of handles) await handle.close().catch(() => undefined);
    parquet?.abort();
    await rm(temp, { recursive: true, force: true });
  }
  const { counts, changed, failedByType, attempts, costUsd, costUnknownRows, usage } = summed;
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

/** A row's state as the records and the kept chunks store it (resultsRecords.ts's line format). */
function stateLine(i: number, s: RecordedState, t: string | undefined): string {
  return `${JSON.stringify(t === undefined ? { i, s } : { i, s, t })}\n`;
}

function parseStates(bytes: Buffer): Map<number, { s: RecordedState; t?: string }> {
  const out = new Map<number, { s: RecordedState; t?: string }>();
  try {
    for (const line of bytes.toString('utf8').split('\n')) {
      if (!line) continue;
      const { i, s, t } = JSON.parse(line) as { i: number; s: RecordedState; t?: string };
      out.set(i, t === undefined ? { s } : { s, t });
    }
  } catch (err) {
    throw new KeptChunksGone(`kept states do not parse: ${(err as Error).message}`);
  }
  return out;
}

/** Appends to a file, counting where each write starts. */
class Appender {
  private size = 0;

  constructor(private readonly handle: FileHandle) {}

  async append(bytes: Uint8Array): Promise<number> {
    const at = this.size;
    if (bytes.length) await this.handle.write(bytes);
    this.size += bytes.length;
    return at;
  }
}
