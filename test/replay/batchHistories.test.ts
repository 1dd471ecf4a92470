import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { workflowCodeOption } from '../../workers/bundle';

// Histories of a `--batch` run recorded by recordBatchHistories.ts (fixtures/batch-<commit>/): the
// dataset run with its batch phase, and the batch job child (submit, polls on durable timers,
// collect). The current workflow code must replay every recorded folder without a nondeterminism
// error, so runs with a batch in flight survive a worker upgrade.

const FIXTURES = join(__dirname, 'fixtures');
const folders = readdirSync(FIXTURES).filter((f) => f.startsWith('batch-'));

describe('replay of recorded --batch histories', () => {
  it('has recorded histories', () => {
    expect(folders.length).toBeGreaterThan(0);
  });

  for (const folder of folders) {
    for (const file of readdirSync(join(FIXTURES, folder)).filter((f) => f.endsWith('.binpb'))) {
      it(`replays ${folder}/${file}`, async () => {
        const history = temporal.api.history.v1.History.decode(readFileSync(join(FIXTURES, folder, file)));
        expect(history.events.length).toBeGreaterThan(10);
        await Worker.runReplayHistory({ ...workflowCodeOption(), replayName: file }, history, `replay-${folder}-${file}`);
      });
    }
  }
});
