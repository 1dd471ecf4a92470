import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { workflowCodeOption } from '../../workers/bundle';

// Every recorded history (fixtures/<commit>/, see fixtures/README.md) must replay with today's
// workflow code: a change to workflows/ that alters the commands of a recorded path without a
// patched() marker fails here, before a worker upgraded mid-run would.

const FIXTURES = join(__dirname, 'fixtures');
const versions = readdirSync(FIXTURES).filter((d) => statSync(join(FIXTURES, d)).isDirectory());
const recorded = versions.flatMap((version) =>
  readdirSync(join(FIXTURES, version))
    .filter((f) => f.endsWith('.binpb'))
    .map((file) => ({ version, file })),
);

describe('replay of recorded histories', () => {
  it('has histories for every workflow path', () => {
    // 90beffe: before this round. The later set covers one run per path.
    expect(versions).toContain('90beffe');
    const paths = new Set(recorded.map((r) => r.file.split('.')[0]));
    for (const path of ['plain', 'can', 'quota', 'retry', 'cancel', 'gpu', 'budget', 'early', 'judge']) expect(paths).toContain(path);
  });

  it.each(recorded)('replays $version/$file', async ({ version, file }) => {
    // Binary protobuf: the JSON route (historyFromJSON) trips over two copies of protobufjs here.
    const history = temporal.api.history.v1.History.decode(readFileSync(join(FIXTURES, version, file)));
    expect(history.events.length).toBeGreaterThan(5);
    await Worker.runReplayHistory({ ...workflowCodeOption(), replayName: `${version}/${file}` }, history, `replay-${version}-${file}`);
  });
});
