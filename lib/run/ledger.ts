import { createHash } from 'node:crypto';
import { openStorage, type Storage } from '../../storage';
import { runMetaKey } from '../shared/constants';
import type { RowGeneration } from './redo';

// The row ledger is the run's memory of finished rows, kept next to the outputs in the run's
// storage: one small JSON object per row index, written whole after the row's images are in place.
// Temporal's history expires (the dev server keeps closed runs for a day); the ledger does not, so
// "already done" is decided here. A row counts as done only when its entry says ok, was made for
// what the row asks now (its digest), and all its output files exist.
//
// Finishing a row is exclusive: an ok entry is committed by creating a done-marker that only one
// writer can create (O_EXCL / If-None-Match), so two attempts of one row (a worker thought dead that
// still runs, and its retry) can never both believe they finished it; the loser takes the winner's.

export interface LedgerEntry {
  index: number;
  position: number;
  /** `partial`: a multi-turn row with some turns done (their outputs kept for the retry). */
  status: 'ok' | 'failed' | 'partial';
  runId: string;
  model: string;
  /** The row's digest when its outputs were made (lib/run/rowDigest.ts); absent in older ledgers. */
  digest?: string;
  /** Outputs replaced because the row changed since they were made. */
  replacedDigest?: string;
  /** Relative to the output dir, in order (one per image or per turn). */
  outputImages?: string[];
  /** Multi-turn rows: turns whose outputs are on disk. */
  turnsDone?: number;
  errorType?: string;
  error?: string;
  attempts?: number;
  requestIds?: string[];
  latencyMs?: number;
  /** Token counts as the provider reports them, summed over attempts and turns. */
  usage?: Record<string, number>;
  /** Estimated from the model's published prices (activities/providers/models.ts). */
  costUsd?: number;
  /** Provider facts worth keeping (remaining quota headers, ...). */
  info?: Record<string, string | number>;
  /** The instruction as --prompt-enhance rewrote it (turns joined by " → "). */
  instructionEnhanced?: string;
  /** Earlier outputs of a row made again (`atelier retry --redo`), oldest first (lib/run/redo.ts). */
  history?: RowGeneration[];
  finishedAt: string;
}

const LEDGER = runMetaKey('ledger');

function pad(index: number): string {
  return String(index).padStart(6, '0');
}

function entryKey(index: number): string {
  return `${LEDGER}/${pad(index)}.json`;
}

/**
 * The done-marker of one way of finishing a row: its digest and the ledger state the attempt
 * started from, so a row redone later (its content changed, then changed back) gets a new marker
 * while two attempts racing from the same state compete for one.
 */
function doneKey(index: number, digest: string | undefined, startedFrom: string | undefined): string {
  const from = createHash('sha256')
    .update(startedFrom ?? '')
    .digest('hex')
    .slice(0, 12);
  return `${LEDGER}/done/${pad(index)}-${(digest ?? 'any').slice(0, 16)}-${from}.json`;
}

function parse(bytes: Buffer | undefined): LedgerEntry | undefined {
  return bytes ? (JSON.parse(bytes.toString('utf8')) as LedgerEntry) : undefined;
}

/**
 * Indexes that have a ledger entry, from one listing: lets a scan over many rows skip the reads
 * (and their failures) for rows never attempted.
 */
export async function ledgerIndexes(outputDir: string): Promise<Set<number>> {
  const names = await openStorage(outputDir).list(LEDGER);
  return new Set(names.filter((n) => /^\d+\.json$/.test(n)).map((n) => Number(n.slice(0, -5))));
}

export async function readLedgerEntry(outputDir: string, index: number): Promise<LedgerEntry | undefined> {
  return parse(await openStorage(outputDir).read(entryKey(index)));
}

/** Records a failed or partial row (not exclusive: the last word on an unfinished row wins). */
export async function writeLedgerEntry(outputDir: string, entry: LedgerEntry): Promise<void> {
  await openStorage(outputDir).write(entryKey(entry.index), `${JSON.stringify(entry)}\n`);
}

