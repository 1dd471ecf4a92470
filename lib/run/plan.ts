import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStorage } from '../../storage';
import type { DatasetRow } from '../dataset/common';
import type { OutputTarget } from './outputNames';
import type { InputIdentity } from './records';
import { layout, RunStore } from './runStore';

export type { ImageRef } from '../dataset/common';

// The plan is the dataset normalised into one JSON line per row, plus a fixed-width offset index so
// any row can be read by position without scanning. Workflows carry positions and counts; the rows
// themselves stay in the run's storage next to the outputs (a local folder or an S3 prefix), where
// every worker of the run can read them: one row is two ranged reads.

/** A row of the plan: the dataset row as read, plus what planning decided for it. */
export interface PlanRow extends DatasetRow {
  /** Where the row's outputs go (one per image or per turn). */
  outputs: OutputTarget[];
  /** A problem found while planning (bad output name, say): the row fails with it, no provider call. */
  plannedError?: string;
  /**
   * What the row asks for (model, parameters, instructions, inputs and the inputs' sizes and
   * modification times), hashed: a ledger entry made for another digest is stale (lib/run/rowDigest.ts).
   */
  digest?: string;
  /** Each S3 input image's ETag and size when planned (part of `digest`); the row's entry records them. */
  inputs?: Record<string, InputIdentity>;
  /**
   * Planning found the row done (its ledger entry ok for this digest, its outputs there): the run's
   * first pass over the plan dispatches it without reading its ledger entry again.
   */
  doneAtPlanning?: boolean;
}

/** A plan row as a row task carries it: what the row activity needs (the input record stays in the plan). */
export type TaskPlanRow = Omit<PlanRow, 'record' | 'doneAtPlanning'>;

/** Largest plan row a row task carries (its JSON); a larger one is read by the activity, as before. */
const TASK_ROW_BYTES = 2048;

/**
 * The row for its task, when it is small and holds no inline image (task inputs sit in the run's
 * history: references, never image bytes); undefined otherwise.
 */
export function taskPlanRow(row: PlanRow): TaskPlanRow | undefined {
  const { record: _record, doneAtPlanning: _done, ...rest } = row;
  if ([...rest.images, ...(rest.mask ? [rest.mask] : [])].some((ref) => ref.kind === 'data')) return undefined;
  return JSON.stringify(rest).length <= TASK_ROW_BYTES ? rest : undefined;
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
  /** The commit an hf:// input was read at: planning the run again reads this commit (lib/dataset/hub.ts). */
  inputCommit?: string;
}

/** A location below another: a path joined on a disk, a longer prefix in a bucket. */
export function childLocation(location: string, key: string): string {
  return location.startsWith('s3://') ? `${location.replace(/\/+$/, '')}/${key}` : join(location, ...key.split('/'));
}

const PLAN_KEYS = layout.plan;

const OFFSET_BYTES = 8;

/**
 * Streams rows into a new plan in a local temp folder; nothing replaces the run's current plan
 * until `commit` stores it (rows, then the index, then the meta that names the row count).
 */
export class PlanWriter {
  private temp!: string;
  private rowsStream!: ReturnType<typeof createWriteStream>;
  private offsets: number[] = [0];
  private bytes = 0;
  private pending: string[] = [];
  private pendingBytes = 0;

  constructor(private readonly outputDir: string) {}

  async open(): Promise<void> {
    this.temp = await mkdtemp(join(tmpdir(), 'atelier-plan-'));
    this.rowsStream = createWriteStream(join(this.temp, 'plan.jsonl'));
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
    const storage = openStorage(this.outputDir);
    try {
      await storage.writeFromFile(PLAN_KEYS.rows, join(this.temp, 'plan.jsonl'));
      await writeFile(join(this.temp, 'plan.idx'), index);
      await storage.writeFromFile(PLAN_KEYS.index, join(this.temp, 'plan.idx'));
      const full: PlanMeta = { ...meta, totalRows: this.count };
      await storage.write(PLAN_KEYS.meta, JSON.stringify(full, null, 2));
      return full;
    } finally {
      await rm(this.temp, { recursive: true, force: true });
    }
  }

  async abort(): Promise<void> {
    this.rowsStream?.destroy();
    if (this.temp) await rm(this.temp, { recursive: true, force: true });
  }
}

export async function readPlanMeta(outputDir: string): Promise<PlanMeta> {
  const bytes = await openStorage(outputDir).read(PLAN_KEYS.meta);
  if (!bytes) throw new Error(`${openStorage(outputDir).describe(PLAN_KEYS.meta)} is missing: the run has no plan yet`);
  return JSON.parse(bytes.toString('utf8')) as PlanMeta;
}

/** The commit an earlier plan of this output dir read `inputPath` (an hf:// input) at, if it did. */
export async function pinnedInputCommit(outputDir: string, inputPath: string): Promise<string | undefined> {
  const bytes = await openStorage(outputDir).read(PLAN_KEYS.meta);
  const meta = bytes ? (JSON.parse(bytes.toString('utf8')) as Partial<PlanMeta>) : undefined;
  return meta?.inputPath === inputPath ? meta.inputCommit : undefined;
}

/** Reads `count` rows starting at `start` (clamped to the plan's end). */
export async function readPlanRows(outputDir: string, start: number, count: number): Promise<PlanRow[]> {
  return RunStore.open(outputDir).planRows(start, count);
}

export async function readPlanRow(outputDir: string, position: number): Promise<PlanRow> {
  return RunStore.open(outputDir).planRow(position);
}

/** Every row of the plan, in order, read a chunk at a time. */
export async function* allPlanRows(outputDir: string, chunk = 1000): AsyncGenerator<PlanRow> {
  const { totalRows } = await readPlanMeta(outputDir);
  for (let start = 0; start < totalRows; start += chunk) yield* await readPlanRows(outputDir, start, chunk);
}
