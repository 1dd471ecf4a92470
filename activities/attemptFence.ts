import type { Context } from '@temporalio/activity';
import { isGrpcServiceError } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { ClassifiedError } from '../lib/shared/errors';

// Stale attempts never pay. An attempt that Temporal has given up on (its heartbeat or start-to-close
// timeout passed while its worker was frozen: a suspended VM, a long GC pause, SIGSTOP) may still
// wake and go on; its tasks may even sit unstarted in the frozen worker's open polls. Before every
// paid call the attempt proves it is still the one Temporal waits for, two ways, each cheap next
// to the call:
//   1. its own clock: no gap between its heartbeats (or since it started) longer than the heartbeat
//      timeout, which is when the server times an attempt out;
//   2. the server: the row workflow's pending activity is this activity, at this attempt, started.
// The server is the authority on which attempt is current, so no claim is kept in the run folder
// (one would cost every row a write and a read in object storage, issue 21's budget).
// A stale attempt throws before calling (retryable: the server ignores a timed-out attempt's result).
// What stays possible: a worker frozen in the instant between the last check and the request.

/** PendingActivityState.STARTED (temporal.api.enums.v1): the attempt a worker is running. */
const PENDING_ACTIVITY_STARTED = 2;
/** gRPC's NOT_FOUND: no such workflow execution (what the client reads as WorkflowNotFoundError). */
const GRPC_NOT_FOUND = 5;
/** gRPC's DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and UNAVAILABLE: the server busy or briefly away. */
const TRANSIENT_GRPC_CODES = new Set([4, 8, 14]);
const { WorkflowExecutionStatus } = temporal.api.enums.v1;

/** `completed`, `timed_out`, ... for a workflow status code: the client's describe() name, lower case. */
function statusName(code: number | null | undefined): string {
  const name = code == null ? undefined : WorkflowExecutionStatus[code];
  return (name?.replace('WORKFLOW_EXECUTION_STATUS_', '') ?? 'unknown').toLowerCase().replace('canceled', 'cancelled');
}

export class AttemptFence {
  private readonly heartbeatTimeoutMs: number | undefined;
  private lastBeatAt = Date.now();
  /** The longest gap seen between beats: a gap past the heartbeat timeout lost the attempt for good. */
  private longestGapMs = 0;

  /** `index`: the row's index, or a label for other work (a batch job: `batch job <id>`). */
  constructor(
    private readonly context: Context,
    private readonly index: number | string,
  ) {
    this.heartbeatTimeoutMs = context.info.heartbeatTimeoutMs || undefined;
  }

  private label(): string {
    return typeof this.index === 'number' ? `row ${this.index}` : this.index;
  }

  /** Called on every heartbeat the attempt sends. */
  beat(): void {
    const now = Date.now();
    this.longestGapMs = Math.max(this.longestGapMs, now - this.lastBeatAt);
    this.lastBeatAt = now;
  }

  /** Throws (retryable, no call made) unless this attempt is still the row's current one. */
  async ensureCurrent(what: string): Promise<void> {
    const stale = (why: string) => {
      const message = `stale attempt ${this.context.info.attempt} of ${this.label()}: ${why}; ${what} not made`;
      // In the worker's log too: the server drops a timed-out attempt's failure unread.
      this.context.log.warn(message);
      return new ClassifiedError('retryable', message);
    };
    const gap = Math.max(this.longestGapMs, Date.now() - this.lastBeatAt);
    if (this.heartbeatTimeoutMs !== undefined && gap > this.heartbeatTimeoutMs) {
      throw stale(`it went ${(gap / 1000).toFixed(1)} s without a heartbeat (timeout ${this.heartbeatTimeoutMs / 1000} s)`);
    }
    await this.checkServer(stale);
  }

  /**
   * The server's view: the workflow still waits for this attempt of this activity. One
   * DescribeWorkflowExecution, read raw: the client's `describe()` makes the same request and then
   * decodes the memo, search attributes and times, which this check never reads (~0.3 ms of worker
   * CPU per row, bench/rowActivity and issue 21); only the status and the pending activities count.
   */
  private async checkServer(stale: (why: string) => Error): Promise<void> {
    let client;
    try {
      client = this.context.client;
    } catch {
      return; // an activity run outside a worker (the SDK's test environment): no server to ask
    }
    const { info } = this.context;
    if (!info.workflowExecution) return; // a standalone activity: no workflow waits for it
    const { workflowId, runId } = info.workflowExecution;
    let pending;
    try {
      const described = await this.describeWithPatience(() =>
        client.workflowService.describeWorkflowExecution({
          namespace: client.options.namespace,
          execution: { workflowId, runId },
        }),
      );
      const status = described.workflowExecutionInfo?.status;
      if (status !== WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING) throw stale(`its workflow is ${statusName(status)}`);
      pending = described.pendingActivities?.find((a) => a.activityId === info.activityId);
    } catch (err) {
      if (err instanceof ClassifiedError) throw err;
      if (isGrpcServiceError(err) && err.code === GRPC_NOT_FOUND) throw stale('its workflow is gone');
      throw new ClassifiedError(
        'retryable',
        `could not confirm attempt ${info.attempt} of ${this.label()} is current (${(err as Error)?.message ?? String(err)}); no call made`,
      );
    }
    if (!pending) throw stale('its activity is no longer pending');
    if (pending.attempt !== info.attempt) throw stale(`the server is at attempt ${pending.attempt}`);
    if (pending.state !== PENDING_ACTIVITY_STARTED) throw stale('the server no longer counts it as started');
  }

  /**
   * The describe, asked again (after 0.5, 1 and 2 s) while the server answers that it is busy or
   * unreachable: a server slowed for a few seconds (a loaded machine, a compaction) would otherwise
   * cost the row one of its few attempts, or with a short retry policy the row itself. No call is
   * made until the server has answered, so waiting here never pays twice.
   */
  private async describeWithPatience<T>(describe: () => Promise<T>): Promise<T> {
    for (let wait = 500; ; wait *= 2) {
      try {
        return await describe();
      } catch (err) {
        if (!(isGrpcServiceError(err) && TRANSIENT_GRPC_CODES.has(err.code)) || wait > 2000) throw err;
        await this.context.sleep(wait);
      }
    }
  }
}
