import { describe, expect, it } from 'vitest';
import { formatDuration, RateWindow } from '../../lib/shared/eta';

describe('ETA', () => {
  it('rounds once: 119.6 s is 2m00s, never 1m60s', () => {
    expect(formatDuration(119.6)).toBe('2m00s');
    expect(formatDuration(59.5)).toBe('1m00s');
    expect(formatDuration(75)).toBe('1m15s');
    expect(formatDuration(3599.7)).toBe('1h00m');
    expect(formatDuration(3725)).toBe('1h02m');
    expect(formatDuration(4)).toBe('4s');
    expect(formatDuration(undefined)).toBe('unknown');
  });

  it('measures the rate over the last minute, so a change of pace shows within it', () => {
    const w = new RateWindow();
    // 1 row/s for two minutes, then 4 rows/s.
    let done = 0;
    for (let t = 0; t <= 120; t++) w.add(t * 1000, (done = t));
    expect(w.rate()).toBeCloseTo(1, 5);
    for (let t = 121; t <= 190; t++) w.add(t * 1000, (done += 4));
    expect(w.rate()).toBeCloseTo(4, 1);
    expect(w.etaSeconds(400)).toBeCloseTo(100, -1);
  });

  it('says nothing before a few seconds of history, and starts over when the count goes down', () => {
    const w = new RateWindow();
    w.add(0, 0);
    w.add(1000, 5);
    expect(w.rate()).toBeUndefined();
    expect(w.etaSeconds(10)).toBeUndefined();
    w.add(5000, 10);
    expect(w.rate()).toBeCloseTo(2, 5);
    w.add(6000, 3);
    expect(w.rate()).toBeUndefined();
    expect(w.etaSeconds(0)).toBe(0);
  });
});
