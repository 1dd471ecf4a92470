// The records a run keeps about its rows (lib/run/runStore.ts reads and writes them). Their own
// module, so the ledger, redo and the run store share them without importing each other.

/** What an output held when its row was committed: a re-run and an export check the bytes, not the name. */
export interface OutputDigest {
  sha256: string;
  size: number;
}

/**
 * What an S3 input image was when its row was planned: its ETag and size from a listing (issue 23). A
 * re-run that finds another ETag or size for the same name redoes the row.
 */
export interface InputIdentity {
  etag: string;
  size: number;
}

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

export interface LedgerEntry {
  index: number;
  position: number;
  /** `partial`: a row with some outputs (or turns) done, kept for the retry. */
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
  /** Rows with several independent outputs (GPU --num-images): the output numbers already in place. */
  outputsDone?: number[];
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
  /**
   * The outputs the commit wrote, by path: a re-run takes the row as done only while each is still
   * this size, and an export embeds only these bytes. Absent for outputs written before the commit
   * (earlier turns, kept GPU outputs) and in older ledgers.
   */
  outputDigests?: Record<string, OutputDigest>;
  /**
   * Each S3 input image's ETag and size, by its s3:// location, as planned for the outputs this entry
   * holds (they are part of `digest`). Absent for rows without S3 inputs and in older ledgers.
   */
  inputs?: Record<string, InputIdentity>;
  /**
   * The entry came from an earlier release (its digest made without the inputs' ETags): a re-run took
   * `inputs` as they were then instead of redoing the row (an input replaced before that re-run went unseen).
   */
  inputsAdopted?: boolean;
  /** Earlier outputs of a row made again (`atelier retry --redo`), oldest first (lib/run/redo.ts). */
  history?: RowGeneration[];
  finishedAt: string;
}
