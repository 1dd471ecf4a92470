import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { commitLedgerEntry, readLedgerEntry, type LedgerEntry } from '../../lib/run/ledger';
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

  it('completes a commit whose winner died between its marker and its entry', async () => {
    const out = join(tempDir(), 'out');
    const first = await commitLedgerEntry(out, entry('2026-11-30T10:00:00.000Z', 'a'), undefined);
    // The winner's host died after the marker: its entry never reached the ledger.
    rmSync(join(out, '.atelier', 'ledger', '000003.json'));
    expect(await readLedgerEntry(out, 3)).toBeUndefined();
    const retry = await commitLedgerEntry(out, entry('2026-11-30T10:00:05.000Z', 'b'), undefined);
    expect(retry).toEqual({ won: false, entry: first.entry });
    expect(await readLedgerEntry(out, 3)).toEqual(first.entry);
  });

  it('gives a row redone from another state a new marker', async () => {
    const out = join(tempDir(), 'out');
    const first = await commitLedgerEntry(out, entry('2026-11-30T10:00:00.000Z', 'a'), undefined);
    const redo = await commitLedgerEntry(out, entry('2026-11-30T11:00:00.000Z', 'c'), first.entry);
    expect(redo.won).toBe(true);
    expect((await readLedgerEntry(out, 3))?.requestIds).toEqual(['c']);
  });
});
