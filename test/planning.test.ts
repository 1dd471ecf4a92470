import { describe, expect, it } from 'vitest';
import { measurePlanning } from '../bench/planning';

// Loose bounds only: the figures themselves come from `node dist/bench/planning.js` (README). Time is
// bounded against a bare parse of the same file measured in the same run (planning is ~3.6× it on a
// quiet machine), or 30 s, whichever is larger: under the full suite's load on 2 cores the 100k-row
// plan took 36–44 s while planning and the parse slowed alike.
const planBound = (f: { baselineSeconds: number }) => Math.max(30, 12 * f.baselineSeconds);
describe('planning a large dataset', () => {
  it('plans 100k CSV rows in well under a minute with bounded memory', async () => {
    const f = await measurePlanning('csv', 100_000);
    expect(f.planSeconds).toBeLessThan(planBound(f));
    expect(f.peakRssGrowthMb).toBeLessThan(400);
  });
  it('plans 100k JSONL rows likewise', async () => {
    const f = await measurePlanning('jsonl', 100_000);
    expect(f.planSeconds).toBeLessThan(planBound(f));
    expect(f.peakRssGrowthMb).toBeLessThan(400);
  });
});
