import { ActivityFailure, ApplicationFailure, condition, proxyActivities } from '@temporalio/workflow';
import type { OrchestrationActivities } from '../../activities/orchestration';
import { ErrorTypes } from '../../lib/shared/errorTypes';
import type { RunState } from './runState';

// A run paused for its store (rows deferred on a store fault, or a page of rows or the final
// tables failing on one: an outage, the bucket gone, credentials refused) lifts its pause by itself
// once the store answers again: while such a pause holds, a probe activity writes one small object
// into the run folder, first after a few seconds, then less and less often (at most a minute
// apart). The first probe that succeeds lifts that very pause, and the rows deferred on it run
// again. Any other pause (a user's, the budget's, a quota's) is never lifted here, and a user's
// `atelier resume` lifts a store pause at any time. New histories only (`atelier-store-pause-lifts`):
// older ones waited for `atelier resume` and replay so.

const { probeStore } = proxyActivities<OrchestrationActivities>({
  // One write: a store that does not answer within this is not back.
  startToCloseTimeout: '2 minutes',
  // A failed probe is the answer ("not back yet"); the next one comes after the backoff.
  retry: { maximumAttempts: 1 },
});

/** The first probe comes this long after the pause; each next one twice as long after, up to the cap. */
export const STORE_PROBE_FIRST_MS = 5_000;
export const STORE_PROBE_MAX_MS = 60_000;
/** A run that went this long without a store pause starts the next one's probes at the first delay again. */
const STORE_PROBE_SETTLED_MS = 5 * STORE_PROBE_MAX_MS;

/** How long after the pause (or the last failed probe) probe number `made` (from 0) comes. */
export function storeProbeDelayMs(made: number): number {
  return Math.min(STORE_PROBE_MAX_MS, STORE_PROBE_FIRST_MS * 2 ** Math.min(made, 16));
}

/**
 * The message of a failure the store caused, from an activity of the run's own bookkeeping (its
 * boundary classes those as StorageError: activities/orchestration.ts), or undefined for any other.
 */
export function storeFailureOf(err: unknown): string | undefined {
  const cause = err instanceof ActivityFailure ? err.cause : undefined;
  return cause instanceof ApplicationFailure && cause.type === ErrorTypes.storageError ? cause.message : undefined;
}

/**
 * Store pauses that come back this many times in a row right after a probe lifted them stop lifting
 * by themselves: the probe passes where the run's own writes fail (a key or prefix refused), and
 * lifting again every minute would only grow the history. The run then waits for `atelier resume`.
 */
export const STORE_RELAPSES_MAX = 5;

/** Whether the store answered the probe; a probe that could not run (no worker in time) says no. */
async function probe(outputDir: string, outputCsv: string | undefined): Promise<boolean> {
  try {
    return (await probeStore({ outputDir, ...(outputCsv ? { outputCsv } : {}) })).answered;
  } catch (err) {
    if (err instanceof ActivityFailure) return false;
    throw err;
  }
}

/**
 * Watches the run's pauses for as long as the execution lasts: each store pause is probed until it
 * is lifted or replaced (a resume, a user's pause). `redraw` refreshes what the UI shows after this
 * changes the pause (lifted, or left to the user by the relapse cap). Its timers and activities are
 * the workflow's own commands; a cancelled run ends the loop quietly.
 */
export function liftStorePauses(state: RunState, outputDir: string, redraw: () => void, outputCsv?: string): void {
  const loop = async (): Promise<void> => {
    let made = 0;
    let endedAt = Number.NEGATIVE_INFINITY;
    let liftedAt = Number.NEGATIVE_INFINITY;
    let relapses = 0;
    for (;;) {
      await condition(() => state.paused?.store === true);
      const pause = state.paused!;
      // A store pause soon after the last one ended (the probe's write went through, the run's did
      // not: a key refused, a store half back) keeps the slower pace reached, not 5 s again.
      if (Date.now() - endedAt > STORE_PROBE_SETTLED_MS) made = 0;
      relapses = Date.now() - liftedAt <= STORE_PROBE_SETTLED_MS ? relapses + 1 : 0;
      if (relapses >= STORE_RELAPSES_MAX) {
        // Left to the user: the pause stays (an ordinary one now) until `atelier resume`.
        pause.store = false;
        pause.reason = `${pause.reason} (lifted ${relapses} times when the store answered, and failed again each time: put it right, then \`atelier resume\`)`;
        redraw();
        relapses = 0;
        await condition(() => state.paused !== pause);
        endedAt = Date.now();
        continue;
      }
      while (state.paused === pause) {
        if (await condition(() => state.paused !== pause, storeProbeDelayMs(made++))) break;
        if ((await probe(outputDir, outputCsv)) && state.liftExpired(pause)) {
          liftedAt = Date.now();
          redraw();
        }
      }
      endedAt = Date.now();
    }
  };
  void loop().catch(() => undefined);
}
