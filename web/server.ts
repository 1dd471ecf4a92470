import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { isS3Location, openStorage, type Storage } from '../storage';
import { writeResultsTables, type WriteResultsArgs } from '../activities/resultsTables';
import { layout } from '../lib/run/runStore';
import { replacedSince } from '../lib/run/outputDigest';
import { imageProblem, readSource, sniffImageType } from '../lib/images';
import { childLocation, readPlanMeta } from '../lib/run/plan';
import { clearReviewMark, isVerdict, MAX_REVIEW_REASON, writeReviewMark, type ReviewMark, type ReviewVerdict } from '../lib/run/review';
import { runRows, type RunRowView } from '../lib/run/runRows';
import { HttpError } from './httpError';
import { viewerPage } from './page';
import { countRows, isConflict, matching, parseFilter, parseQuery, sorted, summaryOf, type CachedRow } from './rows';
import { thumbnail } from './thumbnails';

// `atelier view`: one run's rows in a browser, served on loopback by node:http. The page is one
// HTML document with its script inline (web/page.ts): no front-end build. It polls /api/rows for the
// page of rows it shows (filtered, sorted and paged here: web/rows.ts), so a run in progress fills in
// as rows finish. Marks are the only writes, each one object per row
// (lib/run/review.ts), and only from this page: requests must name this server as their Host (no DNS
// rebinding) and carry JSON (no cross-site form posts).

export interface ViewerOptions {
  outputDir: string;
  /** 0 picks a free port. */
  port?: number;
  /** How the page tells a person to redo rejected rows (the run id's CLI command). */
  runId: string;
  /**
   * The run's results tables, rewritten after marks so their review columns follow the marks
   * (cli/view.ts says where they are). Absent: the tables are left alone.
   */
  results?: Omit<WriteResultsArgs, 'runId' | 'outputDir' | 'changedRows'>;
  /** Told when a rewrite of the tables fails (the marks themselves are stored). */
  onResultsError?: (err: unknown) => void;
}

export interface Viewer {
  url: string;
  close(): Promise<void>;
}

export type { RowSummary } from './rows';

/** Every row of the run as one read found it, and when. */
interface RowsRead {
  at: number;
  rows: Map<number, CachedRow>;
  /** The run folder's change sign when the read began (undefined: none to be had). */
  sign: string | undefined;
}

/** A change sign holds once the newest time in it is this old. */
const SIGN_SETTLED_MS = 2000;
/** What a read of the rows consults: the plan, the ledger (and the done-markers of runs from earlier releases), marks, scores. */
const READ_SOURCES = [layout.plan.rows, layout.plan.meta, layout.ledger, `${layout.ledger}/done`, layout.review, layout.judge];

/**
 * A sign that changes whenever what a read consults may have: on a disk, the modification times
 * (ns) of those folders and files, since every write in them is a rename into the folder or an
 * unlink from it (storage/local.ts, storage/atomicFile.ts). Undefined (read again) on S3, which has
 * no such sign, and while a time is under 2 s old: a file system's clock ticks coarser than its
 * nanoseconds, so two writes close together may leave one time, and the read must follow the last.
 */
function changeSign(outputDir: string): (() => Promise<string | undefined>) | undefined {
  if (isS3Location(outputDir)) return undefined;
  const paths = READ_SOURCES.map((key) => join(outputDir, ...key.split('/')));
  return async () => {
    const times = await Promise.all(
      paths.map((path) =>
        stat(path, { bigint: true }).then(
          (s) => s.mtimeNs,
          () => -1n,
        ),
      ),
    );
    const newest = times.reduce((a, b) => (b > a ? b : a), -1n);
    if (Number(newest / 1_000_000n) > Date.now() - SIGN_SETTLED_MS) return undefined;
    return times.join('|');
  };
}

