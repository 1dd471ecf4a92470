import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { openStorage } from '../../storage';
import { childLocation, readPlanMeta, type ImageRef, type PlanMeta } from '../run/plan';
import { runMetaKey } from '../shared/constants';
import { readSource } from '../images';
import { inferKind, ParquetTableWriter, type ColumnKind, type ImageCell, type TableColumn } from './parquetTable';
import { runRows, type RunRowView } from '../run/runRows';
import { UsageError } from '../shared/errors';

// `atelier export --format hf`: a run as a Hugging Face dataset. Parquet shards in the Hub's layout
// (`data/train-00000-of-00002.parquet`), input and output images embedded as Image features, so
// `datasets.load_dataset(<dir>)` gives decoded images with no path to resolve, anywhere.

/** Which rows go in: every row, ok rows, ok rows a person accepted in the viewer, or ok rows the judge scored at least so much. */
export type ExportOnly = 'all' | 'ok' | 'accepted' | { minScore: number };

export function parseExportOnly(value: string | undefined): ExportOnly {
  if (value === undefined || value === 'all') return 'all';
  if (value === 'ok' || value === 'accepted') return value;
  const score = /^score>=(\d+(?:\.\d+)?)$/.exec(value.replace(/\s+/g, ''));
  if (score && Number(score[1]) <= 10) return { minScore: Number(score[1]) };
  throw new UsageError(`--only ${value}: expected ok, accepted or score>=X (X from 0 to 10; or all, the default)`);
}

export function describeOnly(only: ExportOnly): string {
  return typeof only === 'string' ? only : `score>=${only.minScore}`;
}

export interface HfExportOptions {
  outputDir: string;
  out: string;
  only: ExportOnly;
  /** A new shard starts once the current one holds this many bytes of images (default 256 MB). */
  shardBytes?: number;
  /** Where downloaded input images were cached (default: the run's own cache). */
  imageCacheDir?: string;
}

export interface HfExportResult {
  rows: number;
  shards: string[];
  columns: TableColumn[];
}

/** Columns the export adds; an input column with one of these names is kept as `input_<name>`. */
const OWN_COLUMNS = new Set([
  'index',
  'instruction',
  'instructions',
  'instruction_enhanced',
  'input_image',
  'input_images',
  'mask_image',
  'output_image',
  'output_images',
  'status',
  'error',
  'attempts',
  'latency_ms',
  'cost_usd',
  'review',
  'score',
  'score_instruction_following',
  'score_preservation',
  'score_quality',
  'score_reason',
  'judge_model',
]);

const ROWS_PER_GROUP = 64;

function wanted(view: RunRowView, only: ExportOnly): boolean {
  if (only === 'all') return true;
  if (only === 'ok') return view.status === 'ok';
  if (only === 'accepted') return view.status === 'ok' && view.review?.verdict === 'accepted';
  return view.status === 'ok' && view.score !== undefined && view.score.scores.overall >= only.minScore;
}

/** The shape of the export, from a first pass over the plan and ledger (no image is read). */
interface ExportShape {
  inputColumns: Array<{ source: string; name: string; kind: ColumnKind }>;
  multiTurn: boolean;
  manyInputs: boolean;
  anyMask: boolean;
  manyOutputs: boolean;
  enhanced: boolean;
  scored: boolean;
  rows: number;
}

