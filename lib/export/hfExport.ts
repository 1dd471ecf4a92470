import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import { openStorage } from '../../storage';
import { childLocation, readPlanMeta, type ImageRef, type PlanMeta } from '../run/plan';
import { replacedSince } from '../run/outputDigest';
import { layout } from '../run/runStore';
import { imageProblem, readSource } from '../images';
import { ArrowTableWriter } from './arrowTable';
import { WebDatasetWriter } from './webdatasetTable';
import { stageOut } from './stagedOut';
import { huggingfaceMetadata, inferKind, ParquetTableWriter, type ColumnKind, type ImageCell, type TableColumn } from './parquetTable';
import { exportResultColumns } from '../run/resultsSchema';
import { runRows, type RunRowView } from '../run/runRows';
import { ClassifiedError, ExportError, UsageError } from '../shared/errors';

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

/**
 * hf: Parquet shards in the Hub's layout; arrow: `datasets`' save_to_disk folder (Arrow stream
 * files); webdataset: `.tar` shards, a sample per row.
 */
export type ExportFormat = 'hf' | 'arrow' | 'webdataset';

export interface HfExportOptions {
  format?: ExportFormat;
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
  /**
   * Rows exported without an input image (or mask) that could not be read or did not decode as an
   * image: failed rows whose file is gone or is not a picture, mostly.
   */
  unreadableInputs: UnreadableInput[];
}

export interface UnreadableInput {
  index: number;
  where: string;
  message: string;
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
  'review_reason',
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
    ...exportResultColumns(shape.scored),
  ];
}

function imageName(ref: ImageRef): string | null {
  return ref.kind === 'file'
    ? basename(ref.source)
    : ref.kind === 'url' || ref.kind === 's3'
      ? basename(new URL(ref.source).pathname) || null
      : null;
}

const describeRef = (ref: ImageRef): string => (ref.kind === 'data' ? 'data: URI' : ref.source);

/**
 * Reads an input image for an export, decoded first: one that cannot be read or is not an image is
 * left out and reported, not fatal (the row keeps its other columns). Only images are published.
 */
