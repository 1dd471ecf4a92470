import { createHash, randomBytes } from 'node:crypto';
import { StoreFault, type Storage } from '../../storage';
import type { TableColumn } from '../export/parquetTable';
import { KeptChunksGone } from './resultsErrors';
import { layout } from './runStore';

export { KeptChunksGone } from './resultsErrors';

// The results tables' kept chunks: every CHUNK rows of the plan, the bytes each table holds for
// them (results.csv's lines, results.jsonl's lines, results.parquet's row group and that group's
// metadata), so a refresh encodes again only the chunks whose rows changed and assembles the tables
// from the rest as they are (a byte copy, and a new footer for results.parquet).
//
//   results.{csv,jsonl,parquet}                  the tables themselves hold every chunk's table
//                                                 bytes: the manifest names their byte ranges and
//                                                 each table's version tag as written
//   .atelier/results/tables.json                 the manifest: those ranges and tags, the pack
//                                                 that holds each chunk's other parts, and what the
//                                                 chunks were made from
//   .atelier/results/packs/<id>.{meta,states}    one pack per write: the row group metadata of the
//                                                 chunks it encoded (of every chunk for a `whole`
//                                                 write) and their rows' states as the records
//                                                 hold them, so a refresh reads those of the chunks
//                                                 it encodes again, not every record (the states
//                                                 of a full write, or of a `whole` write that read
//                                                 rows, are the records' new base: no `states` part)
//
// The table bytes are not kept a second time (on S3 that was a second upload of the tables, and on
// a disk twice their size under .atelier/): a write reads the kept chunks from the tables it is
// about to replace, all before it replaces them, each read only while the table is the version the
// manifest names (Storage.readRangeIf). Tables edited or replaced since (a person, another writer,
// a refresh that died between the tables and the manifest) are not trusted: one full write.
// Packs are never changed once written; the manifest is replaced after the tables, and names the
// results records (resultsRecords.ts) it agrees with: records, plan, columns, chunk size or the
// tables' location that do not match it, or a pack gone, cost one full write, never a wrong table.
// A write that would leave more than MAX_PACKS packs in use writes every chunk's parts as one new
// pack instead.

/** A byte range of a pack part: [offset, length]. */
export type PartRange = [number, number];

/** Sums and counts over a chunk's rows, for the run's summary (chunks are summed in order). */
export interface TallyData {
  counts: { total: number; ok: number; failed: number; pending: number };
  changed: number;
  failedByType: Record<string, number>;
  usage: Record<string, number>;
  attempts: number;
  costUsd: number;
  costUnknownRows: number;
}

export interface ChunkEntry {
  /** The pack holding the chunk's `meta` and `states`; `csv`, `jsonl` and `parquet` are ranges of the tables. */
  pack: string;
  csv: PartRange;
  jsonl: PartRange;
  parquet: PartRange;
  meta: PartRange;
  /** The rows' states, one {"i", "s", "t"} line a row (resultsRecords.ts's format). */
  states: PartRange;
  /**
   * Where `states` lies when not in the pack: the records' base segment itself (the same bytes,
   * kept once), for a full write and for a refresh that wrote every chunk's states (past the
   * records' last segment, or past the packs' limit): its states file became the new base.
   */
  statesKey?: string;
  /** Rows whose ledger entry could not be read: a refresh reads them again. */
  unreadable: number[];
  /** The chunk's row indexes, as [first, last] ranges (a refresh finds a changed row's chunk by them). */
  indexes: Array<[number, number]>;
  tally: TallyData;
  /** The judge's scores and review marks of the chunk's rows, hashed (the viewer marks rows without a ledger change). */
  marks: string;
}

export interface TablesManifest {
  version: 3;
  /** Each table's version tag as the write that made this manifest left it (its chunk ranges are in that version). */
  tables: { csv: string; jsonl: string; parquet: string };
  /** What every chunk's bytes depend on besides its rows: plan, chunk size, csv and parquet columns, the tables' location. */
  schema: string;
  /** The results records these chunks were made with (ResultsRecords.version). */
  records: string;
  /** results.parquet's columns, kinds included (decided by the full write that made the first pack). */
  columns: TableColumn[];
  chunks: ChunkEntry[];
}

/** Past this many packs in use a write keeps its tables as one new pack (reads stay few on S3). */
export const MAX_PACKS = 12;

