import { condition, sleep, workflowInfo } from '@temporalio/workflow';
import type { ResultsRefreshCarried } from '../../lib/shared/types';

// The results tables while a run goes: rewritten every minute, or sooner once a few percent more
// rows have finished, so an interrupted first run still leaves results.csv / .jsonl / .parquet
// holding every row finished so far (the ledger always had them; the tables were written only at
// the end). Each rewrite is one activity, so they are spaced: never more often than every MIN_GAP,
// never when no row finished since the last. The final write waits for a rewrite in progress, so a
// late rewrite can never replace the final tables with older ones.
//
// Incremental (new histories): the refresher keeps the indexes of the rows finished since the last
// rewrite and hands them to it, so a rewrite reads only their ledger entries (the other rows come
// from the records the earlier ones kept, activities/resultsTables.ts); the first rewrite of a run
// reads every entry. Its clock and counts cross continue-as-new in the carried state: a long run's
// executions last under a minute each and finish fewer than 5 % of the rows, and a refresher that
// started afresh in each never fired. Older histories replay the loop they recorded (`legacy`).

const REFRESH_MS = 60_000;
const MIN_GAP_MS = 10_000;
const STEP_FRACTION = 0.05;
/**
 * Incremental loop: after a rewrite that took d, the next waits this many times d (at least
 * MIN_GAP), so the rewrites stay a small share of the run's time (about 1/(1+factor)); but never
 * longer than a minute or, when a minute holds fewer, the time the run takes to finish this share
 * of its rows (STEP_FRACTION with a margin for the rows that finish during the rewrite itself): the
 * tables are never behind by both a minute and 5 % of the rows. A rewrite still costs in proportion
 * to the dataset (it writes whole tables), so on a large run (30,000 rows: 5–15 s a rewrite) a cap
 * of one minute made them 11 % of the run's time.
 */
const GAP_PER_REWRITE_TIME = 25;
const STEP_MARGIN = 0.9;

type Ranges = Array<[number, number]>;

/**
 * How long the refresher waits after a rewrite that took `rewriteMs`, given how many rows finished
 * (`rowsSinceLast`) in the `sinceLastMs` before it and the step (5 % of the rows).
 */
export function refreshGapMs(args: { rewriteMs: number; sinceLastMs: number; rowsSinceLast: number; step: number }): number {
  const rowsPerMs = args.sinceLastMs > 0 ? args.rowsSinceLast / args.sinceLastMs : 0;
  const stepMs = rowsPerMs > 0 ? (STEP_MARGIN * args.step) / rowsPerMs : 0;
  return Math.min(Math.max(REFRESH_MS, stepMs), Math.max(MIN_GAP_MS, GAP_PER_REWRITE_TIME * args.rewriteMs));
}

/** Sorted indexes as [first, last] ranges (rows finish nearly in order: a few ranges carry thousands). */
export function toRanges(indexes: Iterable<number>): Ranges {
  const sorted = [...new Set(indexes)].sort((a, b) => a - b);
  const out: Ranges = [];
  for (const i of sorted) {
    const last = out.at(-1);
    if (last && last[1] === i - 1) last[1] = i;
    else out.push([i, i]);
  }
  return out;
}

function fromRanges(ranges: Ranges): number[] {
  const out: number[] = [];
  for (const [first, last] of ranges) for (let i = first; i <= last; i++) out.push(i);
  return out;
}

export class ResultsRefresher {
  private stopped = false;
  private writing: Promise<void> | undefined;
  private lastFinished: number;
  /** When the last rewrite started (workflow time, ms). */
  private lastAt: number;
  /** Whether a full rewrite has been made in this run, so the next ones may be incremental. */
  private based: boolean;
  /** Rows finished since the last successful rewrite. */
  private readonly changed = new Set<number>();

  /**
   * `write` gets the rows to re-read, or undefined for a full rewrite. `incremental` is false when
   * replaying a history recorded before the incremental refresh: the loop then runs as recorded.
   * `stepWake` is false for histories recorded before the refresher aimed inside its bounds (its
   * first minute from the run's start, a margin on both, and the wait after a rewrite ending at the step).
   */
  constructor(
    private readonly write: (changedRows: Ranges | undefined) => Promise<unknown>,
    private readonly finished: () => number,
    private readonly total: number,
    private readonly incremental: boolean,
    carried?: ResultsRefreshCarried,
    private readonly stepWake = false,
  ) {
    this.lastFinished = carried?.lastFinished ?? finished();
    // New histories count the first minute from the run's start: planning is part of the wait for a first table.
    this.lastAt = carried?.lastAt ?? (stepWake ? workflowInfo().runStartTime.getTime() : Date.now());
    this.based = incremental && (carried?.based ?? false);
    if (incremental) for (const i of fromRanges(carried?.changed ?? [])) this.changed.add(i);
  }

