import type { LedgerEntry } from './records';
import { RunStore, sameRequest, type TaggedEntry } from './runStore';

// The row ledger is the run's memory of finished rows, kept next to the outputs in the run's
// storage: one small JSON object per row index, written whole after the row's images are in place.
// Temporal's history expires (the dev server keeps closed runs for a day); the ledger does not, so
// "already done" is decided here. A row counts as done only when its entry says ok, was made for
// what the row asks now (its digest), and all its output files exist.
//
// Finishing a row is exclusive: an ok entry is committed by one conditional write that only one
// writer can make: a create (If-None-Match: * / link) for a row that had no entry, else a replace of
// the version the attempt started from (If-Match / a compare and rename under the key's lock). Two
// attempts of one row (a worker thought dead that still runs, and its retry) can never both believe
// they finished it; the loser takes the winner's.

export type { LedgerEntry } from './records';

/**
 * Indexes that have a ledger entry, from one listing: lets a scan over many rows skip the reads
 * (and their failures) for rows never attempted.
 */
export async function ledgerIndexes(outputDir: string): Promise<Set<number>> {
  return RunStore.open(outputDir).ledgerIndexes();
}

export async function readLedgerEntry(outputDir: string, index: number): Promise<LedgerEntry | undefined> {
  return RunStore.open(outputDir).readEntry(index);
}

/**
 * Records a failed or partial row: the last word on an unfinished row wins, but never over a row
 * committed ok for the same request (lib/run/runStore.ts).
 */
export async function writeLedgerEntry(outputDir: string, entry: LedgerEntry): Promise<LedgerEntry> {
  return RunStore.open(outputDir).writeEntry(entry);
}

/**
 * Commits a finished row. `startedFrom` is the entry (with its tag) the attempt read when it began
 * (null if none). Returns the entry that holds: this one, or, when another attempt of the row
 * committed first, that attempt's.
 */
export async function commitLedgerEntry(
  outputDir: string,
  entry: LedgerEntry,
  startedFrom: TaggedEntry | null = null,
): Promise<{ won: boolean; entry: LedgerEntry }> {
  return RunStore.open(outputDir).commitEntry(entry, startedFrom);
}

/** The entry, if the row is done for what it asks now. */
export async function completedEntry(outputDir: string, index: number, digest: string | undefined): Promise<LedgerEntry | undefined> {
  const store = RunStore.open(outputDir);
  const entry = await store.readEntry(index);
  return (await store.isDone(entry, digest)) ? entry : undefined;
}

/** Multi-turn rows: how many leading turns are done with their outputs in place (0 if none). */
export async function turnsDone(
  outputDir: string,
  entry: LedgerEntry | undefined,
  digest: string | undefined,
  outputs: readonly string[],
): Promise<number> {
  if (!entry || !sameRequest(entry, digest)) return 0;
  const done = Math.min(entry.turnsDone ?? 0, outputs.length);
  return done > 0 && (await RunStore.open(outputDir).outputsExist(outputs.slice(0, done))) ? done : 0;
}

/**
 * Where a row stands: done, failed (with its class), changed (done for a request the row no
 * longer makes: it will be done again), or not done yet (never tried, partial).
 */
export type RowLedgerState =
  | { status: 'ok'; entry: LedgerEntry }
  | { status: 'failed'; entry: LedgerEntry; errorType: string }
  | { status: 'changed'; entry: LedgerEntry }
  | { status: 'pending'; entry?: LedgerEntry };

/** A row as the ledger scan needs it: its index and what it asks for now. */
export interface LedgerRowKey {
  index: number;
  digest?: string | undefined;
  /**
   * Planning saw this row done, its outputs there (a plan row's flag): an ok entry for the same
   * request is taken as done without checking its outputs again.
   */
  doneAtPlanning?: boolean | undefined;
}

/** Reads rows' ledger states; `prefetch` reads a page of them at once. */
export interface LedgerReader {
  (row: LedgerRowKey): Promise<RowLedgerState>;
  /** Reads these rows' states concurrently (object storage answers a request in milliseconds). */
  prefetch(rows: readonly LedgerRowKey[]): Promise<void>;
  /**
   * The tag of the entry a state was read from (undefined for rows without one, or without
   * `recordTags`), once: the reader forgets it after it is asked.
   */
  tagOf(index: number): string | undefined;
  /** Whether the row has a ledger entry, as the reader's listing (or `only`) saw the ledger. */
  hasEntry(index: number): boolean;
}

/** A ledger entry kept from an earlier read, with the tag its object had then. */
export interface KeptEntry {
  tag: string;
  entry: LedgerEntry;
}

/** Kept entries by row (a Map, or the results records' KeptEntries, which parse a row only when asked). */
export interface KeptEntryLookup {
  readonly size: number;
  get(index: number): KeptEntry | undefined;
}

