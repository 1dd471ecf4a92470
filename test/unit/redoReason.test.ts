import { describe, expect, it } from 'vitest';
import { writeReviewMark } from '../../lib/run/review';
import { doneRowsToRedo } from '../../cli/retryRows';
import { tempDir } from '../helpers/fixtures';
import { writeFixtureRun } from '../browser/runFixture';

// `retry --rejected --redo` records why each row is made again; a person's reject reason from the
// viewer goes with it, so the row's history (results, the viewer's earlier outputs) says what was wrong.

describe('redo of rows rejected in the viewer', () => {
  it('carries the reject reason into the redo reason', async () => {
    const outputDir = await writeFixtureRun(tempDir('atelier-redo-reason-'), 12);
    // Row 11 is rejected in the fixture without a reason; row 1 is rejected here with one.
    await writeReviewMark(outputDir, {
      index: 1,
      verdict: 'rejected',
      reason: 'artifacts or low quality',
      outputImages: ['images/000001.png'],
      entryFinishedAt: '2026-12-07T08:00:00.000Z',
      at: '2026-12-07T09:00:00.000Z',
    });
    const { rows } = await doneRowsToRedo(outputDir, { rejected: true }, undefined);
    expect(rows).toEqual([
      { index: 1, position: 1, reason: 'rejected in the viewer: artifacts or low quality' },
      { index: 11, position: 11, reason: 'rejected in the viewer' },
    ]);
  });
});
