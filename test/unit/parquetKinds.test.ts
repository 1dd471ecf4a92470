import { describe, expect, it } from 'vitest';
import { inferKind, valuesKind, widenKind, type ColumnKind } from '../../lib/export/parquetTable';

// results.parquet decides each input column's kind before its first row group is written, a chunk
// of the plan at a time: the kinds of the chunks, combined, must be the kind of the whole column.

const SAMPLES: unknown[] = [null, undefined, 'a', '', 3, -7, 2.5, 1e300, true, false, ['x', 'y'], [], [1], { a: 1 }, 2 ** 60];

function seeded(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

describe('parquet column kinds', () => {
  it('combines chunk by chunk into the kind of the whole column, whatever the chunking', () => {
    const random = seeded(21);
    for (let trial = 0; trial < 2000; trial++) {
      // Mostly one or two kinds per column (as real columns are), sometimes anything.
      const pool = Array.from({ length: 1 + Math.floor(random() * 3) }, () => SAMPLES[Math.floor(random() * SAMPLES.length)]);
      const values = Array.from({ length: Math.floor(random() * 40) }, () => pool[Math.floor(random() * pool.length)]);
      let combined: ColumnKind | undefined;
      for (let start = 0; start < values.length;) {
        const size = 1 + Math.floor(random() * 7);
        combined = widenKind(combined, valuesKind(values.slice(start, start + size)));
        start += size;
      }
      expect(combined ?? 'string', JSON.stringify(values)).toBe(inferKind(values));
    }
  });

  it('keeps the narrowest kind: integers then numbers are double, a missing chunk changes nothing, mixed kinds are JSON', () => {
    expect(widenKind(valuesKind([1, 2]), valuesKind([2.5]))).toBe('double');
    expect(widenKind(valuesKind([null, undefined]), valuesKind([true]))).toBe('bool');
    expect(widenKind(valuesKind(['a']), valuesKind([null]))).toBe('string');
    expect(widenKind(valuesKind(['a']), valuesKind([1]))).toBe('json');
    expect(valuesKind([null])).toBeUndefined();
    expect(inferKind([null])).toBe('string');
  });
});
