import type { Context } from '@temporalio/activity';
import { temporal } from '@temporalio/proto';
import { describe, expect, it } from 'vitest';
import { AttemptFence } from '../../activities/attemptFence';

// The fence's server check asked of a server that is briefly busy: the SDK's activity context and
// the gRPC answers are stand-ins here (the fence's own code is real); a gRPC error is what the
// client throws, an Error with a code, a string `details` and a `metadata` record.

function grpcError(code: number, message: string): Error {
  return Object.assign(new Error(`${code} ${message}`), { code, details: message, metadata: {} });
}

function contextAnswering(answers: Array<Error | 'running'>): { context: Context; asked: () => number } {
  let asked = 0;
  const running = {
    workflowExecutionInfo: { status: temporal.api.enums.v1.WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING },
    pendingActivities: [{ activityId: '1', attempt: 1, state: temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED }],
  };
  const context = {
    info: { heartbeatTimeoutMs: 60_000, attempt: 1, activityId: '1', workflowExecution: { workflowId: 'run/row/0', runId: 'r' } },
    log: { warn: () => undefined },
    sleep: (ms: number) => new Promise((resolve) => setTimeout(resolve, ms)),
    client: {
      options: { namespace: 'default' },
      workflowService: {
        describeWorkflowExecution: async () => {
          const answer = answers[Math.min(asked++, answers.length - 1)]!;
          if (answer instanceof Error) throw answer;
          return running;
        },
      },
    },
  } as unknown as Context;
  return { context, asked: () => asked };
}

describe('the attempt fence asking a busy server', () => {
  it('asks again while the server is busy or away, and lets the attempt call once it answers', async () => {
    const { context, asked } = contextAnswering([grpcError(4, 'DEADLINE_EXCEEDED'), grpcError(14, 'UNAVAILABLE'), 'running']);
    await new AttemptFence(context, 0).ensureCurrent('the call');
    expect(asked()).toBe(3);
  });

  it('gives up after four tries (retryable, no call made), and at once on any other error', async () => {
    const busy = contextAnswering([grpcError(14, 'UNAVAILABLE')]);
    await expect(new AttemptFence(busy.context, 0).ensureCurrent('the call')).rejects.toThrow(
      /could not confirm attempt 1 of row 0 is current/,
    );
    expect(busy.asked()).toBe(4);
    const refused = contextAnswering([grpcError(7, 'PERMISSION_DENIED')]);
    await expect(new AttemptFence(refused.context, 0).ensureCurrent('the call')).rejects.toThrow(/could not confirm/);
    expect(refused.asked()).toBe(1);
  });
});
