import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './atomicFile';
import { runMetaDir } from './plan';

// The row ledger is the run's memory of finished rows, kept next to the outputs: one small JSON file
// per row index, written atomically after the row's images are in place. Temporal's history expires
// (the dev server keeps closed runs for a day); the ledger does not, so "already done" is decided
// here. A row counts as done only when its entry says ok and all its output files exist.

export interface LedgerEntry {
  index: number;
  position: number;
  /** `partial`: a multi-turn row with some turns done (their outputs kept for the retry). */
  status: 'ok' | 'failed' | 'partial';
  runId: string;
  model: string;
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
  finishedAt: string;
}

function ledgerDir(outputDir: string): string {
  return join(runMetaDir(outputDir), 'ledger');
}

function entryPath(outputDir: string, index: number): string {
  return join(ledgerDir(outputDir), `${String(index).padStart(6, '0')}.json`);
}

/**
 * Indexes that have a ledger entry, from one directory listing: lets a scan over many rows skip
 * the file reads (and their failures) for rows never attempted.
 */
export async function ledgerIndexes(outputDir: string): Promise<Set<number>> {
  try {
    const names = await readdir(ledgerDir(outputDir));
    return new Set(names.filter((n) => /^\d+\.json$/.test(n)).map((n) => Number(n.slice(0, -5))));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw err;
  }
}

export async function readLedgerEntry(outputDir: string, index: number): Promise<LedgerEntry | undefined> {
  try {
    return JSON.parse(await readFile(entryPath(outputDir, index), 'utf8')) as LedgerEntry;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function writeLedgerEntry(outputDir: string, entry: LedgerEntry): Promise<void> {
  await writeFileAtomic(entryPath(outputDir, entry.index), `${JSON.stringify(entry)}\n`);
}

async function allExist(outputDir: string, paths: readonly string[]): Promise<boolean> {
  try {
    await Promise.all(paths.map((p) => stat(join(outputDir, p))));
    return true;
  } catch {
    return false;
  }
}

/** Whether an entry marks its row done: status ok and every output still on disk. */
export async function isComplete(outputDir: string, entry: LedgerEntry | undefined): Promise<boolean> {
  if (entry?.status !== 'ok' || !entry.outputImages?.length) return false;
  return allExist(outputDir, entry.outputImages);
}

/** The entry, if the row is done. */
export async function completedEntry(outputDir: string, index: number): Promise<LedgerEntry | undefined> {
  const entry = await readLedgerEntry(outputDir, index);
  return (await isComplete(outputDir, entry)) ? entry : undefined;
}

/** Multi-turn rows: how many leading turns are done with their outputs on disk (0 if none). */
export async function turnsDone(outputDir: string, index: number, outputs: readonly string[]): Promise<number> {
  const entry = await readLedgerEntry(outputDir, index);
  const done = Math.min(entry?.turnsDone ?? 0, outputs.length);
  return done > 0 && (await allExist(outputDir, outputs.slice(0, done))) ? done : 0;
}

/** Where a row stands: done, failed (with its class), or not done yet (never tried, partial). */
export type RowLedgerState =
  | { status: 'ok'; entry: LedgerEntry }
  | { status: 'failed'; entry: LedgerEntry; errorType: string }
  | { status: 'pending'; entry?: LedgerEntry };

/**
 * Reads rows' ledger states for a scan over many rows: one directory listing up front, then a file
 * read only for rows that have an entry (most rows of a new run have none).
 */
export async function ledgerReader(outputDir: string): Promise<(index: number) => Promise<RowLedgerState>> {
  const attempted = await ledgerIndexes(outputDir);
  return async (index) => {
    const entry = attempted.has(index) ? await readLedgerEntry(outputDir, index) : undefined;
    if (entry && (await isComplete(outputDir, entry))) return { status: 'ok', entry };
    if (entry?.status === 'failed') return { status: 'failed', entry, errorType: entry.errorType ?? 'Error' };
    return entry ? { status: 'pending', entry } : { status: 'pending' };
  };
}

/** Adds one to a count by failure class. */
export function countFailure(byType: Record<string, number>, errorType: string): void {
  byType[errorType] = (byType[errorType] ?? 0) + 1;
}
