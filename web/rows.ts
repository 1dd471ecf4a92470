import type { RunRowView } from '../lib/run/runRows';
import { HttpError } from './httpError';

// What the viewer's page asks of a run's rows: a filter (status, error class, review mark, judge
// score, a conflict between the two, text in the instruction), an order (plan order, score, cost,
// latency) and one page of the result. Done on the server, so a run of 20,000 rows sends the page
// its 100 tiles, never every row (and never their images: tiles load thumbnails lazily).

/** A row as the page shows it. */
export interface RowSummary {
  index: number;
  position: number;
  status: 'ok' | 'failed' | 'pending';
  errorType?: string;
  error?: string;
  turns: string[];
  inputs: number;
  outputs: string[];
  /** Committed ok, but an output is missing or no longer the size its commit recorded: not shown, made again by a re-run. */
  outputsChanged?: boolean;
  attempts?: number;
  latencyMs?: number;
  costUsd?: number;
  requestId?: string;
  enhanced?: string;
  review?: 'accepted' | 'rejected';
  /** Why the person rejected it, when they said. */
  reviewReason?: string;
  /** The judge's scores of the current output (`atelier judge`). */
  score?: { overall: number; instructionFollowing: number; preservation: number | null; quality: number; reason: string; model: string };
  /** Accepted by a person although the judge scored it below the page's conflict threshold. */
  conflict?: boolean;
  /** 2 and up for a row made again (`retry --redo`); earlier outputs in `history`. */
  generation?: number;
  history?: Array<{ generation: number; reason: string; costUsd?: number }>;
  where: string;
}

/** A row as the server keeps it between reads: its view, what the page gets, and its text lower-cased for search. */
export interface CachedRow {
  view: RunRowView;
  summary: RowSummary;
  text: string;
}

export const SORT_KEYS = ['index', 'score', 'cost', 'latency'] as const;
export type SortKey = (typeof SORT_KEYS)[number];
const STATUSES = ['ok', 'failed', 'pending'] as const;
const REVIEWS = ['unmarked', 'accepted', 'rejected', 'conflict'] as const;

/** Judge scores are 0-10 (VIEScore); an accepted row under this overall score is flagged. */
export const DEFAULT_CONFLICT_BELOW = 5;
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 500;

/** Which rows: the same fields in a page's query string and in a bulk mark's body. */
export interface RowFilter {
  status?: (typeof STATUSES)[number];
  errorType?: string;
  review?: (typeof REVIEWS)[number];
  scoreBelow?: number;
  /** Words that must all appear in the instruction (any turn, or its enhanced rewrite), any case. */
  q?: string;
  conflictBelow: number;
}

export interface RowQuery extends RowFilter {
  sort: SortKey;
  order: 'asc' | 'desc';
  offset: number;
  limit: number;
}

export function summaryOf(view: RunRowView): CachedRow {
  const { row, entry } = view;
  const summary: RowSummary = {
    index: row.index,
    position: row.position,
    // A row whose request changed since its output was made is waiting to be done again.
    status: view.status === 'changed' ? 'pending' : view.status,
    ...(view.errorType ? { errorType: view.errorType, error: view.error! } : {}),
    turns: row.turns,
    inputs: row.images.length,
    outputs: view.status === 'ok' ? (entry?.outputImages ?? []) : [],
    ...(view.status === 'pending' && entry?.status === 'ok' ? { outputsChanged: true } : {}),
    ...(entry?.attempts !== undefined ? { attempts: entry.attempts } : {}),
    ...(entry?.latencyMs !== undefined ? { latencyMs: entry.latencyMs } : {}),
    ...(entry?.costUsd !== undefined ? { costUsd: entry.costUsd } : {}),
    ...(entry?.requestIds?.length ? { requestId: entry.requestIds.at(-1)! } : {}),
    ...(entry?.instructionEnhanced ? { enhanced: entry.instructionEnhanced } : {}),
    ...(view.review ? { review: view.review.verdict } : {}),
    ...(view.review?.reason ? { reviewReason: view.review.reason } : {}),
    ...(view.score ? { score: { ...view.score.scores, reason: view.score.reason, model: view.score.model } } : {}),
    ...(entry?.history?.length
      ? {
          generation: entry.history.length + 1,
          history: entry.history.map((h) => ({
            generation: h.generation,
            reason: h.reason,
            ...(h.costUsd !== undefined ? { costUsd: h.costUsd } : {}),
          })),
        }
      : {}),
    where: row.where,
  };
  return { view, summary, text: [...row.turns, entry?.instructionEnhanced ?? ''].join('\n').toLowerCase() };
}

function oneOf<T extends string>(name: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined || value === '') return undefined;
  if (!(allowed as readonly string[]).includes(value))
    throw new HttpError(400, `${name} must be one of ${allowed.join(', ')} (got "${value}")`);
  return value as T;
}

function numberParam(name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max)
    throw new HttpError(400, `${name} must be a number from ${min} to ${max} (got "${value}")`);
  return n;
}

