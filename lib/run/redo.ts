import { openStorage } from '../../storage';
import { runMetaKey } from '../shared/constants';
import { REDO_ERROR_TYPE } from '../shared/errorTypes';
import { writeLedgerEntry, type LedgerEntry } from './ledger';

// Redo: a row that is done but whose output a person rejected (or the judge scored low) is made
// again. Its current output is first copied into the run's history folder and recorded in the
// row's ledger entry, then the entry is set to failed with the class `Redo`, so the ordinary retry
// path (`retryRows` on an open run, a retry execution on a closed one) runs it again; the next
// commit carries the history on. Each generation gets its own seed where the backend takes one.

export { REDO_ERROR_TYPE };

/** One earlier output of a row, kept when the row was redone. */
export interface RowGeneration {
  generation: number;
  /** Copies of the outputs, relative to the output dir (under .atelier/history/). */
  outputImages: string[];
  /** Where those outputs were (their names now hold the newer generation). */
  originalImages: string[];
  finishedAt: string;
  costUsd?: number;
  requestIds?: string[];
  attempts?: number;
  /** Why it was redone (`rejected in the viewer`, `--rows`, ...). */
  reason: string;
}

function historyKey(index: number, generation: number, path: string): string {
  return runMetaKey(`history/${String(index).padStart(6, '0')}/gen${generation}/${path}`);
}

/** The history an entry carries, for the next entry of the same row. */
export function carriedHistory(prior: LedgerEntry | undefined): Pick<LedgerEntry, 'history'> {
  return prior?.history?.length ? { history: prior.history } : {};
}

/**
 * The base seed of a row's current generation: the run's own seed for the first output, then a
 * different one per redo (a redo with the same seed would make the same image on a seeded backend).
 */
export function generationSeed(baseSeed: number, prior: LedgerEntry | undefined): number {
  const redos = prior?.history?.length ?? 0;
  return Number((BigInt(baseSeed) + BigInt(redos) * 2246822519n) % 4294967296n);
}

/**
 * Sets a done row aside to be made again: its outputs copied into the history (a re-run after a
 * crash copies into the same slot), then its entry rewritten as failed `Redo` with the history.
 * What the old output cost moves into the history: the row's entry will count only the new one.
 */
export async function setAsideForRedo(outputDir: string, entry: LedgerEntry, reason: string): Promise<RowGeneration> {
  if (entry.status !== 'ok' || !entry.outputImages?.length) throw new Error(`row ${entry.index} is not done: nothing to redo`);
  const storage = openStorage(outputDir);
  const generation = (entry.history?.length ?? 0) + 1;
  const copies: string[] = [];
  for (const path of entry.outputImages) {
    const bytes = await storage.read(path);
    if (!bytes) throw new Error(`row ${entry.index}: output ${storage.describe(path)} is missing`);
    const key = historyKey(entry.index, generation, path);
    await storage.write(key, bytes);
    copies.push(key);
  }
  const kept: RowGeneration = {
    generation,
    outputImages: copies,
    originalImages: entry.outputImages,
    finishedAt: entry.finishedAt,
    ...(entry.costUsd !== undefined ? { costUsd: entry.costUsd } : {}),
    ...(entry.requestIds ? { requestIds: entry.requestIds } : {}),
    ...(entry.attempts !== undefined ? { attempts: entry.attempts } : {}),
    reason,
  };
  await writeLedgerEntry(outputDir, {
    index: entry.index,
    position: entry.position,
    status: 'failed',
    runId: entry.runId,
    model: entry.model,
    ...(entry.digest ? { digest: entry.digest } : {}),
    errorType: REDO_ERROR_TYPE,
    error: `set aside to be made again (${reason}); its output is kept in ${storage.describe(runMetaKey(`history/${String(entry.index).padStart(6, '0')}/gen${generation}`))}`,
    history: [...(entry.history ?? []), kept],
    finishedAt: new Date().toISOString(),
  });
  return kept;
}
