import { createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import { writeFileAtomic } from './atomicFile';
import { RUN_META_DIR } from './constants';
import type { OutputTarget } from './outputNames';

// The plan is the dataset normalised into one JSON line per row, plus a fixed-width offset index so
// any row can be read by position without scanning. Workflows carry positions and counts; the rows
// themselves stay on disk next to the outputs, where every worker of the run can read them.

export interface ImageRef {
  kind: 'file' | 'url' | 'data';
  /** Absolute path for files, the URL for urls, the data: URI for inline images. */
  source: string;
}

export interface PlanRow {
  position: number;
  index: number;
  /** Where the row came from, for messages: `data.csv line 5`. */
  where: string;
  /** Instructions in order; several for a multi-turn row. */
  turns: string[];
  /** Input images; none for a text-to-image row. */
  images: ImageRef[];
  /** Edit mask for the first image (--mask-key). */
  mask?: ImageRef;
  /** Where the row's outputs go (one per image or per turn). */
  outputs: OutputTarget[];
  /** A problem found while planning (bad output name, say): the row fails with it, no provider call. */
  plannedError?: string;
  /** The input record as read (JSON-safe), for the results tables. */
  record: Record<string, unknown>;
}

export interface PlanMeta {
  runId: string;
  inputPath: string;
  totalRows: number;
  /** Rows the run's --filter-rows selects. */
  selectedRows: number;
  /** Input columns in their original order. */
  columns: string[];
  imageKey: string | undefined;
  instructionKey: string;
}

export function runMetaDir(outputDir: string): string {
  return join(outputDir, RUN_META_DIR);
}

function planPaths(outputDir: string): { rows: string; index: string; meta: string } {
  const dir = runMetaDir(outputDir);
  return { rows: join(dir, 'plan.jsonl'), index: join(dir, 'plan.idx'), meta: join(dir, 'plan.json') };
}

const OFFSET_BYTES = 8;

/** Streams rows into a new plan; nothing replaces the current plan until `commit`. */
export class PlanWriter {
  private readonly paths: ReturnType<typeof planPaths>;
  private readonly suffix = `.tmp-${process.pid}`;
  private rowsStream!: ReturnType<typeof createWriteStream>;
  private offsets: number[] = [0];
  private bytes = 0;
  private pending: string[] = [];
  private pendingBytes = 0;

  constructor(private readonly outputDir: string) {
    this.paths = planPaths(outputDir);
  }

  async open(): Promise<void> {
    await mkdir(runMetaDir(this.outputDir), { recursive: true });
    this.rowsStream = createWriteStream(this.paths.rows + this.suffix);
  }

  get count(): number {
    return this.offsets.length - 1;
  }

  async add(row: PlanRow): Promise<void> {
    const line = `${JSON.stringify(row)}\n`;
    const size = Buffer.byteLength(line);
    this.bytes += size;
    this.offsets.push(this.bytes);
    // Lines are written in chunks: one stream write per row costs more than the row itself.
    this.pending.push(line);
    this.pendingBytes += size;
    if (this.pendingBytes >= 1 << 20) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    const chunk = this.pending.join('');
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.rowsStream.write(chunk)) await once(this.rowsStream, 'drain');
  }

  async commit(meta: Omit<PlanMeta, 'totalRows'>): Promise<PlanMeta> {
    if (this.rowsStream.destroyed) throw new Error('plan writer was aborted');
    await this.flush();
    this.rowsStream.end();
    await once(this.rowsStream, 'finish');
    const index = Buffer.alloc(this.offsets.length * OFFSET_BYTES);
    this.offsets.forEach((offset, i) => index.writeBigUInt64LE(BigInt(offset), i * OFFSET_BYTES));
    await writeFileAtomic(this.paths.index + this.suffix, index);
    await rename(this.paths.rows + this.suffix, this.paths.rows);
    await rename(this.paths.index + this.suffix, this.paths.index);
    const full: PlanMeta = { ...meta, totalRows: this.count };
    await writeFileAtomic(this.paths.meta, JSON.stringify(full, null, 2));
    return full;
  }

  async abort(): Promise<void> {
    this.rowsStream?.destroy();
    await rm(this.paths.rows + this.suffix, { force: true });
    await rm(this.paths.index + this.suffix, { force: true });
  }
}

export async function readPlanMeta(outputDir: string): Promise<PlanMeta> {
  return JSON.parse(await readFile(planPaths(outputDir).meta, 'utf8')) as PlanMeta;
}

/** Reads `count` rows starting at `start` (clamped to the plan's end). */
export async function readPlanRows(outputDir: string, start: number, count: number): Promise<PlanRow[]> {
  const paths = planPaths(outputDir);
  const idx = await open(paths.index, 'r');
  let first: number;
  let last: number;
  let offsets: Buffer;
  try {
    const { size } = await idx.stat();
    const total = size / OFFSET_BYTES - 1;
    if (start >= total || count <= 0) return [];
    const end = Math.min(total, start + count);
    offsets = Buffer.alloc((end - start + 1) * OFFSET_BYTES);
    await idx.read(offsets, 0, offsets.length, start * OFFSET_BYTES);
    first = Number(offsets.readBigUInt64LE(0));
    last = Number(offsets.readBigUInt64LE((end - start) * OFFSET_BYTES));
  } finally {
    await idx.close();
  }
  const rowsFile = await open(paths.rows, 'r');
  try {
    const chunk = Buffer.alloc(last - first);
    await rowsFile.read(chunk, 0, chunk.length, first);
    return chunk
      .toString('utf8')
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => JSON.parse(line) as PlanRow);
  } finally {
    await rowsFile.close();
  }
}

export async function readPlanRow(outputDir: string, position: number): Promise<PlanRow> {
  const [row] = await readPlanRows(outputDir, position, 1);
  if (!row) throw new Error(`row position ${position} is not in the plan of ${outputDir}`);
  return row;
}

/** Every row of the plan, in order, read a chunk at a time. */
export async function* allPlanRows(outputDir: string, chunk = 1000): AsyncGenerator<PlanRow> {
  const { totalRows } = await readPlanMeta(outputDir);
  for (let start = 0; start < totalRows; start += chunk) yield* await readPlanRows(outputDir, start, chunk);
}
