import { basename } from 'node:path';
import { DatasetError } from '../shared/errors';
import type { ImageRef } from '../run/plan';
import {
  IndexTracker,
  parseImageCell,
  pickImageKey,
  requireMaskColumn,
  toImageRef,
  type DatasetHeader,
  type DatasetReadOptions,
  type DatasetRow,
} from './common';

// Rows of typed tables (Parquet, `datasets`' Arrow files): image columns may hold paths/URLs, lists
// of them, or images embedded the way Hugging Face `datasets` stores them: a struct {bytes, path},
// or a list of such structs. Embedded bytes are written once, content-addressed, to the run's blob
// folder, and rows refer to those files.

const EXTRA_IMAGE_KEYS = ['images', 'input_image', 'source_image'];

function isEmbedded(value: unknown): value is { bytes?: unknown; path?: unknown } {
  return !!value && typeof value === 'object' && !Array.isArray(value) && ('bytes' in value || 'path' in value);
}

/** Image cell → refs (embedded bytes stored to the run's blobs) plus a printable form for the results. */
async function imageCell(
  value: unknown,
  file: string,
  where: string,
  options: DatasetReadOptions,
): Promise<{ refs: ImageRef[]; shown: string[] }> {
  if (value === null || value === undefined) return { refs: [], shown: [] };
  if (typeof value === 'string') {
    const items = parseImageCell(value, where);
    return { refs: items.map((v) => toImageRef(v, file, options, where)), shown: items };
  }
  const items = Array.isArray(value) ? value : [value];
  const refs: ImageRef[] = [];
  const shown: string[] = [];
  for (const item of items) {
    if (typeof item === 'string') {
      refs.push(toImageRef(item, file, options, where));
      shown.push(item);
    } else if (isEmbedded(item)) {
      if (item.bytes instanceof Uint8Array && item.bytes.byteLength > 0) {
        const ref = await options.storeBlob(item.bytes);
        refs.push(ref);
        shown.push(typeof item.path === 'string' && item.path ? item.path : `embedded:${basename(ref.source)}`);
      } else if (typeof item.path === 'string' && item.path) {
        refs.push(toImageRef(item.path, file, options, where));
        shown.push(item.path);
      } else {
        // An embedded image with neither bytes nor path: keep a ref that fails this row alone.
        refs.push({ kind: 'file', source: `${file}#${where}:empty-embedded-image` });
        shown.push('embedded:(empty)');
      }
    } else if (item !== null && item !== undefined) {
      throw new DatasetError(`${where}: cannot read an image from a ${typeof item} value`);
    }
  }
  return { refs, shown };
}

/** Values that JSON and CSV can carry: bytes are summarised, 64-bit integers kept exact. */
function jsonSafe(value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonSafe(v)]));
  return value;
}

/**
 * Turns the rows of one table after another into dataset rows: checks each table's columns against
 * the options (and the first table's image column), numbers rows across tables.
 */
export class TableRows {
  private readonly indexes = new IndexTracker();
  private header: DatasetHeader | undefined;
  position = 0;

  constructor(
    private readonly options: DatasetReadOptions,
    private readonly onHeader?: (header: DatasetHeader) => void,
  ) {}

  /** Checks a table's columns; answers its image column. `file` names the table in messages. */
  columns(columns: string[], file: string): string {
    const { options } = this;
    if (!columns.includes(options.instructionKey)) {
      throw new DatasetError(
        `${file}: no "${options.instructionKey}" column (set another with --instruction-key); columns are: ${columns.join(', ')}`,
      );
    }
    const imageKey = pickImageKey(columns, file, options.imageKey, EXTRA_IMAGE_KEYS);
    requireMaskColumn(columns, file, options.maskKey);
    if (!this.header) {
      this.header = { columns, imageKey, instructionKey: options.instructionKey };
      this.onHeader?.(this.header);
    } else if (this.header.imageKey !== imageKey) {
      throw new DatasetError(`${file}: image column "${imageKey}" differs from "${this.header.imageKey}" in the earlier shards`);
    }
    return imageKey;
  }

  /**
   * One row. `file` is where relative image paths resolve and what messages name; `shard` the
   * short name the row's `where` uses.
   */
  async row(
    row: Record<string, unknown>,
    imageKey: string,
    file: string,
    shard: string,
    rowInFile: number,
    options: DatasetReadOptions = this.options,
  ): Promise<DatasetRow> {
    const where = `${file}: row ${rowInFile}`;
    const instruction = row[options.instructionKey];
    if (instruction !== null && instruction !== undefined && typeof instruction !== 'string') {
      throw new DatasetError(`${where}, column "${options.instructionKey}": expected text, got ${typeof instruction}`);
    }
    const { refs, shown } = await imageCell(row[imageKey], file, `${where}, column "${imageKey}"`, options);
    const mask = options.maskKey
      ? (await imageCell(row[options.maskKey], file, `${where}, column "${options.maskKey}"`, options)).refs
      : [];
    if (mask.length > 1) throw new DatasetError(`${where}, column "${options.maskKey}": a row takes one mask`);
    const record = jsonSafe(row) as Record<string, unknown>;
    if (options.maskKey && mask.length) record[options.maskKey] = `mask:${basename(mask[0]!.source)}`;
    record[imageKey] = shown.length === 0 ? null : shown.length === 1 ? shown[0] : shown;
    const position = this.position++;
    return {
      position,
      index: this.indexes.take(row.index, position, where),
      where: `${shard} row ${rowInFile}`,
      turns: [(instruction ?? '').trim()],
      images: refs,
      ...(mask[0] ? { mask: mask[0] } : {}),
      record,
    };
  }
}
