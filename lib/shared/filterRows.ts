// `--rows` (older spelling `--filter-rows`): which row positions a run attempts. Comma-separated
// items, each `N` (one row), `N:M` (half-open range), `N:` (from N to the end) or `:M` (the first M
// rows); e.g. `0:3,4:6`.
// Positions count rows in dataset order from 0, whatever their `index` column says.

export interface RowRange {
  start: number;
  /** Exclusive; Infinity for an open end. */
  end: number;
}

export class FilterSyntaxError extends Error {
  override name = 'FilterSyntaxError';
}

const ITEM = /^(\d+)?(:)?(\d+)?$/;

export function parseFilterRows(spec: string): RowRange[] {
  const items = spec.split(',').map((s) => s.trim());
  if (spec.trim() === '' || items.some((s) => s === '')) {
    throw new FilterSyntaxError(`--rows "${spec}": expected items like 0:100, 100:, :50 or 0,5,10 separated by commas`);
  }
  return items.map((item) => {
    const m = ITEM.exec(item);
    if (!m || (m[1] === undefined && m[3] === undefined)) {
      throw new FilterSyntaxError(`--rows "${spec}": item "${item}" is not N, N:M, N: or :M (non-negative integers)`);
    }
    const start = m[1] !== undefined ? Number(m[1]) : 0;
    if (!m[2]) return { start, end: start + 1 };
    const end = m[3] !== undefined ? Number(m[3]) : Infinity;
    if (end <= start) {
      throw new FilterSyntaxError(`--rows "${spec}": range "${item}" is empty (the end is exclusive and must be greater than the start)`);
    }
    return { start, end };
  });
}

/** A predicate over row positions; everything when no filter is given. */
export function rowSelector(spec: string | undefined): (position: number) => boolean {
  if (spec === undefined) return () => true;
  const ranges = parseFilterRows(spec);
  return (position) => ranges.some((r) => position >= r.start && position < r.end);
}
