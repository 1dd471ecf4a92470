import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './atomicFile';
import { runMetaDir } from './plan';
import type { RowStatus } from './types';

// The row ledger is the run's memory of finished rows, kept next to the outputs: one small JSON file
// per row index, written atomically after the row's image is in place. Temporal's history expires
// (the dev server keeps closed runs for a day); the ledger does not, so "already done" is decided
// here. A row counts as done only when its entry says ok and its output file exists.

export interface LedgerEntry {
  index: number;
  position: number;
  status: RowStatus;
  runId: string;
  model: string;
  /** Relative to the output dir. */
  outputImage?: string;
  errorType?: string;
  error?: string;
  attempts?: number;
  requestId?: string;
  latencyMs?: number;
  finishedAt: string;
}

function entryPath(outputDir: string, index: number): string {
  return join(runMetaDir(outputDir), 'ledger', `${String(index).padStart(6, '0')}.json`);
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

/** The entry, if the row is done: status ok and its output still on disk. */
export async function completedEntry(outputDir: string, index: number): Promise<LedgerEntry | undefined> {
  const entry = await readLedgerEntry(outputDir, index);
  if (entry?.status !== 'ok' || !entry.outputImage) return undefined;
  try {
    await stat(join(outputDir, entry.outputImage));
    return entry;
  } catch {
    return undefined;
  }
}