export interface LedgerReaderOptions {
  /**
   * The rows a scan will ask about, read without listing the whole ledger (the results refresh
   * reads just the rows finished since the last one).
   */
  only?: ReadonlySet<number> | undefined;
  /**
   * The rows a page will ask about: which have an entry is found for just these (a listing of
   * their key range, or a stat each on a disk), not from a listing of the whole ledger.
   */
  among?: readonly number[] | undefined;
  /**
   * Entries an earlier pass read (the results records): one listing of the ledger gives every
   * entry's tag, and an entry whose tag is unchanged is taken from here instead of read again.
   */
  kept?: KeptEntryLookup | undefined;
  /**
   * A scan over the whole plan: outputs are checked against listings of their folders (on S3 one
   * request per 1,000 objects) instead of a stat (a HEAD) per output.
   */
  listOutputs?: boolean;
  /**
   * Take an ok entry's outputs as in place without checking them (a live results refresh: they
   * were written before the entry, and the final pass checks them all).
   */
  trustOutputs?: boolean;
  /** Keep each read entry's tag for `tagOf` (the results tables record it); planning needs none. */
  recordTags?: boolean;
}

const PREFETCH_CONCURRENCY = 16;

/**
 * Reads rows' ledger states for a scan over many rows: one listing up front, then a read only for
 * rows that have an entry (most rows of a new run have none) and whose entry is not kept unchanged
 * from an earlier pass; or, given `only`, a read of just those.
 */
export async function ledgerReader(outputDir: string, options: LedgerReaderOptions | ReadonlySet<number> = {}): Promise<LedgerReader> {
  const { only, among, kept, listOutputs, trustOutputs, recordTags } =
    options instanceof Set ? { only: options } : (options as LedgerReaderOptions);
  const store = RunStore.open(outputDir);
  // Tags are listed only where kept entries can spare reads (on a disk a listing with tags stats every entry).
  const tags = !only && kept?.size ? await store.ledgerTags() : undefined;
  // The listing with tags answers "has an entry" itself: a set of its keys would be a second copy of a million rows.
  const attempted: { has(index: number): boolean } =
    only ?? tags ?? (among ? await store.ledgerIndexesAmong(among) : await store.ledgerIndexes());
  const readTags = recordTags ? new Map<number, string>() : undefined;
  const outputs = listOutputs ? store.outputListing() : undefined;
  const exist = (paths: readonly string[], digests: LedgerEntry['outputDigests']) =>
    outputs ? outputs.allExist(paths, digests) : store.outputsExist(paths, digests);
  const entryOf = async (index: number): Promise<LedgerEntry | undefined> => {
    const held = kept?.get(index);
    if (held && tags?.get(index) === held.tag) {
      readTags?.set(index, held.tag);
      return held.entry;
    }
    const read = await store.readEntryTagged(index);
    if (read) readTags?.set(index, read.tag);
    return read?.entry;
  };
  const read = async ({ index, digest, doneAtPlanning }: LedgerRowKey): Promise<RowLedgerState> => {
    const entry = attempted.has(index) ? await entryOf(index) : undefined;
    if (!entry) return { status: 'pending' };
    if (entry.status === 'ok' && !sameRequest(entry, digest)) return { status: 'changed', entry };
    if (entry.status === 'ok' && (doneAtPlanning || trustOutputs) && entry.outputImages?.length) return { status: 'ok', entry };
    if (entry.status === 'ok' && entry.outputImages?.length && (await exist(entry.outputImages, entry.outputDigests)))
      return { status: 'ok', entry };
    if (entry.status === 'failed') {
      // A failure for a request the row no longer makes says nothing about the new one.
      return sameRequest(entry, digest) ? { status: 'failed', entry, errorType: entry.errorType ?? 'Error' } : { status: 'pending', entry };
    }
    return { status: 'pending', entry };
  };
  const prefetched = new Map<number, Promise<RowLedgerState>>();
  const reader = ((row: LedgerRowKey) => {
    const ready = prefetched.get(row.index);
    prefetched.delete(row.index);
    return ready ?? read(row);
  }) as LedgerReader;
  reader.prefetch = async (rows) => {
    const todo = rows.filter((r) => attempted.has(r.index));
    for (let i = 0; i < todo.length; i += PREFETCH_CONCURRENCY) {
      const batch = todo.slice(i, i + PREFETCH_CONCURRENCY).map((r) => [r.index, read(r)] as const);
      for (const [index, state] of batch) prefetched.set(index, state);
      await Promise.all(batch.map(([, state]) => state.catch(() => undefined)));
    }
  };
  reader.tagOf = (index) => {
    // Asked once per row, after its state: forgotten then, so a pass over every row holds no tag it has used.
    const tag = readTags?.get(index);
    readTags?.delete(index);
    return tag;
  };
  reader.hasEntry = (index) => attempted.has(index);
  return reader;
}

/** Adds one to a count by failure class. */
export function countFailure(byType: Record<string, number>, errorType: string): void {
  byType[errorType] = (byType[errorType] ?? 0) + 1;
}