async function readInput(
  ref: ImageRef,
  sources: Parameters<typeof readSource>[1],
  row: { index: number; where: string },
  unreadable: UnreadableInput[],
): Promise<ImageCell | undefined> {
  try {
    const bytes = await readSource(ref, sources);
    const problem = await imageProblem(bytes);
    if (problem) {
      unreadable.push({ index: row.index, where: row.where, message: `input image ${describeRef(ref)} is left out: ${problem}` });
      return undefined;
    }
    return { bytes, path: imageName(ref) };
  } catch (err) {
    const message =
      err instanceof ClassifiedError ? err.message : `input image ${describeRef(ref)} cannot be read: ${(err as Error).message}`;
    unreadable.push({ index: row.index, where: row.where, message });
    return undefined;
  }
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
  const format = options.format ?? 'hf';
  // Written beside --out and renamed into place whole (lib/export/stagedOut.ts).
  const staged = await stageOut(out, format === 'hf' ? 'data' : '');
  const dir = staged.dir;
  const unreadableInputs: UnreadableInput[] = [];
  const columns = columnsOf(shape);
  const storage = openStorage(outputDir);
  const sources = { cacheDir: options.imageCacheDir ?? childLocation(outputDir, layout.imageCache), runDir: outputDir };
  const shardBytes = options.shardBytes ?? 256 * 1024 * 1024;
  const temp: string[] = [];
  let writer: ParquetTableWriter | ArrowTableWriter | WebDatasetWriter | undefined;
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
        const part = `.part-${temp.length}`;
        const path = format === 'hf' ? join(dir, 'data', `${part}.parquet`) : join(dir, `${part}.${format === 'arrow' ? 'arrow' : 'tar'}`);
        temp.push(path);
        writer =
          format === 'hf'
            ? new ParquetTableWriter(path, columns, { huggingface: true })
            : format === 'arrow'
              ? new ArrowTableWriter(path, columns)
              : new WebDatasetWriter(path, columns);
        bytesInShard = 0;
      }
      const { row, entry } = view;
      const inputs: ImageCell[] = [];
      const unreadableBefore = unreadableInputs.length;
      for (const ref of row.images) {
        const cell = await readInput(ref, sources, row, unreadableInputs);
        if (cell) inputs.push(cell);
      }
      const outputs: ImageCell[] = [];
      for (const path of view.status === 'ok' ? (entry?.outputImages ?? []) : []) {
        const bytes = await storage.read(path).catch((err: Error) => {
          throw new ExportError(`row ${row.index}: output ${storage.describe(path)} cannot be read: ${err.message}`);
        });
        if (!bytes)
          throw new ExportError(`row ${row.index}: output ${storage.describe(path)} is missing although its ledger entry says ok`);
        const problem = (await imageProblem(bytes)) ?? replacedSince(bytes, entry?.outputDigests?.[path]);
        if (problem)
          throw new ExportError(
            `row ${row.index}: output ${storage.describe(path)} is not an image to publish: ${problem}; make it again (\`atelier retry ${meta.runId} --redo --rows ${row.position}\`) or export without it (--only)`,
          );
        outputs.push({ bytes, path: basename(path) });
      }
      const mask = row.mask ? ((await readInput(row.mask, sources, row, unreadableInputs)) ?? null) : null;
      // One report per row, however many of its images are missing.
      if (unreadableInputs.length > unreadableBefore + 1) unreadableInputs.splice(unreadableBefore + 1);
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
        review_reason: view.review?.reason ?? null,
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
    // Names say how many shards there are, which is known only now.
    const shards: string[] = [];
    const of = String(temp.length).padStart(5, '0');
    for (const [i, path] of temp.entries()) {
      const n = String(i).padStart(5, '0');
      const name =
        format === 'hf'
          ? join(dir, 'data', `train-${n}-of-${of}.parquet`)
          : format === 'arrow'
            ? join(dir, `data-${n}-of-${of}.arrow`)
            : join(dir, `shard-${String(i).padStart(6, '0')}.tar`);
      await rename(path, name);
      shards.push(name);
    }
    if (format === 'arrow') await writeArrowFolderFiles(dir, columns, shards);
    await staged.publish({
      format,
      runId: meta.runId,
      only: describeOnly(only),
      rows: shape.rows,
      // Rows published without an input image that could not be read or is no image (reasons: the command's stderr).
      inputsLeftOut: unreadableInputs.map(({ index, where }) => ({ index, where })),
      exportedAt: new Date().toISOString(),
    });
    return { rows: shape.rows, shards: shards.map((s) => join(out, relative(dir, s))), columns, unreadableInputs };
  } catch (err) {
    await staged.discard();
    throw err;
  }
}

/** The two JSON files that make a folder of Arrow files a dataset `datasets.load_from_disk` opens. */
async function writeArrowFolderFiles(out: string, columns: TableColumn[], shards: string[]): Promise<void> {
  const { features } = (JSON.parse(huggingfaceMetadata(columns)) as { info: { features: unknown } }).info;
  const info = { citation: '', description: '', features, homepage: '', license: '' };
  await writeFile(join(out, 'dataset_info.json'), `${JSON.stringify(info, null, 2)}\n`);
  const state = {
    _data_files: shards.map((s) => ({ filename: basename(s) })),
    // datasets caches transforms by fingerprint; a random one, as `datasets` gives a new dataset.
    _fingerprint: randomBytes(8).toString('hex'),
    _format_columns: null,
    _format_kwargs: {},
    _format_type: null,
    _output_all_columns: false,
    _split: null,
  };
  await writeFile(join(out, 'state.json'), `${JSON.stringify(state, null, 2)}\n`);
}