async function exportShape(outputDir: string, meta: PlanMeta, only: ExportOnly): Promise<ExportShape> {
  // The image and instruction columns become the export's own image and instruction columns.
  const replaced = new Set([meta.imageKey, meta.instructionKey].filter((c): c is string => Boolean(c)));
  const values = new Map<string, unknown[]>();
  const sources = meta.columns.filter((c) => !replaced.has(c));
  for (const c of sources) values.set(c, []);
  const shape: ExportShape = {
    inputColumns: [],
    multiTurn: false,
    manyInputs: false,
    anyMask: false,
    manyOutputs: false,
    enhanced: false,
    scored: false,
    rows: 0,
  };
  for await (const view of runRows(outputDir, meta)) {
    if (!wanted(view, only)) continue;
    shape.rows += 1;
    const { row, entry } = view;
    shape.multiTurn ||= row.turns.length > 1;
    shape.manyInputs ||= row.images.length > 1;
    shape.anyMask ||= row.mask !== undefined;
    shape.manyOutputs ||= row.outputs.length > 1;
    shape.enhanced ||= entry?.instructionEnhanced !== undefined;
    shape.scored ||= view.score !== undefined;
    for (const c of sources) values.get(c)!.push(row.record[c]);
  }
  shape.inputColumns = sources.map((source) => ({
    source,
    name: OWN_COLUMNS.has(source) ? `input_${source}` : source,
    kind: inferKind(values.get(source)!),
  }));
  return shape;
}

function columnsOf(shape: ExportShape): TableColumn[] {
  return [
    { name: 'index', kind: 'int' },
    shape.multiTurn ? { name: 'instructions', kind: 'stringList' } : { name: 'instruction', kind: 'string' },
    ...(shape.enhanced ? [{ name: 'instruction_enhanced', kind: 'string' } as const] : []),
    shape.manyInputs ? { name: 'input_images', kind: 'imageList' } : { name: 'input_image', kind: 'image' },
    ...(shape.anyMask ? [{ name: 'mask_image', kind: 'image' } as const] : []),
    shape.manyOutputs ? { name: 'output_images', kind: 'imageList' } : { name: 'output_image', kind: 'image' },
    ...shape.inputColumns.map(({ name, kind }) => ({ name, kind })),
    { name: 'status', kind: 'string' },
    { name: 'error', kind: 'string' },
    { name: 'attempts', kind: 'int' },
    { name: 'latency_ms', kind: 'int' },
    { name: 'cost_usd', kind: 'double' },
    { name: 'review', kind: 'string' },
    ...(shape.scored
      ? ([
          { name: 'score', kind: 'double' },
          { name: 'score_instruction_following', kind: 'double' },
          { name: 'score_preservation', kind: 'double' },
          { name: 'score_quality', kind: 'double' },
          { name: 'score_reason', kind: 'string' },
          { name: 'judge_model', kind: 'string' },
        ] as const)
      : []),
  ];
}

function imageName(ref: ImageRef): string | null {
  return ref.kind === 'file'
    ? basename(ref.source)
    : ref.kind === 'url' || ref.kind === 's3'
      ? basename(new URL(ref.source).pathname) || null
      : null;
}

/** Refuses to write into a folder that holds anything: an export never mixes with other files. */
async function prepareOut(out: string): Promise<void> {
  const info = await stat(out).catch(() => undefined);
  if (info && !info.isDirectory()) throw new UsageError(`--out ${out} is a file, not a folder`);
  if (info && (await readdir(out)).length > 0) throw new UsageError(`--out ${out} is not empty; give a new or empty folder`);
  await mkdir(join(out, 'data'), { recursive: true });
}