function stringParam(name: string, value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new HttpError(400, `${name} must be a string`);
  return value;
}

/** Reads a filter from a query string's or a JSON body's fields; a bad value is a 400 naming the field. */
export function parseFilter(fields: Record<string, unknown>): RowFilter {
  const get = (name: string): string | undefined => {
    const value = fields[name];
    return typeof value === 'number' ? String(value) : stringParam(name, value);
  };
  const q = get('q')?.trim();
  if (q && q.length > 200) throw new HttpError(400, 'q must be at most 200 characters');
  const status = oneOf('status', get('status'), STATUSES);
  const review = oneOf('review', get('review'), REVIEWS);
  const scoreBelow = numberParam('scoreBelow', get('scoreBelow'), 0, 10);
  const errorType = get('error') || undefined;
  return {
    ...(status ? { status } : {}),
    ...(errorType ? { errorType } : {}),
    ...(review ? { review } : {}),
    ...(scoreBelow !== undefined ? { scoreBelow } : {}),
    ...(q ? { q } : {}),
    conflictBelow: numberParam('conflictBelow', get('conflictBelow'), 0, 10) ?? DEFAULT_CONFLICT_BELOW,
  };
}

export function parseQuery(params: URLSearchParams): RowQuery {
  const fields = Object.fromEntries(params);
  const offset = numberParam('offset', fields.offset, 0, Number.MAX_SAFE_INTEGER) ?? 0;
  const limit = numberParam('limit', fields.limit, 1, MAX_PAGE_SIZE) ?? DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(offset) || !Number.isInteger(limit)) throw new HttpError(400, 'offset and limit must be whole numbers');
  return {
    ...parseFilter(fields),
    sort: oneOf('sort', fields.sort, SORT_KEYS) ?? 'index',
    order: oneOf('order', fields.order, ['asc', 'desc'] as const) ?? 'asc',
    offset,
    limit,
  };
}

export function isConflict(row: RowSummary, conflictBelow: number): boolean {
  return row.review === 'accepted' && row.score !== undefined && row.score.overall < conflictBelow;
}

function matcher(filter: RowFilter): (row: CachedRow) => boolean {
  const words = filter.q ? filter.q.toLowerCase().split(/\s+/) : [];
  return ({ summary: r, text }) => {
    if (filter.status && r.status !== filter.status) return false;
    if (filter.errorType && r.errorType !== filter.errorType) return false;
    if (filter.review === 'unmarked' && (r.review || r.status !== 'ok')) return false;
    if (filter.review === 'conflict' && !isConflict(r, filter.conflictBelow)) return false;
    if ((filter.review === 'accepted' || filter.review === 'rejected') && r.review !== filter.review) return false;
    if (filter.scoreBelow !== undefined && !(r.score && r.score.overall < filter.scoreBelow)) return false;
    return words.every((w) => text.includes(w));
  };
}

export function matching(rows: Iterable<CachedRow>, filter: RowFilter): CachedRow[] {
  const test = matcher(filter);
  const out: CachedRow[] = [];
  for (const row of rows) if (test(row)) out.push(row);
  return out;
}

const sortValue: Record<SortKey, (r: RowSummary) => number | undefined> = {
  index: (r) => r.position,
  score: (r) => r.score?.overall,
  cost: (r) => r.costUsd,
  latency: (r) => r.latencyMs,
};

/** Sorted by the key; rows without a value (unscored, never run) go last either way, in plan order. */
export function sorted(rows: CachedRow[], sort: SortKey, order: 'asc' | 'desc'): CachedRow[] {
  const value = sortValue[sort];
  const sign = order === 'asc' ? 1 : -1;
  return rows
    .map((row) => ({ row, v: value(row.summary) }))
    .sort((a, b) => {
      if (a.v === undefined || b.v === undefined) {
        if (a.v !== b.v) return a.v === undefined ? 1 : -1;
        return a.row.summary.position - b.row.summary.position;
      }
      return (a.v - b.v) * sign || a.row.summary.position - b.row.summary.position;
    })
    .map(({ row }) => row);
}

export interface RowCounts {
  rows: number;
  ok: number;
  failed: number;
  pending: number;
  accepted: number;
  rejected: number;
  conflicts: number;
}

export function countRows(rows: Iterable<CachedRow>, conflictBelow: number): { counts: RowCounts; errorTypes: string[] } {
  const counts: RowCounts = { rows: 0, ok: 0, failed: 0, pending: 0, accepted: 0, rejected: 0, conflicts: 0 };
  const errorTypes = new Set<string>();
  for (const { summary: r } of rows) {
    counts.rows++;
    counts[r.status]++;
    if (r.review) counts[r.review]++;
    if (isConflict(r, conflictBelow)) counts.conflicts++;
    if (r.errorType) errorTypes.add(r.errorType);
  }
  return { counts, errorTypes: [...errorTypes].sort() };
}
