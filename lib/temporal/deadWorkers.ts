import { hostname } from 'node:os';
import type { Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { ErrorTypes } from '../shared/errorTypes';

// Activities a dead worker process left started. A worker killed with SIGKILL (or a machine that
// rebooted) answers for none of its started activities, and the server learns that only when their
// heartbeat timeout passes: 60 s for a row by default, 2 minutes for a results refresh, and for an
// activity with no heartbeat timeout its whole start-to-close timeout. A re-run of `atelier edit`
// after `kill -9` waited that long before the rows went on. A command that serves a server on this
// machine (its embedded one, or `atelier server`'s) can tell for certain that a worker is dead: the
// worker's identity names its host and pid, and a pid of this host that no longer runs is gone.
// Those activities are failed at once as retryable, which is what their timeout would do, only
// sooner; the retry policy then runs them again. Their last heartbeat details stay with the server
// (a failure reported without details leaves them), so a retry still finds what the dead attempt
// recorded, e.g. a provider request it had already paid for.
//
// A worker on this host but in another pid namespace (a container sharing the host's name) would
// look dead: the sweep is only for the project's own local servers, never for TEMPORAL_ADDRESS.

const PENDING = temporal.api.enums.v1.PendingActivityState;

/** The host and pid a worker identity names: the SDKs' `pid@host`, or the GPU worker's `host:pid:gpuN`. */
export function workerProcessOf(identity: string | null | undefined): { host: string; pid: number } | undefined {
  if (!identity) return undefined;
  const sdk = /^(\d+)@(.+)$/.exec(identity);
  if (sdk) return { pid: Number(sdk[1]), host: sdk[2]! };
  const gpu = /^([^:]+):(\d+):/.exec(identity);
  if (gpu) return { host: gpu[1]!, pid: Number(gpu[2]) };
  return undefined;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: a process of another user has that id, alive.
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

export interface EndedActivity {
  workflowId: string;
  activityType: string;
  worker: string;
}

type PendingActivity = temporal.api.workflow.v1.IPendingActivityInfo;

/** Describes at most this many workflows at a time: a window of rows may hold hundreds of children. */
const DESCRIBE_CONCURRENCY = 8;

/**
 * Fails (or, when a cancel was asked, reports cancelled) every started activity of the namespace's
 * open workflows whose worker is a process of this host that no longer runs. Returns what it ended.
 * Best effort: an activity that ended meanwhile is skipped, and any failure of the sweep itself
 * leaves the rest to their heartbeat timeouts, as before it existed.
 */
export async function endDeadWorkersActivities(
  client: Client,
  options: { host?: string; alive?: (pid: number) => boolean } = {},
): Promise<EndedActivity[]> {
  const host = options.host ?? hostname();
  const alive = options.alive ?? pidAlive;
  const namespace = client.options.namespace;
  const describe = async (workflowId: string, runId: string): Promise<PendingActivity[]> =>
    (await client.workflowService.describeWorkflowExecution({ namespace, execution: { workflowId, runId } })).pendingActivities ?? [];
  /** A started attempt of a dead worker of this host, or undefined. */
  const deadAttempt = (activity: PendingActivity) => {
    const started = activity.state === PENDING.PENDING_ACTIVITY_STATE_STARTED;
    const cancelAsked = activity.state === PENDING.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED;
    if (!(started || cancelAsked) || !activity.activityId) return undefined;
    const worker = workerProcessOf(activity.lastWorkerIdentity);
    if (!worker || worker.host !== host || alive(worker.pid)) return undefined;
    return { cancelAsked, key: `${activity.activityId}/${activity.attempt}/${activity.lastWorkerIdentity}` };
  };

  const ended: EndedActivity[] = [];
  const sweep = async (workflowId: string, runId: string): Promise<void> => {
    const suspects = (await describe(workflowId, runId)).filter((a) => deadAttempt(a) !== undefined);
    for (const suspect of suspects) {
      // Failing by id is not checked against the attempt by the server: if this attempt timed out
      // and a live worker started the next one since the first look, the next one would be failed.
      // So the activity is looked at again right before, and failed only while it is still the same
      // dead worker's same attempt (the window left is this one round trip).
      const now = (await describe(workflowId, runId)).find((a) => a.activityId === suspect.activityId);
      const dead = now && deadAttempt(now);
      if (!now || !dead || dead.key !== deadAttempt(suspect)!.key) continue;
      const id = { workflowId, runId, activityId: now.activityId! };
      try {
        if (dead.cancelAsked) await client.activity.reportCancellation(id);
        else
          await client.activity.fail(
            id,
            ApplicationFailure.retryable(
              `the worker running it (${now.lastWorkerIdentity}) ended without finishing it`,
              ErrorTypes.retryable,
            ),
          );
        ended.push({ workflowId, activityType: now.activityType?.name ?? '?', worker: now.lastWorkerIdentity! });
      } catch {
        // Finished or timed out in the meantime: nothing of the dead worker's is left to end.
      }
    }
  };

  const running: Promise<void>[] = [];
  const inFlight = new Set<Promise<void>>();
  for await (const execution of client.workflow.list({ query: 'ExecutionStatus="Running"' })) {
    const one: Promise<void> = sweep(execution.workflowId, execution.runId)
      .catch(() => undefined)
      .finally(() => inFlight.delete(one));
    inFlight.add(one);
    running.push(one);
    if (inFlight.size >= DESCRIBE_CONCURRENCY) await Promise.race(inFlight);
  }
  await Promise.all(running);
  return ended;
}
