import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { commitLedgerEntry, readLedgerEntry, type LedgerEntry } from '../../lib/run/ledger';
import { RunStore } from '../../lib/run/runStore';
import { tempDir } from '../helpers/fixtures';

const entry = (finishedAt: string, requestId: string): LedgerEntry => ({
  index: 3,
  position: 3,
  status: 'ok',
  runId: 'r',
  model: 'm',
  digest: 'd'.repeat(64),
  outputImages: ['000003.png'],
  requestIds: [requestId],
  finishedAt,
});

describe('committing a finished row', () => {
  it('lets one of two attempts finish a row; the other takes its entry', async () => {
    const out = join(tempDir(), 'out');
    const [a, b] = await Promise.all([
      commitLedgerEntry(out, entry('2026-11-30T10:00:00.000Z', 'a'), undefined),
      commitLedgerEntry(out, entry('2026-11-30T10:00:01.000Z', 'b'), undefined),
    ]);
    expect([a.won, b.won].filter(Boolean)).toHaveLength(1);
    expect(a.entry).toEqual(b.entry);
    expect(await readLedgerEntry(out, 3)).toEqual(a.entry);
  });

  it('commits with the entry alone: a done-marker an earlier release left without its entry is not read', async () => {
    const out = join(tempDir(), 'out');
    // Release 92684ae's winner died between its marker and its entry: the marker is all there is.
    mkdirSync(join(out, '.atelier', 'ledger', 'done'), { recursive: true });
    writeFileSync(
      join(out, '.atelier', 'ledger', 'done', '000003-dddddddddddddddd-e3b0c44298fc.json'),
      JSON.stringify(entry('2026-11-30T09:00:00.000Z', 'x')),
    );
    expect(await readLedgerEntry(out, 3)).toBeUndefined();
    const retry = await commitLedgerEntry(out, entry('2026-11-30T10:00:05.000Z', 'b'), null);
    expect(retry).toEqual({ won: true, entry: entry('2026-11-30T10:00:05.000Z', 'b') });
    expect(await readLedgerEntry(out, 3)).toEqual(retry.entry);
  });

  it('replaces only the version a redo started from: a commit from an older version loses to the one that landed', async () => {
    const out = join(tempDir(), 'out');
    await commitLedgerEntry(out, entry('2026-11-30T10:00:00.000Z', 'a'), null);
    const startedFrom = (await RunStore.open(out).readEntryTagged(3))!;
    const redo = await commitLedgerEntry(out, entry('2026-11-30T11:00:00.000Z', 'c'), startedFrom);
    expect(redo.won).toBe(true);
    expect((await readLedgerEntry(out, 3))?.requestIds).toEqual(['c']);
    const stale = await commitLedgerEntry(out, entry('2026-11-30T11:00:01.000Z', 'd'), startedFrom);
    expect(stale).toEqual({ won: false, entry: redo.entry });
    expect((await readLedgerEntry(out, 3))?.requestIds).toEqual(['c']);
  });
});
