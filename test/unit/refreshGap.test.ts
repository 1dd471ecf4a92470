import { describe, expect, it } from 'vitest';
import { refreshGapMs } from '../../workflows/dataset/resultsRefresh';

// The results refresher's pace: rewrites a small share of the run's time (25× a rewrite's time
// between them), yet the tables never behind by both a minute and 5 % of the rows.
describe('the results refresher waits', () => {
  it('25 times a rewrite between rewrites, at least 10 s', () => {
    expect(refreshGapMs({ rewriteMs: 1000, sinceLastMs: 60_000, rowsSinceLast: 300, step: 150 })).toBe(25_000);
    expect(refreshGapMs({ rewriteMs: 100, sinceLastMs: 60_000, rowsSinceLast: 300, step: 150 })).toBe(10_000);
  });

  it('at most a minute while a minute holds more than 5 % of the rows (3,000 rows at 5 rows/s)', () => {
    expect(refreshGapMs({ rewriteMs: 4000, sinceLastMs: 60_000, rowsSinceLast: 300, step: 150 })).toBe(60_000);
  });

  it('up to the time 4.5 % of the rows take when a minute holds fewer (30,000 rows at 6.4 rows/s, 10 s rewrites: was a minute, 11 % of the run)', () => {
    const gap = refreshGapMs({ rewriteMs: 10_000, sinceLastMs: 70_000, rowsSinceLast: 448, step: 1500 });
    expect(gap).toBeCloseTo((0.9 * 1500) / (448 / 70_000), 0);
    // The rewrites' share of the run: under 5 %.
    expect(10_000 / (10_000 + gap)).toBeLessThan(0.05);
    // And 25× the rewrite still bounds it when that is shorter.
    expect(refreshGapMs({ rewriteMs: 5000, sinceLastMs: 70_000, rowsSinceLast: 448, step: 1500 })).toBe(125_000);
  });

  it('a minute when no row finished since the last rewrite', () => {
    expect(refreshGapMs({ rewriteMs: 20_000, sinceLastMs: 60_000, rowsSinceLast: 0, step: 150 })).toBe(60_000);
  });
});
