import { SingleBar, Presets } from 'cli-progress';
import { formatDuration, RateWindow } from '../lib/shared/eta';
import type { BatchJobView, BatchPhaseView } from '../lib/shared/batch';
import type { ProgressSnapshot } from '../lib/shared/types';

interface ReporterIO {
  err: (line: string) => void;
  isTTY: boolean;
}

const POLL_MS = 1000;

/** The live bar's line; `{remaining}` is our windowed ETA with units (lib/shared/eta.ts). */
export const BAR_FORMAT =
  'rows {bar} {value}/{total} | ok {ok} | failed {failed} | in flight {inFlight}{spent} | eta {remaining} | {state}';
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
  private batch: BatchPhaseView | null = null;
  private noBatch = false;
  private readonly batchSaid = new Map<string, string>();

  constructor(
    private readonly read: () => Promise<ProgressSnapshot>,
    private readonly io: ReporterIO,
    /** A --batch run's jobs (the dataset workflow's `batchJobs` query); null for other runs. */
    private readonly readBatch?: () => Promise<BatchPhaseView | null>,
  ) {}

  /** The batch phase as last seen (multi-turn rows sent direct or refused, each job's state). */
  lastBatchView(): BatchPhaseView | null {
    return this.batch;
  }

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
    // A run without --batch has no such query (it is registered as the run leaves planning): ask once.
    if (this.readBatch && !this.noBatch) {
      try {
        this.batch = (await this.readBatch()) ?? this.batch;
      } catch {
        if (!this.batch) this.noBatch = true;
      }
    }
    const jobs = this.batch?.jobs ?? [];
    const busy = jobs.filter((j) => j.phase !== 'done' && j.phase !== 'failed' && j.phase !== 'cancelled');
    if (!this.io.isTTY) {
      // One line per change of a job's state: batches take hours, so each change is news.
      for (const job of jobs) {
        const line = describeBatchJob(job);
        if (this.batchSaid.get(job.jobId) !== line) {
          this.batchSaid.set(job.jobId, line);
          this.io.err(line);
        }
      }
    }
    const done = snapshot.ok + snapshot.failed;
    this.rate.add(Date.now(), done);
    const eta = snapshot.paused ? 'paused' : formatDuration(this.rate.etaSeconds(snapshot.total - done));
    const spent =
      snapshot.spentUsd !== undefined || snapshot.maxCostUsd !== undefined
        ? ` | $${(snapshot.spentUsd ?? 0).toFixed(2)}${snapshot.maxCostUsd !== undefined ? ` of $${snapshot.maxCostUsd}` : ''}`
        : '';
    const batchState = busy.length
      ? `batch: ${busy.map((j) => `${j.status?.providerStatus ?? j.phase}${j.status?.total !== undefined ? ` ${j.status.completed ?? 0}/${j.status.total}` : ''}`).join(', ')}`
      : undefined;
    const payload = {
      ok: snapshot.ok,
      failed: snapshot.failed,
      inFlight: snapshot.inFlight,
      spent,
      // Not `eta`: cli-progress fills that key itself (seconds without a unit, then "INF"), over ours.
      remaining: eta,
      state: snapshot.paused ? `PAUSED: ${pauseReason(snapshot)}` : (batchState ?? snapshot.phase),
    };
    if (this.io.isTTY) {
      if (!this.bar) {
        this.bar = new SingleBar(
          {
            format: BAR_FORMAT,
            hideCursor: true,
            stream: process.stderr,
          },
          Presets.shades_classic,
        );
        this.bar.start(snapshot.total, done, payload);
      }
      this.bar.setTotal(snapshot.total);
      this.bar.update(done, payload);
    } else if (Date.now() - this.lastPlain >= PLAIN_EVERY_MS) {
      this.lastPlain = Date.now();
      this.io.err(
        `progress: ${done}/${snapshot.total} rows done (ok ${payload.ok}, failed ${payload.failed}, in flight ${payload.inFlight}${spent.replace(' | ', ', spent ')}, eta ${eta})${snapshot.paused ? `; PAUSED: ${pauseReason(snapshot)}` : ''}`,
      );
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    // A query in flight is not waited out: Ctrl-C exits within a moment even when no worker answers.
    await Promise.race([this.polling, new Promise((resolve) => setTimeout(resolve, 300).unref())]);
    this.bar?.stop();
    this.bar = undefined;
  }
}

/**
 * A pause's reason with the run's own id where the workflow's text has a placeholder (the budget
 * pause says `atelier resume <run-id> --max-cost USD`).
 */
export function pauseReason(p: Pick<ProgressSnapshot, 'runId' | 'paused'>): string {
  return (p.paused?.reason ?? '').replaceAll('<run-id>', p.runId);
}

/** One line about a batch job: its provider batch, status and request counts. */
export function describeBatchJob(job: BatchJobView): string {
  const s = job.status;
  // Providers report counts only once the input is validated (total 0 before).
  const counts = s?.total ? ` (${s.completed ?? 0}/${s.total} done, ${s.failed ?? 0} failed)` : '';
  const result = job.result
    ? `: ${job.result.ok} ok, ${Object.values(job.result.failedByType).reduce((a, b) => a + b, 0) + job.result.inputErrors} failed`
    : '';
  return `batch job ${job.jobId.slice(job.jobId.lastIndexOf('#') + 1)} (${job.rows} rows${job.batchId ? `, ${job.batchId}` : ''}): ${job.phase}${s ? `, provider status ${s.providerStatus}${counts}` : ''}${result}`;
}

/** What became of a --batch run's multi-turn rows (a batch cannot chain turns). */
export function describeMultiTurn(view: BatchPhaseView | null): string[] {
  if (!view) return [];
  return [
    ...(view.multiTurnDirect
      ? [
          `note: ${view.multiTurnDirect} multi-turn row${view.multiTurnDirect > 1 ? 's' : ''} went down the direct path at the standard price (a batch cannot chain turns)`,
        ]
      : []),
    ...(view.multiTurnRefused
      ? [
          `note: ${view.multiTurnRefused} multi-turn row${view.multiTurnRefused > 1 ? 's were' : ' was'} refused (a batch cannot chain turns; --batch-fallback fail); run them without --batch`,
        ]
      : []),
  ];
}
