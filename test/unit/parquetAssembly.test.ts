import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { describe, expect, it } from 'vitest';
import { encodeRowGroup, ParquetAssembler, ParquetTableWriter, type TableColumn } from '../../lib/export/parquetTable';
import { tempDir } from '../helpers/fixtures';

// results.parquet is assembled from row groups encoded one at a time and kept (a refresh encodes
// only the groups whose rows changed): the file must be the bytes the writer gives for all rows.

const COLUMNS: TableColumn[] = [
  { name: 'n', kind: 'int' },
  { name: 'x', kind: 'double' },
  { name: 'flag', kind: 'bool' },
  { name: 'text', kind: 'string' },
  { name: 'big', kind: 'string' },
  { name: 'tags', kind: 'stringList' },
  { name: 'extra', kind: 'json' },
];

function rows(count: number): Array<Record<string, unknown>> {
  return Array.from({ length: count }, (_, i) => ({
    n: i % 7 === 0 ? null : i,
    x: i / 3,
    flag: i % 2 === 0,
    text: `row ${i % 50}`,
    // Over a megabyte per group in this column: several pages, so page indexes with offsets.
    big: i >= 1000 && i < 2000 ? `${i}`.padEnd(3000, String.fromCharCode(97 + (i % 26))) : null,
    tags: i % 5 === 0 ? [] : [`t${i % 3}`, `u${i}`],
    extra: i % 4 === 0 ? { i } : null,
  }));
}

describe('parquet assembled from kept row groups', () => {
  it('gives the same bytes as writing every row at once, and reads back', async () => {
    const dir = tempDir('atelier-parquet-assembly-');
    const all = rows(3500);
    const whole = new ParquetTableWriter(join(dir, 'whole.parquet'), COLUMNS);
    await whole.write(all, 1000);
    await whole.finish();

    const groups = [0, 1000, 2000, 3000].map((start) => encodeRowGroup(COLUMNS, all.slice(start, start + 1000)));
    const assembler = new ParquetAssembler(join(dir, 'assembled.parquet'), COLUMNS);
    const starts = groups.map((g) => assembler.append(g));
    await assembler.finish();

    const expected = readFileSync(join(dir, 'whole.parquet'));
    const actual = readFileSync(join(dir, 'assembled.parquet'));
    expect(starts[0]).toBe(4);
    expect(actual.equals(expected)).toBe(true);
    const file = actual.buffer.slice(actual.byteOffset, actual.byteOffset + actual.byteLength) as ArrayBuffer;
    // The group with the big column has page indexes (their offsets moved with the group).
    const meta = parquetMetadata(file);
    expect(meta.row_groups.map((g) => Number(g.num_rows))).toEqual([1000, 1000, 1000, 500]);
    expect(meta.row_groups[1]!.columns.some((c) => c.offset_index_offset !== undefined)).toBe(true);
    const back = await parquetReadObjects({ file, columns: ['n', 'big', 'tags'], rowStart: 1498, rowEnd: 1501 });
    expect(back.map((r) => [r.n, (r.big as string).slice(0, 4), r.tags])).toEqual([
      [null, '1498', ['t1', 'u1498']], // 1498 = 7 × 214: no n
      [1499n, '1499', ['t2', 'u1499']],
      [1500n, '1500', []],
    ]);
  });
});