/**
 * Commits a finished row. `startedFrom` is the entry the attempt read when it began (undefined if
 * none). Returns the entry that holds: this one, or, when another attempt of the row committed
 * first, that attempt's.
 */
export async function commitLedgerEntry(
  outputDir: string,
  entry: LedgerEntry,
  startedFrom: LedgerEntry | undefined,
): Promise<{ won: boolean; entry: LedgerEntry }> {
  const storage = openStorage(outputDir);
  const json = `${JSON.stringify(entry)}\n`;
  const marker = doneKey(entry.index, entry.digest, startedFrom?.finishedAt);
  if (!(await storage.create(marker, json))) {
    const winner = parse(await storage.read(marker));
    if (winner) {
      // The winner may have died between its marker and its entry (a killed host): the commit is
      // completed here, with the winner's entry, so the row never stays pending behind a marker.
      const current = await readLedgerEntry(outputDir, entry.index);
      if (current?.status !== 'ok' || current.finishedAt !== winner.finishedAt)
        await storage.write(entryKey(entry.index), `${JSON.stringify(winner)}\n`);
      return { won: false, entry: winner };
    }
  }
  await storage.write(entryKey(entry.index), json);
  return { won: true, entry };
}

/**
 * Checks that output files exist: a stat each (a HEAD on S3), only for rows whose entry says ok,
 * so a scan costs one request per finished output, whatever the size of the run.
 */
function outputChecker(storage: Storage): (paths: readonly string[]) => Promise<boolean> {
  // A failed check is an error, not a missing output: taking it for missing would run the row again.
  return async (paths) => (await Promise.all(paths.map((p) => storage.stat(p)))).every(Boolean);
}

/** Whether an entry marks its row done for `digest`: ok, made for it, and every output in place. */
async function isDone(
  entry: LedgerEntry | undefined,
  digest: string | undefined,
  exist: (paths: readonly string[]) => Promise<boolean>,
): Promise<boolean> {
  if (entry?.status !== 'ok' || !entry.outputImages?.length) return false;
  if (!sameRequest(entry, digest)) return false;
  return exist(entry.outputImages);
}

/** Entries from before digests were recorded, or rows planned without one, match any request. */
function sameRequest(entry: LedgerEntry, digest: string | undefined): boolean {
  return entry.digest === undefined || digest === undefined || entry.digest === digest;
}

/** The entry, if the row is done for what it asks now. */
export async function completedEntry(outputDir: string, index: number, digest: string | undefined): Promise<LedgerEntry | undefined> {
  const storage = openStorage(outputDir);
  const entry = await readLedgerEntry(outputDir, index);
  return (await isDone(entry, digest, outputChecker(storage))) ? entry : undefined;
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
  return done > 0 && (await outputChecker(openStorage(outputDir))(outputs.slice(0, done))) ? done : 0;
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
}

/** Reads rows' ledger states; `prefetch` reads a page of them at once. */
export interface LedgerReader {
  (row: LedgerRowKey): Promise<RowLedgerState>;
  /** Reads these rows' states concurrently (object storage answers a request in milliseconds). */
  prefetch(rows: readonly LedgerRowKey[]): Promise<void>;
}

const PREFETCH_CONCURRENCY = 16;

/**
 * Reads rows' ledger states for a scan over many rows: one listing up front, then a read only for
 * rows that have an entry (most rows of a new run have none).
 */
export async function ledgerReader(outputDir: string): Promise<LedgerReader> {
  const attempted = await ledgerIndexes(outputDir);
  const exist = outputChecker(openStorage(outputDir));
  const read = async ({ index, digest }: LedgerRowKey): Promise<RowLedgerState> => {
    const entry = attempted.has(index) ? await readLedgerEntry(outputDir, index) : undefined;
    if (!entry) return { status: 'pending' };
    if (entry.status === 'ok' && !sameRequest(entry, digest)) return { status: 'changed', entry };
    if (await isDone(entry, digest, exist)) return { status: 'ok', entry };
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
  return reader;
}

/** Adds one to a count by failure class. */
export function countFailure(byType: Record<string, number>, errorType: string): void {
  byType[errorType] = (byType[errorType] ?? 0) + 1;
}
