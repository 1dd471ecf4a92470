import { describe, expect, it } from 'vitest';
import { formatLogLine } from '../../lib/logging';

// `atelier worker`'s log lines as a person reads them (the default; `--log-format json` keeps pino's JSON).

const at = BigInt(Date.parse('2026-12-07T08:09:10.123Z')) * 1_000_000n;

describe('worker log lines', () => {
  it('time, level, message, then the run/activity keys first and the rest sorted', () => {
    const line = formatLogLine({
      level: 'WARN',
      message: 'Activity failed\n  will retry',
      timestampNanos: at,
      meta: { zeta: 1, attempt: 2, workflowId: 'run-1/row/3', activityType: 'editImage', note: 'two words', nested: { a: 1 } },
    });
    expect(line).toBe(
      '08:09:10.123 WARN  Activity failed will retry  workflowId=run-1/row/3  activityType=editImage  attempt=2  nested={"a":1}  note="two words"  zeta=1',
    );
  });

  it('leaves out long structured values and empty ones', () => {
    const line = formatLogLine({
      level: 'INFO',
      message: 'Worker state changed',
      timestampNanos: at,
      meta: { state: 'RUNNING', big: { x: 'y'.repeat(300) }, none: undefined },
    });
    expect(line).toBe('08:09:10.123 INFO  Worker state changed  state=RUNNING');
  });
});
