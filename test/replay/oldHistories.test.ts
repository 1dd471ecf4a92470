import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { workflowCodeOption } from '../../workers/bundle';

// Histories recorded with the code before this branch (Atelier @ 90beffe; see fixtures/README.md):
// a 40-row run with a quota pause and resume, a continue-as-new, and one row child. The current
// workflow code must replay them without a nondeterminism error: --max-cost, row costs and the
// budget signal change nothing for a run that has no budget.

const FIXTURES = join(__dirname, 'fixtures');

describe('replay of histories recorded before this change', () => {
  const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.binpb'));

  it('has the recorded histories', () => {
    expect(files).toEqual(['datasetWorkflow-00.binpb', 'datasetWorkflow-01.binpb', 'rowWorkflow-02.binpb']);
  });

  for (const file of files) {
    it(`replays ${file}`, async () => {
      // Binary protobuf: the JSON route (historyFromJSON) trips over two copies of protobufjs here.
      const history = temporal.api.history.v1.History.decode(readFileSync(join(FIXTURES, file)));
      expect(history.events.length).toBeGreaterThan(10);
      await Worker.runReplayHistory({ ...workflowCodeOption(), replayName: file }, history, `replay-${file}`);
    });
  }
});
