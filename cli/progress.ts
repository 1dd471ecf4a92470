import { SingleBar, Presets } from 'cli-progress';
import { formatDuration, RateWindow } from '../lib/shared/eta';
import type { ProgressSnapshot } from '../lib/shared/types';

interface ReporterIO {
  err: (line: string) => void;
  isTTY: boolean;
}

const POLL_MS = 1000;
const PLAIN_EVERY_MS = 15_000;

/**
 * Shows a run's progress while the CLI waits: a live bar on a terminal, a line every few seconds
 * otherwise (logs, CI). It reads the dataset workflow's `progress` query, so it shows the same
 * counts whether the rows are served here or by workers elsewhere.
 */
export class ProgressReporter {
  private timer: NodeJS.Timeout | undefined;
  private bar: SingleBar | undefined;
  private lastPlain = 0;
  private polling: Promise<void> = Promise.resolve();
  /** cli-progress's own ETA averages from the start and rounds into `1m60s`: ours is windowed. */
  private readonly rate = new RateWindow();

  constructor(
    private readonly read: () => Promise<ProgressSnapshot>,
    private readonly io: ReporterIO,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.polling = this.polling.then(() => this.poll());
    }, POLL_MS);
  }

  private async poll(): Promise<void> {
    let snapshot: ProgressSnapshot;
    try {
      snapshot = await this.read();
    } catch {
      return; // the workflow has not run its first task yet, or is between tasks
    }
    if (snapshot.phase === 'planning') return;
    const done = snapshot.ok + snapshot.failed;
    this.rate.add(Date.now(), done);
    const eta = snapshot.paused ? 'paused' : formatDuration(this.rate.etaSeconds(snapshot.total - done));
    const spent = snapshot.spentUsd !== undefined || snapshot.maxCostUsd !== undefined ? ` | $${(snapshot.spentUsd ?? 0).toFixed(2)}${snapshot.maxCostUsd !== undefined ? ` of $${snapshot.maxCostUsd}` : ''}` : '';
    const payload = { ok: snapshot.ok, failed: snapshot.failed, inFlight: snapshot.inFlight, spent, eta, state: snapshot.paused ? `PAUSED: ${snapshot.paused.reason}` : snapshot.phase };
    if (this.io.isTTY) {
      if (!this.bar) {
        this.bar = new SingleBar(
          { format: 'rows {bar} {value}/{total} | ok {ok} | failed {failed} | in flight {inFlight}{spent} | eta {eta} | {state}', hideCursor: true, stream: process.stderr },
          Presets.shades_classic,
        );
        this.bar.start(snapshot.total, done, payload);
      }
      this.bar.setTotal(snapshot.total);
      this.bar.update(done, payload);
    } else if (Date.now() - this.lastPlain >= PLAIN_EVERY_MS) {
      this.lastPlain = Date.now();
      this.io.err(`progress: ${done}/${snapshot.total} rows done (ok ${payload.ok}, failed ${payload.failed}, in flight ${payload.inFlight}${spent.replace(' | ', ', spent ')}, eta ${eta})${snapshot.paused ? `; PAUSED: ${snapshot.paused.reason}` : ''}`);
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.polling;
    this.bar?.stop();
    this.bar = undefined;
  }
}
