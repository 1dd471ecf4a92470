import { describe, expect, it } from 'vitest';
import { PlanWriter, readPlanMeta, readPlanRow, readPlanRows } from '../../lib/run/plan';
import { tempDir } from '../helpers/fixtures';

describe('plan files', () => {
  it('reads any row by position and pages across the end', async () => {
    const dir = tempDir();
    const writer = new PlanWriter(dir);
    await writer.open();
    for (let i = 0; i < 250; i++) {
      await writer.add({
        position: i,
        index: i * 2,
        where: `x.csv line ${i + 2}`,
        turns: [`édit ${i} ✓`],
        images: [],
        outputs: [],
        record: { i: String(i) },
      });
    }
    const meta = await writer.commit({
      runId: 'r',
      inputPath: '/x.csv',
      selectedRows: 250,
      columns: ['i'],
      imageKey: 'image',
      instructionKey: 'instruction',
    });
    expect(meta.totalRows).toBe(250);
    expect((await readPlanMeta(dir)).totalRows).toBe(250);
    expect((await readPlanRow(dir, 137)).turns[0]).toBe('édit 137 ✓');
    const page = await readPlanRows(dir, 240, 100);
    expect(page.map((r) => r.position)).toEqual([240, 241, 242, 243, 244, 245, 246, 247, 248, 249]);
    expect(await readPlanRows(dir, 250, 10)).toEqual([]);
    await expect(readPlanRow(dir, 250)).rejects.toThrow(/position 250 is not in the plan/);
  });
});