  /** A row finished (or its ledger entry was written for it): the next rewrite reads it. */
  rowFinished(index: number): void {
    if (this.incremental) this.changed.add(index);
  }

  /** Runs until `stop`; its timers and activities are the workflow's own commands. */
  start(): void {
    // A cancelled run cancels its timers: the loop then ends, quietly.
    void (this.incremental ? this.loop() : this.legacyLoop()).catch(() => undefined);
  }

  private get step(): number {
    return Math.max(1, Math.ceil(this.total * STEP_FRACTION));
  }

  /**
   * When a rewrite starts at the latest: a minute after the last began, or once 5 % more rows have
   * finished. New histories (`stepWake`) aim inside both by STEP_MARGIN, so the tables land within
   * them although a rewrite takes time and rows finish while it runs (a run whose minute holds
   * about 5 % of its rows, as bench/scale's 30,000 at 25 rows/s, otherwise went past both by a few
   * seconds and rows).
   */
  private get minuteMs(): number {
    return this.stepWake ? STEP_MARGIN * REFRESH_MS : REFRESH_MS;
  }

  private get stepRows(): number {
    return this.stepWake ? STEP_MARGIN * this.step : this.step;
  }

  /** Whether the wait for the next rewrite is over on rows (or the refresher stopped). */
  private readonly stepped = (): boolean => this.stopped || this.finished() - this.lastFinished >= this.stepRows;

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const due = this.lastAt + this.minuteMs - Date.now();
      if (due > 0) await condition(this.stepped, due);
      if (this.stopped) return;
      const sinceLast = Date.now() - this.lastAt;
      const rowsSinceLast = this.finished() - this.lastFinished;
      this.lastAt = Date.now();
      if (this.finished() === this.lastFinished && this.changed.size === 0) continue;
      this.lastFinished = this.finished();
      const began = Date.now();
      this.writing = this.rewrite();
      await this.writing;
      this.writing = undefined;
      // Only the timer's duration depends on this: a replayed history keeps its timers (Temporal
      // matches a timer by its sequence, not its duration; test/replay replays a recorded one).
      const rewriteMs = Date.now() - began;
      const gap = refreshGapMs({ rewriteMs, sinceLastMs: sinceLast, rowsSinceLast, step: this.step });
      if (this.stopped) return;
      if (this.stepWake) await this.waitAfterRewrite(gap, rewriteMs);
      else await sleep(gap);
    }
  }

  /**
   * The wait after a rewrite (new histories). Past a minute, `gap` is the time the run took to
   * finish 4.5 % of its rows at its recent rate, and a run that speeds up meanwhile finishes them
   * sooner (bench/scale at 30,000 rows: the tables fell behind by both a minute and 5 % of the
   * rows). So once the minute is over (less this rewrite's time: the next one's tables should land
   * within it), the wait also ends when that share has finished. Within the minute it never does:
   * tables behind by 5 % of the rows but not by a minute are in time, and a rewrite more would only
   * add to the refreshes' share of the run.
   */
  private async waitAfterRewrite(gap: number, rewriteMs: number): Promise<void> {
    const minute = Math.min(gap, Math.max(MIN_GAP_MS, this.minuteMs - rewriteMs));
    await sleep(minute);
    const rest = gap - minute;
    if (rest <= 0 || this.stopped) return;
    await condition(this.stepped, rest);
  }

  /** One rewrite of the rows finished so far; they stay owed if it fails. */
  private async rewrite(): Promise<void> {
    const taken = [...this.changed];
    try {
      await this.write(this.based ? toRanges(taken) : undefined);
      this.based = true;
      for (const i of taken) this.changed.delete(i);
    } catch {
      // A failed rewrite is not the run's failure: the next one (or the final one) writes it all.
    }
  }

  /** The loop as histories recorded before the incremental refresh have it. */
  private async legacyLoop(): Promise<void> {
    const step = this.step;
    while (!this.stopped) {
      await condition(() => this.stopped || this.finished() - this.lastFinished >= step, REFRESH_MS);
      if (this.stopped) return;
      const finished = this.finished();
      if (finished === this.lastFinished) continue;
      this.lastFinished = finished;
      this.writing = this.write(undefined).then(
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

  /** What the next execution's refresher starts from (after `stop`). */
  carry(): ResultsRefreshCarried | undefined {
    if (!this.incremental) return undefined;
    return { lastFinished: this.lastFinished, lastAt: this.lastAt, based: this.based, changed: toRanges(this.changed) };
  }
}