export function newPackId(): string {
  return `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/** The key a chunk's bytes depend on, besides its own rows. */
export function tablesSchema(input: {
  plan: string;
  chunkRows: number;
  csvColumns: readonly string[];
  enhanced: boolean;
  /** Where the tables are (described): the chunk ranges are of those objects. */
  tables: readonly string[];
}): string {
  return createHash('sha256').update(JSON.stringify(input)).digest('hex').slice(0, 16);
}

/** A version tag as a manifest must hold it: a non-empty string (an empty one would match a store that sends no ETag). */
function isTag(value: unknown): value is string {
  return typeof value === 'string' && value !== '';
}

/** The manifest's tables: an object with each table's tag (null, an array or a missing tag are not). */
function validTables(tables: unknown): tables is TablesManifest['tables'] {
  if (typeof tables !== 'object' || tables === null || Array.isArray(tables)) return false;
  const t = tables as Record<string, unknown>;
  return isTag(t.csv) && isTag(t.jsonl) && isTag(t.parquet);
}

/**
 * The manifest, when it is there and agrees with the records and schema given; else undefined (a
 * full write follows). The store failing as a whole (StoreFault) is thrown: it ends the pass.
 */
export async function loadTablesManifest(
  storage: Storage,
  expect: { records: string | undefined; schema: string; chunks: number },
): Promise<TablesManifest | undefined> {
  try {
    const bytes = await storage.read(layout.results.tables);
    if (!bytes || expect.records === undefined) return undefined;
    const manifest = JSON.parse(bytes.toString('utf8')) as TablesManifest;
    const agrees =
      manifest.version === 3 &&
      validTables(manifest.tables) &&
      manifest.records === expect.records &&
      manifest.schema === expect.schema &&
      Array.isArray(manifest.chunks) &&
      manifest.chunks.length === expect.chunks;
    return agrees ? manifest : undefined;
  } catch (err) {
    // The store down is no doubt about the manifest: the pass ends and waits for the store.
    if (err instanceof StoreFault) throw err;
    // A cache: any doubt costs one full write.
    return undefined;
  }
}

export async function saveTablesManifest(storage: Storage, manifest: TablesManifest): Promise<void> {
  await storage.write(layout.results.tables, JSON.stringify(manifest));
}

/** Removes the packs the manifest does not use (one listing); a failure leaves them for the next write. */
export async function removeUnusedPacks(storage: Storage, manifest: TablesManifest): Promise<void> {
  const used = new Set(manifest.chunks.map((c) => c.pack));
  try {
    const names = await storage.list(layout.results.packs);
    const unused = names.filter((n) => !n.includes('/') && !used.has(n.slice(0, n.lastIndexOf('.'))));
    for (const name of unused) await storage.remove(`${layout.results.packs}/${name}`);
  } catch {
    // Left for the next write's listing.
  }
}

/** Finds the chunk that holds a row index, by the chunks' index ranges. */
export function chunkLocator(chunks: readonly ChunkEntry[]): (index: number) => number | undefined {
  const ranges = chunks.flatMap((c, n) => c.indexes.map(([lo, hi]) => [lo, hi, n] as const)).sort((a, b) => a[0] - b[0]);
  return (index) => {
    let lo = 0;
    let hi = ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const [first, last, chunk] = ranges[mid]!;
      if (index < first) hi = mid - 1;
      else if (index > last) lo = mid + 1;
      else return chunk;
    }
    return undefined;
  };
}

/** [first, last] ranges of a list of indexes (in their order: a gap or a step back starts a new range). */
export function indexRanges(indexes: readonly number[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const i of indexes) {
    const last = out.at(-1);
    if (last && i === last[1] + 1) last[1] = i;
    else out.push([i, i]);
  }
  return out;
}

/** Where a kept part lies: a pack's part, or a table in the version the manifest names. */
export interface PartSource {
  storage: Storage;
  key: (entry: ChunkEntry) => string;
  /** The version the object must be (the table as written); absent for packs (never changed). */
  tag?: string;
}

/**
 * Reads kept parts in chunk order from the packs or the tables, coalescing neighbours into ranged
 * reads of up to RANGE_BYTES (parts of one object lie back to back: a few requests per table on S3).
 * Every read is checked for its length, and a table's for its version: a pack cut short or gone, or
 * a table replaced since the manifest, throws `KeptChunksGone`; a StoreFault is thrown as it is.
 */
export class KeptPartReader {
  private static readonly RANGE_BYTES = 8 << 20;
  private static readonly GAP_BYTES = 64 << 10;
  private readonly plan: Array<{ key: string; start: number; end: number }> = [];
  private readonly wants = new Map<number, { range: number; offset: number; length: number }>();
  private current: { range: number; bytes: Buffer } | undefined;

  constructor(
    private readonly source: PartSource,
    private readonly part: 'csv' | 'jsonl' | 'parquet' | 'meta' | 'states',
    kept: ReadonlyArray<{ chunk: number; entry: ChunkEntry }>,
  ) {
    for (const { chunk, entry } of kept) {
      const [offset, length] = entry[part];
      const key = source.key(entry);
      const last = this.plan.at(-1);
      if (
        last &&
        last.key === key &&
        offset >= last.end &&
        offset - last.end <= KeptPartReader.GAP_BYTES &&
        offset + length - last.start <= KeptPartReader.RANGE_BYTES
      )
        last.end = offset + length;
      else this.plan.push({ key, start: offset, end: offset + length });
      const range = this.plan.length - 1;
      this.wants.set(chunk, { range, offset: offset - this.plan[range]!.start, length });
    }
  }

  /** The kept bytes of a chunk's part (chunks asked in order). */
  async get(chunk: number): Promise<Buffer> {
    const want = this.wants.get(chunk);
    if (!want) throw new KeptChunksGone(`chunk ${chunk} has no kept ${this.part}`);
    if (this.current?.range !== want.range) {
      const { key, start, end } = this.plan[want.range]!;
      const { storage, tag } = this.source;
      let bytes: Buffer | undefined;
      try {
        bytes = tag === undefined ? await storage.readRange(key, start, end) : await storage.readRangeIf(key, start, end, tag);
      } catch (err) {
        // The store failing as a whole (5xx, a cut connection, credentials refused) ends the pass,
        // which waits for the store (whileStoreDown): a full write would fail the same way.
        if (err instanceof StoreFault) throw err;
        throw new KeptChunksGone(`${storage.describe(key)}: ${(err as Error).message}`);
      }
      if (!bytes) throw new KeptChunksGone(`${storage.describe(key)} was changed or replaced since the results manifest was written`);
      if (bytes.length !== end - start) throw new KeptChunksGone(`${storage.describe(key)} is shorter than its manifest says`);
      this.current = { range: want.range, bytes };
    }
    return this.current.bytes.subarray(want.offset, want.offset + want.length);
  }
}
