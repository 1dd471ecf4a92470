import { condition, sleep } from '@temporalio/workflow';

// The results tables while a run goes: rewritten every minute, or sooner once a few percent more
// rows have finished, so an interrupted first run still leaves results.csv / .jsonl / .parquet
// holding every row finished so far (the ledger always had them; the tables were written only at
// the end). Each rewrite is one activity over the plan and ledger, so they are spaced: never more
// often than every MIN_GAP, never when no row finished since the last. The final write waits for a
// rewrite in progress, so a late rewrite can never replace the final tables with older ones.

const REFRESH_MS = 60_000;
const MIN_GAP_MS = 10_000;
const STEP_FRACTION = 0.05;

export class ResultsRefresher {
  private stopped = false;
  private writing: Promise<void> | undefined;
  private lastFinished: number;

  constructor(
    private readonly write: () => Promise<unknown>,
    private readonly finished: () => number,
    private readonly total: number,
  ) {
    this.lastFinished = finished();
  }

  /** Runs until `stop`; its timers and activities are the workflow's own commands. */
  start(): void {
    // A cancelled run cancels its timers: the loop then ends, quietly.
    void this.loop().catch(() => undefined);
  }

  private async loop(): Promise<void> {
    const step = Math.max(1, Math.ceil(this.total * STEP_FRACTION));
    while (!this.stopped) {
      await condition(() => this.stopped || this.finished() - this.lastFinished >= step, REFRESH_MS);
      if (this.stopped) return;
      const finished = this.finished();
      if (finished === this.lastFinished) continue;
      this.lastFinished = finished;
      // A failed rewrite is not the run's failure: the next one (or the final one) writes it all.
      this.writing = this.write().then(
        () => undefined,
        () => undefined,
      );
      await this.writing;
      this.writing = undefined;
      if (!this.stopped) await sleep(MIN_GAP_MS);
    }
  }

  /** Stops the loop and waits for a rewrite in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.writing;
  }
}