export async function exportHf(options: HfExportOptions): Promise<HfExportResult> {
  const { outputDir, out, only } = options;
  if (out.startsWith('s3://'))
    throw new UsageError('--out must be a local folder (an s3:// export is not built); upload the folder afterwards');
  const meta = await readPlanMeta(outputDir);
  const shape = await exportShape(outputDir, meta, only);
  if (shape.rows === 0)
    throw new UsageError(
      `no row of ${outputDir} matches --only ${describeOnly(only)}: nothing to export${typeof only === 'object' ? ' (scores come from `atelier judge`)' : ''}`,
    );
  await prepareOut(out);
  const columns = columnsOf(shape);
  const storage = openStorage(outputDir);
  const sources = { cacheDir: options.imageCacheDir ?? childLocation(outputDir, runMetaKey('image-cache')), runDir: outputDir };
  const shardBytes = options.shardBytes ?? 256 * 1024 * 1024;
  const temp: string[] = [];
  let writer: ParquetTableWriter | undefined;
  let bytesInShard = 0;
  let batch: Array<Record<string, unknown>> = [];

  const flush = async () => {
    const rows = batch;
    batch = [];
    await writer!.write(rows, ROWS_PER_GROUP);
  };
  try {
    for await (const view of runRows(outputDir, meta)) {
      if (!wanted(view, only)) continue;
      if (!writer) {
        const path = join(out, 'data', `.part-${temp.length}.parquet`);
        temp.push(path);
        writer = new ParquetTableWriter(path, columns, { huggingface: true });
        bytesInShard = 0;
      }
      const { row, entry } = view;
      const inputs: ImageCell[] = [];
      for (const ref of row.images) {
        const bytes = await readSource(ref, sources).catch((err: Error) => {
          throw new Error(
            `row ${row.index} (${row.where}): input image ${ref.kind === 'data' ? 'data: URI' : ref.source} cannot be read: ${err.message}`,
          );
        });
        inputs.push({ bytes, path: imageName(ref) });
      }
      const outputs: ImageCell[] = [];
      for (const path of view.status === 'ok' ? (entry?.outputImages ?? []) : []) {
        const bytes = await storage.read(path);
        if (!bytes) throw new Error(`row ${row.index}: output ${storage.describe(path)} is missing although its ledger entry says ok`);
        outputs.push({ bytes, path: basename(path) });
      }
      const mask = row.mask ? { bytes: await readSource(row.mask, sources), path: imageName(row.mask) } : null;
      const record: Record<string, unknown> = {
        index: row.index,
        [shape.multiTurn ? 'instructions' : 'instruction']: shape.multiTurn ? row.turns : (row.turns[0] ?? null),
        instruction_enhanced: entry?.instructionEnhanced ?? null,
        [shape.manyInputs ? 'input_images' : 'input_image']: shape.manyInputs ? inputs : (inputs[0] ?? null),
        mask_image: mask,
        // A multi-turn row's one output image is its last turn's.
        [shape.manyOutputs ? 'output_images' : 'output_image']: shape.manyOutputs ? outputs : (outputs.at(-1) ?? null),
        status: view.status === 'changed' ? 'pending' : view.status,
        error: view.error ?? null,
        attempts: entry?.attempts ?? null,
        latency_ms: entry?.latencyMs ?? null,
        cost_usd: entry?.costUsd ?? null,
        review: view.review?.verdict ?? null,
        score: view.score?.scores.overall ?? null,
        score_instruction_following: view.score?.scores.instructionFollowing ?? null,
        score_preservation: view.score?.scores.preservation ?? null,
        score_quality: view.score?.scores.quality ?? null,
        score_reason: view.score?.reason ?? null,
        judge_model: view.score?.model ?? null,
      };
      for (const c of shape.inputColumns) record[c.name] = row.record[c.source];
      batch.push(record);
      bytesInShard += inputs.reduce((n, i) => n + i.bytes.length, 0) + outputs.reduce((n, o) => n + o.bytes.length, 0);
      if (batch.length >= ROWS_PER_GROUP) await flush();
      if (bytesInShard >= shardBytes) {
        if (batch.length) await flush();
        await writer.finish();
        writer = undefined;
      }
    }
    if (writer) {
      if (batch.length) await flush();
      await writer.finish();
    }
  } catch (err) {
    await rm(join(out, 'data'), { recursive: true, force: true });
    throw err;
  }
  // Names say how many shards there are, which is known only now.
  const shards: string[] = [];
  const of = String(temp.length).padStart(5, '0');
  for (const [i, path] of temp.entries()) {
    const name = join(out, 'data', `train-${String(i).padStart(5, '0')}-of-${of}.parquet`);
    await rename(path, name);
    shards.push(name);
  }
  return { rows: shape.rows, shards, columns };
}
