import { describe, expect, it } from 'vitest';
import { measurePlanning } from '../bench/planning';

// Loose bounds only: the figures themselves come from `node dist/bench/planning.js` (README).
describe('planning a large dataset', () => {
  it('plans 100k CSV rows in well under a minute with bounded memory', async () => {
    const f = await measurePlanning('csv', 100_000);
    expect(f.planSeconds).toBeLessThan(30);
    expect(f.peakRssGrowthMb).toBeLessThan(400);
  });
  it('plans 100k JSONL rows likewise', async () => {
    const f = await measurePlanning('jsonl', 100_000);
    expect(f.planSeconds).toBeLessThan(30);
    expect(f.peakRssGrowthMb).toBeLessThan(400);
  });
});
