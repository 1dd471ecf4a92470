import { describe, expect, it } from 'vitest';
import type { LedgerEntry } from '../../lib/run/records';
import { KeptEntries, ResultsRecords } from '../../lib/run/resultsRecords';
import { ledgerEntry } from '../../lib/run/runStore';
import { tempDir } from '../helpers/fixtures';

// The entries the results records keep, as planning and a full results pass look them up: each
// row's latest record, found by offset in the records' bytes and parsed only when asked for.

const PLAN = 'plan-tag-0000002';

function ok(index: number, latencyMs: number): { status: 'ok'; entry: LedgerEntry } {
  const row = { index, position: index, runId: 'r', model: 'm' };
  return { status: 'ok', entry: ledgerEntry(row, undefined, { status: 'ok', attempts: 1, outputImages: [`${index}.png`], latencyMs }) };
}

const line = (value: unknown): string => `${JSON.stringify(value)}\n`;

describe('kept ledger entries', () => {
  it("a later segment's record of a row replaces an earlier one; rows without a tag, an entry, or a parsable line are not kept", () => {
    const base = Buffer.from(
      line({ i: 0, s: ok(0, 10), t: 'a0' }) +
        line({ i: 1, s: ok(1, 11), t: 'a1' }) +
        line({ i: 2, s: ok(2, 12), t: 'a2' }) +
        line({ i: 3, s: { status: 'unreadable', error: 'EIO' }, t: 'a3' }) +
        line({ i: 4, s: { status: 'pending' } }) +
        line({ i: 123456789012, s: ok(5, 15), t: 'big' }) +
        // Written by hand, keys in another order: found by parsing the line.
        `{"t":"a6","s":${JSON.stringify(ok(6, 16))},"i":6}\n` +
        '{"i":7,"s":{not json\n',
    );
    const segment = Buffer.from(
      line({ i: 1, s: ok(1, 21), t: 'b1' }) +
        // Recorded again without a tag (it could not be read): not kept, though segment 0 had one.
        line({ i: 2, s: ok(2, 22) }) +
        '\n',
    );
    const kept = KeptEntries.of([base, segment]);
    expect(kept.get(0)).toMatchObject({ tag: 'a0', entry: { latencyMs: 10 } });
    expect(kept.get(1)).toMatchObject({ tag: 'b1', entry: { latencyMs: 21 } });
    expect(kept.get(2)).toBeUndefined();
    expect(kept.get(3)).toBeUndefined();
    expect(kept.get(4)).toBeUndefined();
    expect(kept.get(123456789012)).toMatchObject({ tag: 'big' });
    expect(kept.get(6)).toMatchObject({ tag: 'a6', entry: { latencyMs: 16 } });
    expect(kept.get(7)).toBeUndefined();
    expect(kept.get(8)).toBeUndefined();
    // Rows whose latest line carries a tag, as the records write it (last): 0, 1, 3 and the big one.
    expect(kept.size).toBe(4);
    // Records without tags (an older release's) keep nothing: the ledger's tags need no listing.
    expect(KeptEntries.of([Buffer.from(line({ i: 0, s: ok(0, 1) }))]).size).toBe(0);
  });

  it('reads what the records commit: a base and the segments of refreshes on top, and none for records gone', async () => {
    const outputDir = tempDir('atelier-kept-');
    expect((await ResultsRecords.keptEntries(outputDir)).size).toBe(0);
    const records = ResultsRecords.fresh(outputDir, PLAN);
    await records.commit(
      new Map([
        [0, ok(0, 1)],
        [1, ok(1, 1)],
      ]),
      new Map([
        [0, 't0'],
        [1, 't1'],
      ]),
    );
    const refreshed = (await ResultsRecords.load(outputDir, PLAN, { pointerOnly: true }))!;
    await refreshed.commit(new Map([[1, ok(1, 2)]]), new Map([[1, 't1b']]));
    const kept = await ResultsRecords.keptEntries(outputDir);
    expect(kept.get(0)).toMatchObject({ tag: 't0', entry: { latencyMs: 1 } });
    expect(kept.get(1)).toMatchObject({ tag: 't1b', entry: { latencyMs: 2 } });
  });
});