/** A re-read of every row is at most this fresh, and at least this many times as old as one read took. */
const ROWS_FRESH_MS = 1000;
const ROWS_READ_FACTOR = 5;
/** The first read answers requests once this many rows are in (one chunk of lib/run/runRows.ts). */
const FIRST_ANSWER_ROWS = 500;
/** Marks written at once by a bulk mark. */
const MARK_CONCURRENCY = 32;
/** The results tables are rewritten this long after the last mark (a run of key presses is one rewrite). */
const RESULTS_AFTER_MARK_MS = 300;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage, limit = 4096): Promise<string> {
  let body = '';
  for await (const chunk of req) {
    body += (chunk as Buffer).toString('utf8');
    if (body.length > limit) throw new HttpError(413, 'request body too large');
  }
  return body;
}

export async function startViewer(options: ViewerOptions): Promise<Viewer> {
  const { outputDir } = options;
  const storage: Storage = openStorage(outputDir);
  const meta = await readPlanMeta(outputDir);
  const cacheDir = childLocation(outputDir, layout.imageCache);
  let cached: RowsRead | undefined;
  let reading: Promise<Map<number, CachedRow>> | undefined;
  let lastReadMs = 0;
  // Whole reads of the run so far (in /api/rows: the tests see a finished run is not read again).
  let reads = 0;
  const signOf = changeSign(outputDir);
  let checking: Promise<void> | undefined;
  // Marks written here, by row, numbered: a read that overlapped a write may have read the row's
  // mark before it, so what was written meanwhile is laid over the read's result.
  let writeSeq = 0;
  const written = new Map<number, { seq: number; mark: ReviewMark | undefined }>();
  // The first read's rows so far, and a promise kept once a first page's worth of them is in.
  let partial: Map<number, CachedRow> | undefined;
  let firstRows: Promise<void> | undefined;

  // Marks reach results.csv/.jsonl/.parquet by a rewrite of the tables shortly after them, one at a
  // time (marks made during one start another after it). It reads no ledger entry: the rows' states
  // come from the tables' row records (lib/run/resultsRecords.ts, as the last results write read
  // them), the marks and scores are read whole each time, as every results write does. A run still
  // going rewrites the tables as rows finish and at its end from a full read of the ledger, so a
  // rewrite here that lands between two of its refreshes is superseded by the next one.
  let resultsTimer: NodeJS.Timeout | undefined;
  let resultsWrite: Promise<void> | undefined;
  // Marks made since the last rewrite began.
  let marksPending = false;
  const rewriteResults = (): Promise<void> =>
    (resultsWrite ??= (async () => {
      try {
        while (marksPending) {
          marksPending = false;
          await writeResultsTables({ runId: options.runId, outputDir, ...options.results, changedRows: [] }).catch((err: unknown) =>
            options.onResultsError?.(err),
          );
        }
      } finally {
        resultsWrite = undefined;
      }
    })());
  const resultsAfterMarks = (): void => {
    if (!options.results) return;
    marksPending = true;
    clearTimeout(resultsTimer);
    resultsTimer = setTimeout(() => void rewriteResults(), RESULTS_AFTER_MARK_MS);
  };

  const withMark = (view: RunRowView, mark: ReviewMark | undefined): CachedRow => {
    const next: RunRowView = { ...view };
    if (mark) next.review = mark;
    else delete next.review;
    return summaryOf(next);
  };

  const readAll = (): Promise<Map<number, CachedRow>> =>
    (reading ??= (async () => {
      let firstIn: (() => void) | undefined;
      try {
        const before = writeSeq;
        const started = Date.now();
        // Taken before reading: a change during the read makes the next sign differ.
        const sign = await signOf?.().catch(() => undefined);
        const rows = new Map<number, CachedRow>();
        if (!cached) {
          partial = rows;
          firstRows = new Promise<void>((resolve) => (firstIn = resolve));
        }
        for await (const view of runRows(outputDir, meta)) {
          rows.set(view.row.index, summaryOf(view));
          if (rows.size === FIRST_ANSWER_ROWS) firstIn?.();
        }
        for (const [index, { seq, mark }] of written) {
          const row = rows.get(index);
          // Only onto the output that was marked (a row redone meanwhile is unmarked).
          const holds = !mark || mark.entryFinishedAt === row?.view.entry?.finishedAt;
          if (seq > before && row?.view.status === 'ok' && holds) rows.set(index, withMark(row.view, mark));
        }
        // Everything written so far is on storage for the next read to find.
        written.clear();
        lastReadMs = Date.now() - started;
        reads += 1;
        cached = { at: Date.now(), rows, sign };
        return rows;
      } finally {
        reading = undefined;
        partial = undefined;
        firstIn?.();
      }
    })());

  /**
   * The background re-read, skipped while the run folder's change sign is the one the last read
   * began with (a finished run under review: nothing to read again; at 20,000 rows a re-read took
   * about a sixth of the viewer's time). The viewer's own marks are in what it holds already.
   */
  const rereadIfChanged = (): void => {
    if (checking || reading) return;
    checking = (async () => {
      const read = cached;
      const sign = signOf ? await signOf().catch(() => undefined) : undefined;
      if (read && sign !== undefined && sign === read.sign) read.at = Date.now();
      else await readAll();
    })()
      .catch(() => undefined)
      .finally(() => (checking = undefined));
  };

  /**
   * Every row's state, and whether that is all of them. The first read of a large run takes a while
   * (20,000 rows: seconds): until it ends, requests are answered with the rows read so far once a
   * first page's worth is in, so the page paints at once and fills in as it polls. Later calls
   * answer from what was read and re-read in the background once it is older than a second (or
   * a few reads' time), so a filter change never waits on storage.
   */
  const allRows = async (): Promise<{ rows: Map<number, CachedRow>; complete: boolean }> => {
    if (!cached) {
      const done = readAll();
      await Promise.race([done, firstRows]);
      // Set meanwhile by the read (TypeScript keeps the narrowing from before the await).
      const read = cached as RowsRead | undefined;
      if (read) return { rows: read.rows, complete: true };
      if (partial) return { rows: partial, complete: false };
      return { rows: await done, complete: true };
    }
    if (Date.now() - cached.at > Math.max(ROWS_FRESH_MS, ROWS_READ_FACTOR * lastReadMs)) rereadIfChanged();
    return { rows: cached.rows, complete: true };
  };

  const rowOf = async (raw: string | undefined): Promise<RunRowView> => {
    const index = Number(raw);
    const row = Number.isSafeInteger(index) ? (await allRows()).rows.get(index) : undefined;
    if (!row) throw new HttpError(404, `no row with index ${raw}`);
    return row.view;
  };

  /** Marks (or unmarks) rows, and shows it in what the server holds without waiting for a re-read. */
  const markRows = async (views: RunRowView[], verdict: ReviewVerdict | null, reason: string | undefined): Promise<void> => {
    const at = new Date().toISOString();
    for (let i = 0; i < views.length; i += MARK_CONCURRENCY) {
      await Promise.all(
        views.slice(i, i + MARK_CONCURRENCY).map(async (view) => {
          let mark: ReviewMark | undefined;
          if (verdict === null) await clearReviewMark(outputDir, view.row.index);
          else {
            mark = {
              index: view.row.index,
              verdict,
              ...(reason ? { reason } : {}),
              outputImages: view.entry!.outputImages ?? [],
              entryFinishedAt: view.entry!.finishedAt,
              at,
            };
            await writeReviewMark(outputDir, mark);
          }
          written.set(view.row.index, { seq: ++writeSeq, mark });
          (cached?.rows ?? partial)?.set(view.row.index, withMark(view, mark));
        }),
      );
    }
    resultsAfterMarks();
  };

  /** A mark's verdict and reason from a request body; a reason goes with a rejection only. */
  const verdictOf = (body: { verdict?: unknown; reason?: unknown }): { verdict: ReviewVerdict | null; reason: string | undefined } => {
    if (body.verdict !== null && !isVerdict(body.verdict)) throw new HttpError(400, 'verdict must be "accepted", "rejected" or null');
    if (body.reason !== undefined && body.reason !== null && typeof body.reason !== 'string')
      throw new HttpError(400, 'reason must be a string');
    const reason = typeof body.reason === 'string' ? body.reason.trim() : '';
    if (reason.length > MAX_REVIEW_REASON) throw new HttpError(400, `reason must be at most ${MAX_REVIEW_REASON} characters`);
    if (reason && body.verdict !== 'rejected') throw new HttpError(400, 'a reason goes with verdict "rejected" only');
    return { verdict: body.verdict, reason: reason || undefined };
  };

  const readJsonBody = async <T>(req: IncomingMessage): Promise<T> => {
    if (!/^application\/json\b/.test(req.headers['content-type'] ?? '')) throw new HttpError(415, 'send JSON');
    const text = await readBody(req);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new HttpError(400, 'the body is not JSON');
    }
  };

  /** An image of a row: `in0`, `in1`, ..., `mask`, `out0`, `out1`, ...; its bytes and an identity for caching. */
  const imageOf = async (
    view: RunRowView,
    which: string,
  ): Promise<{ identity: string; load: () => Promise<Buffer>; check?: () => Promise<void> }> => {
    const match = /^(in|out)(\d+)$/.exec(which);
    if (match && match[1] === 'in') {
      const ref = view.row.images[Number(match[2])];
      if (!ref) throw new HttpError(404, `row ${view.row.index} has no input image ${match[2]}`);
      return {
        identity: `in:${ref.kind}:${ref.source}`,
        // Only images are served: a dataset's file that is no picture (a key named .png) stays unseen.
        load: async () => {
          const bytes = await readSource(ref, { cacheDir, runDir: outputDir });
          const problem = await imageProblem(bytes);
          if (problem) throw new HttpError(415, `input image ${match[2]} of row ${view.row.index} is not served: ${problem}`);
          return bytes;
        },
      };
    }
    const earlier = /^h(\d+)_(\d+)$/.exec(which);
    if (earlier) {
      const key = view.entry?.history?.find((h) => h.generation === Number(earlier[1]))?.outputImages[Number(earlier[2])];
      if (!key) throw new HttpError(404, `row ${view.row.index} has no earlier output ${which}`);
      return {
        identity: `history:${key}`,
        load: async () => {
          const bytes = await storage.read(key);
          if (!bytes) throw new HttpError(404, `earlier output ${key} is missing`);
          return bytes;
        },
      };
    }
    if (match) {
      // A row committed ok whose output is gone or resized reads as pending: asked for, it says why.
      const path = view.entry?.status === 'ok' && view.status !== 'changed' ? view.entry.outputImages?.[Number(match[2])] : undefined;
      if (!path) throw new HttpError(404, `row ${view.row.index} has no output image ${match[2]}`);
      // Only the bytes the row's commit recorded are served as its output (issue 23): a file swapped
      // in after the run is refused, naming the row, and the page shows that instead of the picture.
      const recorded = view.entry!.outputDigests?.[path];
      const refused = (why: string) =>
        new HttpError(409, `output ${match[2]} of row ${view.row.index} (${storage.describe(path)}) is not served: ${why}`);
      return {
        identity: `out:${path}:${view.entry!.finishedAt}:${recorded?.sha256 ?? ''}`,
        load: async () => {
          const bytes = await storage.read(path);
          if (!bytes) throw new HttpError(404, `output ${path} is missing`);
          const replaced = replacedSince(bytes, recorded);
          if (replaced) throw refused(replaced);
          return bytes;
        },
        // A kept thumbnail was made from checked bytes; before it is shown again the output's size
        // is checked (a stat, not a read of the full image): one emptied or resized is refused.
        ...(recorded
          ? {
              check: async () => {
                const info = await storage.stat(path);
                if (!info) throw new HttpError(404, `output ${path} is missing`);
                if (info.size !== recorded.size)
                  throw refused(`it is ${info.size} bytes; the commit recorded ${recorded.size}: it was replaced after the run`);
              },
            }
          : {}),
      };
    }
    throw new HttpError(404, `unknown image ${which}`);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, host: string): Promise<void> => {
    // Only pages this server served may talk to it (a page elsewhere resolving a name to loopback
    // carries its own Host).
    if (req.headers.host !== host) throw new HttpError(403, 'wrong Host');
    const url = new URL(req.url ?? '/', `http://${host}`);
    const parts = url.pathname.split('/').filter(Boolean);
    if (req.method === 'GET' && parts.length === 0) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(viewerPage());
      return;
    }
    if (req.method === 'GET' && url.pathname === '/api/rows') {
      const query = parseQuery(url.searchParams);
      const { rows: all, complete } = await allRows();
      const shown = sorted(matching(all.values(), query), query.sort, query.order);
      const page = shown.slice(query.offset, query.offset + query.limit).map(({ summary }) => ({
        ...summary,
        ...(isConflict(summary, query.conflictBelow) ? { conflict: true } : {}),
      }));
      sendJson(res, 200, {
        runId: options.runId,
        outputDir,
        inputPath: meta.inputPath,
        totalRows: meta.totalRows,
        ...countRows(all.values(), query.conflictBelow),
        matched: shown.length,
        // False while the first read of the run is under way: the counts and pages cover the rows read so far.
        complete,
        reads,
        offset: query.offset,
        rows: page,
      });
      return;
    }
    if (req.method === 'GET' && (parts[0] === 'thumb' || parts[0] === 'image') && parts.length === 3) {
      const view = await rowOf(parts[1]);
      const image = await imageOf(view, parts[2]!);
      const bytes = parts[0] === 'thumb' ? await thumbnail(storage, image.identity, image.load, image.check) : await image.load();
      // An image's URL names a row and a slot whose content a redo replaces: revalidate each time.
      res.writeHead(200, {
        'content-type': parts[0] === 'thumb' ? 'image/webp' : sniffImageType(bytes, 'application/octet-stream'),
        'cache-control': 'no-cache',
      });
      res.end(bytes);
      return;
    }
    if (req.method === 'POST' && parts[0] === 'api' && parts[1] === 'review' && parts.length === 3) {
      const body = await readJsonBody<{ verdict?: unknown; reason?: unknown }>(req);
      const view = await rowOf(parts[2]);
      const { verdict, reason } = verdictOf(body);
      if (view.status !== 'ok' || !view.entry) throw new HttpError(409, `row ${view.row.index} has no output to judge (${view.status})`);
      await markRows([view], verdict, reason);
      sendJson(res, 200, { index: view.row.index, review: verdict, ...(reason ? { reason } : {}) });
      return;
    }
    // Every row a filter shows, in one request. The page sends the filter and how many rows it
    // showed; the rows are picked again from a fresh read, and a different count (the run moved on
    // meanwhile) is refused rather than marking rows the person did not see.
    if (req.method === 'POST' && url.pathname === '/api/review') {
      const body = await readJsonBody<{ verdict?: unknown; reason?: unknown; filter?: unknown; expect?: unknown }>(req);
      const { verdict, reason } = verdictOf(body);
      if (typeof body.filter !== 'object' || body.filter === null || Array.isArray(body.filter))
        throw new HttpError(400, 'filter must be an object (the fields of /api/rows)');
      if (!Number.isSafeInteger(body.expect)) throw new HttpError(400, 'expect must be the number of rows the filter showed');
      const filter = parseFilter(body.filter as Record<string, unknown>);
      const shown = matching((await readAll()).values(), filter);
      if (shown.length !== body.expect)
        throw new HttpError(409, `the filter now shows ${shown.length} row(s), not ${String(body.expect)}: the run changed; look again`);
      const done = shown.filter((r) => r.view.status === 'ok' && r.view.entry).map((r) => r.view);
      await markRows(done, verdict, reason);
      sendJson(res, 200, { marked: done.length, skipped: shown.length - done.length, review: verdict, ...(reason ? { reason } : {}) });
      return;
    }
    throw new HttpError(404, `no such page: ${req.method} ${url.pathname}`);
  };

  let host = '';
  const server: Server = createServer((req, res) => {
    handle(req, res, host).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (!res.headersSent) sendJson(res, status, { error: (err as Error).message });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  // Read the run now: a person opens the URL seconds later, and a large run's first read is the
  // slowest thing the viewer does. A failure here is met again, and answered, by the first request.
  readAll().catch(() => undefined);
  return {
    url: `http://${host}/`,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      // Marks made just before Ctrl-C still reach the tables.
      clearTimeout(resultsTimer);
      if (marksPending || resultsWrite) await rewriteResults();
    },
  };
}
