import { Format } from 'cli-progress';
import { describe, expect, it } from 'vitest';
import { describeProgress } from '../../cli/manage';
import { BAR_FORMAT } from '../../cli/progress';
import type { ProgressSnapshot } from '../../lib/shared/types';

// What `atelier status` and the progress bar say must not mislead (issue 24): the rate of now, not
// of the workflow's whole life; no placeholder for the run id; no plain-resume advice that keeps a
// budget pause; an ETA with units.

const NOW = Date.parse('2026-12-07T12:00:00Z');

function snapshot(over: Partial<ProgressSnapshot> = {}): ProgressSnapshot {
  return {
    runId: 'atelier-rows-0123456789ab',
    phase: 'running',
    total: 100,
    ok: 72,
    failed: 0,
    failedByType: {},
    inFlight: 4,
    deferred: 0,
    pending: 24,
    paused: null,
    finished: 72,
    // An hour ago: the run sat paused most of that time.
    startedAt: new Date(NOW - 3600_000).toISOString(),
    continuedAsNew: 0,
    retryPassesQueued: 0,
    ...over,
  };
}

describe('atelier status text', () => {
  it("rates from the recent window, not from the workflow's start", () => {
    const lines = describeProgress(snapshot(), NOW, { finished: 6, seconds: 3 });
    const rate = lines.find((l) => l.startsWith('rate:'))!;
    expect(rate).toMatch(/^rate: 2\.00 rows\/s over the last 3 s {2}eta: 14s$/);
  });

  it('a budget pause names the run and advises raising the budget, with no ETA', () => {
    const lines = describeProgress(
      snapshot({
        phase: 'paused',
        paused: {
          reason: 'budget reached: $0.7300 of $0.3 spent (raise it with `atelier resume <run-id> --max-cost USD`)',
          budget: true,
        },
      }),
      NOW,
    );
    const text = lines.join('\n');
    expect(text).not.toContain('<run-id>');
    expect(text).toContain('atelier resume atelier-rows-0123456789ab --max-cost USD');
    expect(text).not.toMatch(/`atelier resume atelier-rows-0123456789ab` to go on/);
    expect(text).toMatch(/rate: paused {2}eta: none while paused/);
  });

  it("the progress bar's eta is ours, with units, never cli-progress's bare seconds or INF", () => {
    const render = (eta: number) =>
      Format.Formatter(
        { format: BAR_FORMAT, barsize: 10, barCompleteString: '#', barIncompleteString: '-', barGlue: '', autopaddingChar: ' ' } as never,
        { value: 3, total: 10, eta, startTime: NOW, stopTime: null, progress: 0.3, maxWidth: 200 } as never,
        { ok: 3, failed: 0, inFlight: 2, spent: '', remaining: '1m15s', state: 'running' },
      );
    expect(render(20)).toContain('eta 1m15s');
    expect(render(Infinity)).not.toContain('INF');
  });
});
