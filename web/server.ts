import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { openStorage, type Storage } from '../storage';
import { layout } from '../lib/run/runStore';
import { imageProblem, readSource, sniffImageType } from '../lib/images';
import { childLocation, readPlanMeta } from '../lib/run/plan';
import { clearReviewMark, isVerdict, writeReviewMark } from '../lib/run/review';
import { runRows, type RunRowView } from '../lib/run/runRows';
import { viewerPage } from './page';
import { thumbnail } from './thumbnails';

// `atelier view`: one run's rows in a browser, served on loopback by node:http. The page is one
// HTML document with its script inline (web/page.ts): no front-end build. It polls /api/rows, so a
// run in progress fills in as rows finish. Marks are the only writes, each one object per row
// (lib/run/review.ts), and only from this page: requests must name this server as their Host (no DNS
// rebinding) and carry JSON (no cross-site form posts).

export interface ViewerOptions {
  outputDir: string;
  /** 0 picks a free port. */
  port?: number;
  /** How the page tells a person to redo rejected rows (the run id's CLI command). */
  runId: string;
}

export interface Viewer {
  url: string;
  close(): Promise<void>;
}

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
  attempts?: number;
  latencyMs?: number;
  costUsd?: number;
  requestId?: string;
  enhanced?: string;
  review?: 'accepted' | 'rejected';
  /** The judge's scores of the current output (`atelier judge`). */
  score?: { overall: number; instructionFollowing: number; preservation: number | null; quality: number; reason: string; model: string };
  /** 2 and up for a row made again (`retry --redo`); earlier outputs in `history`. */
  generation?: number;
  history?: Array<{ generation: number; reason: string; costUsd?: number }>;
  where: string;
}

const ROWS_CACHE_MS = 1000;

function summaryOf(view: RunRowView): RowSummary {
  const { row, entry } = view;
  return {
    index: row.index,
    position: row.position,
    // A row whose request changed since its output was made is waiting to be done again.
    status: view.status === 'changed' ? 'pending' : view.status,
    ...(view.errorType ? { errorType: view.errorType, error: view.error! } : {}),
    turns: row.turns,
    inputs: row.images.length,
    outputs: view.status === 'ok' ? (entry?.outputImages ?? []) : [],
    ...(entry?.attempts !== undefined ? { attempts: entry.attempts } : {}),
    ...(entry?.latencyMs !== undefined ? { latencyMs: entry.latencyMs } : {}),
    ...(entry?.costUsd !== undefined ? { costUsd: entry.costUsd } : {}),
    ...(entry?.requestIds?.length ? { requestId: entry.requestIds.at(-1)! } : {}),
    ...(entry?.instructionEnhanced ? { enhanced: entry.instructionEnhanced } : {}),
    ...(view.review ? { review: view.review.verdict } : {}),
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
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

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
  let cached: { at: number; rows: Map<number, RunRowView> } | undefined;

  /** Every row's state, re-read at most once a second however many pages poll. */
  const allRows = async (): Promise<Map<number, RunRowView>> => {
    if (cached && Date.now() - cached.at < ROWS_CACHE_MS) return cached.rows;
    const rows = new Map<number, RunRowView>();
    for await (const view of runRows(outputDir, meta)) rows.set(view.row.index, view);
    cached = { at: Date.now(), rows };
    return rows;
  };

  const rowOf = async (raw: string | undefined): Promise<RunRowView> => {
    const index = Number(raw);
    const view = Number.isSafeInteger(index) ? (await allRows()).get(index) : undefined;
    if (!view) throw new HttpError(404, `no row with index ${raw}`);
    return view;
  };

  /** An image of a row: `in0`, `in1`, ..., `mask`, `out0`, `out1`, ...; its bytes and an identity for caching. */
  const imageOf = async (view: RunRowView, which: string): Promise<{ identity: string; load: () => Promise<Buffer> }> => {
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
      const path = view.status === 'ok' ? view.entry?.outputImages?.[Number(match[2])] : undefined;
      if (!path) throw new HttpError(404, `row ${view.row.index} has no output image ${match[2]}`);
      return {
        identity: `out:${path}:${view.entry!.finishedAt}`,
        load: async () => {
          const bytes = await storage.read(path);
          if (!bytes) throw new HttpError(404, `output ${path} is missing`);
          return bytes;
        },
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
      const rows = [...(await allRows()).values()].map(summaryOf);
      sendJson(res, 200, { runId: options.runId, outputDir, inputPath: meta.inputPath, totalRows: meta.totalRows, rows });
      return;
    }
    if (req.method === 'GET' && (parts[0] === 'thumb' || parts[0] === 'image') && parts.length === 3) {
      const view = await rowOf(parts[1]);
      const image = await imageOf(view, parts[2]!);
      const bytes = parts[0] === 'thumb' ? await thumbnail(storage, image.identity, image.load) : await image.load();
      // An image's URL names a row and a slot whose content a redo replaces: revalidate each time.
      res.writeHead(200, {
        'content-type': parts[0] === 'thumb' ? 'image/webp' : sniffImageType(bytes, 'application/octet-stream'),
        'cache-control': 'no-cache',
      });
      res.end(bytes);
      return;
    }
    if (req.method === 'POST' && parts[0] === 'api' && parts[1] === 'review' && parts.length === 3) {
      if (!/^application\/json\b/.test(req.headers['content-type'] ?? '')) throw new HttpError(415, 'send JSON');
      const view = await rowOf(parts[2]);
      let body: { verdict?: unknown };
      try {
        body = JSON.parse(await readBody(req)) as { verdict?: unknown };
      } catch {
        throw new HttpError(400, 'the body is not JSON');
      }
      if (body.verdict !== null && !isVerdict(body.verdict)) throw new HttpError(400, 'verdict must be "accepted", "rejected" or null');
      if (view.status !== 'ok' || !view.entry) throw new HttpError(409, `row ${view.row.index} has no output to judge (${view.status})`);
      if (body.verdict === null) await clearReviewMark(outputDir, view.row.index);
      else {
        await writeReviewMark(outputDir, {
          index: view.row.index,
          verdict: body.verdict,
          outputImages: view.entry.outputImages ?? [],
          entryFinishedAt: view.entry.finishedAt,
          at: new Date().toISOString(),
        });
      }
      cached = undefined;
      sendJson(res, 200, { index: view.row.index, review: body.verdict });
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
  return {
    url: `http://${host}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
