// Rate and ETA for the progress display. The rate is measured over a sliding window of recent
// samples (the last minute), not since the start: a run that sped up after a quota pause, or
// slowed down behind a rate limit, shows an ETA for its current pace, and the ETA does not jump
// with every row. Durations are rounded once, to whole seconds, before they are split into hours,
// minutes and seconds (rounding the parts separately is how `1m60s` happens).

const WINDOW_MS = 60_000;
/** Below this much history the window says nothing yet. */
const MIN_SPAN_MS = 3_000;

export class RateWindow {
  private readonly samples: Array<{ at: number; done: number }> = [];

  constructor(private readonly windowMs = WINDOW_MS) {}

  /** Records how many rows were done at `at` (ms). */
  add(at: number, done: number): void {
    const last = this.samples.at(-1);
    // A count going down is a new execution or a retry pass counting again: start over.
    if (last && done < last.done) this.samples.length = 0;
    this.samples.push({ at, done });
    while (this.samples.length > 2 && at - this.samples[1]!.at >= this.windowMs) this.samples.shift();
  }

  /** Rows per second over the window, or undefined before there is enough of it. */
  rate(): number | undefined {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || last.at - first.at < MIN_SPAN_MS) return undefined;
    return (last.done - first.done) / ((last.at - first.at) / 1000);
  }

  /** Seconds left for `remaining` rows at the window's rate (undefined: unknown). */
  etaSeconds(remaining: number): number | undefined {
    if (remaining <= 0) return 0;
    const rate = this.rate();
    return rate && rate > 0 ? remaining / rate : undefined;
  }
}

/** 75 → `1m15s`, 119.6 → `2m00s`, 3725 → `1h02m`; unknown for no number. */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return 'unknown';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}
