import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createOrchestrationActivities } from '../../activities/orchestration';
import { runList } from '../../cli/manage';
import { registerRun } from '../../lib/run/runRegistry';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { testInput } from '../helpers/temporalEnv';

// `atelier list` with no server up for the state dir: the runs the state dir records, with counts
// from their ledgers, instead of "no Temporal server is running".

afterEach(() => vi.unstubAllEnvs());

describe('atelier list without a server', () => {
  it('lists the runs the state dir records, newest first, with their ledger counts', async () => {
    vi.stubEnv('TEMPORAL_ADDRESS', undefined);
    const stateDir = tempDir('atelier-list-state-');
    const dir = tempDir('atelier-list-data-');
    await writePng(join(dir, 'a.png'));
    writeText(join(dir, 'rows.csv'), ['input_images,instruction', 'a.png,one', 'a.png,two'].join('\n'));
    const planned = testInput({ runId: 'list-planned', inputPath: join(dir, 'rows.csv'), outputDir: join(dir, 'out') });
    await createOrchestrationActivities().planRun(planned);
    await registerRun(stateDir, planned);
    await new Promise((r) => setTimeout(r, 5));
    await registerRun(stateDir, testInput({ runId: 'list-unplanned', inputPath: join(dir, 'rows.csv'), outputDir: join(dir, 'never') }));
    const out: string[] = [];
    const io = {
      out: (l: string) => out.push(l),
      err: (l: string) => out.push(l),
      interrupted: new Promise<void>(() => undefined),
      isTTY: false,
    };
    expect(await runList({ stateDir }, io)).toBe(0);
    const lines = out.join('\n').split('\n');
    expect(lines[0]).toBe(`no server is up for state dir ${stateDir}: the runs it records (counts from each ledger)`);
    expect(lines[1]).toMatch(/^list-unplanned {2}started \S+ {2}not planned yet {2}/);
    expect(lines[2]).toMatch(new RegExp(`^list-planned {2}started \\S+ {2}rows 2 ok 0 failed 0 {2}${join(dir, 'out')}$`));
  });

  it('says so when the state dir records no run', async () => {
    vi.stubEnv('TEMPORAL_ADDRESS', undefined);
    const stateDir = tempDir('atelier-list-empty-');
    const out: string[] = [];
    const io = {
      out: (l: string) => out.push(l),
      err: (l: string) => out.push(l),
      interrupted: new Promise<void>(() => undefined),
      isTTY: false,
    };
    expect(await runList({ stateDir }, io)).toBe(0);
    expect(out.join('\n')).toBe(`no runs: no server is up for state dir ${stateDir}, and it records none`);
  });
});
