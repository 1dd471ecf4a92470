import { open, readdir, stat } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import { parquetMetadataAsync, parquetReadObjects, parquetSchema, type AsyncBuffer } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
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

// Parquet datasets: one file, or a directory of *.parquet shards read in sorted order, one row group
// at a time (memory stays bounded by the largest row group). Image columns may hold paths/URLs,
// lists of them, or images embedded the way Hugging Face `datasets` stores them: a struct
// {bytes, path}, or a list of such structs. Embedded bytes are written once, content-addressed, to
// the run's blob folder, and rows refer to those files.

const EXTRA_IMAGE_KEYS = ['images', 'input_image', 'source_image'];

export async function parquetFiles(input: string): Promise<string[]> {
  let info;
  try {
    info = await stat(input);
  } catch {
    throw new DatasetError(`input not found: ${input}`);
  }
  if (!info.isDirectory()) return [input];
  const files = (await readdir(input)).filter((f) => f.toLowerCase().endsWith('.parquet')).sort();
  if (files.length === 0) throw new DatasetError(`${input}: the directory holds no *.parquet files`);
  return files.map((f) => join(input, f));
}

/** Random access to a file for the Parquet reader; only the byte ranges it asks for are read. */
async function fileBuffer(path: string): Promise<{ buffer: AsyncBuffer; close: () => Promise<void> }> {
  const handle = await open(path, 'r');
  const { size } = await handle.stat();
  return {
    buffer: {
      byteLength: size,
      async slice(start: number, end?: number): Promise<ArrayBuffer> {
        const length = (end ?? size) - start;
        const chunk = new Uint8Array(length);
        await handle.read(chunk, 0, length, start);
        return chunk.buffer;
      },
    },
    close: () => handle.close(),
  };
}

function isEmbedded(value: unknown): value is { bytes?: unknown; path?: unknown } {
  return !!value && typeof value === 'object' && !Array.isArray(value) && ('bytes' in value || 'path' in value);
}

/** Image cell → refs (embedded bytes stored to blobDir) plus a printable form for the results. */
async function imageCell(
  value: unknown,
  file: string,
  where: string,
  options: DatasetReadOptions,
): Promise<{ refs: ImageRef[]; shown: string[] }> {
  if (value === null || value === undefined) return { refs: [], shown: [] };
  if (typeof value === 'string') {
    const items = parseImageCell(value, where);
    return { refs: items.map((v) => toImageRef(v, file, options)), shown: items };
  }
  const items = Array.isArray(value) ? value : [value];
  const refs: ImageRef[] = [];
  const shown: string[] = [];
  for (const item of items) {
    if (typeof item === 'string') {
      refs.push(toImageRef(item, file, options));
      shown.push(item);
    } else if (isEmbedded(item)) {
      if (item.bytes instanceof Uint8Array && item.bytes.byteLength > 0) {
        const ref = await options.storeBlob(item.bytes);
        refs.push(ref);
        shown.push(typeof item.path === 'string' && item.path ? item.path : `embedded:${basename(ref.source)}`);
      } else if (typeof item.path === 'string' && item.path) {
        refs.push(toImageRef(item.path, file, options));
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

export async function* readParquetDataset(
  input: string,
  options: DatasetReadOptions,
  onHeader?: (header: DatasetHeader) => void,
): AsyncGenerator<DatasetRow> {
  const files = await parquetFiles(input);
  const indexes = new IndexTracker();
  let header: DatasetHeader | undefined;
  let position = 0;
  for (const file of files) {
    const { buffer, close } = await fileBuffer(file);
    try {
      let metadata;
      try {
        metadata = await parquetMetadataAsync(buffer);
      } catch (err) {
        throw new DatasetError(`${file}: not a readable Parquet file (${(err as Error).message})`);
      }
      const columns = parquetSchema(metadata).children.map((c) => c.element.name);
      if (!columns.includes(options.instructionKey)) {
        throw new DatasetError(
          `${file}: no "${options.instructionKey}" column (set another with --instruction-key); columns are: ${columns.join(', ')}`,
        );
      }
      const imageKey = pickImageKey(columns, file, options.imageKey, EXTRA_IMAGE_KEYS);
      requireMaskColumn(columns, file, options.maskKey);
      if (!header) {
        header = { columns, imageKey, instructionKey: options.instructionKey };
        onHeader?.(header);
      } else if (header.imageKey !== imageKey) {
        throw new DatasetError(`${file}: image column "${imageKey}" differs from "${header.imageKey}" in the earlier shards`);
      }
      const shard = input === file ? basename(file) : relative(input, file);
      let groupStart = 0;
      for (const group of metadata.row_groups) {
        const groupRows = Number(group.num_rows);
        let rows: Record<string, unknown>[];
        try {
          rows = (await parquetReadObjects({
            file: buffer,
            metadata,
            rowStart: groupStart,
            rowEnd: groupStart + groupRows,
            compressors,
            utf8: false,
          })) as Record<string, unknown>[];
        } catch (err) {
          throw new DatasetError(`${file}: rows ${groupStart}-${groupStart + groupRows - 1} cannot be read (${(err as Error).message})`);
        }
        for (const [i, row] of rows.entries()) {
          const rowInFile = groupStart + i;
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
          const index = indexes.take(row.index, position, where);
          yield {
            position,
            index,
            where: `${shard} row ${rowInFile}`,
            turns: [(instruction ?? '').trim()],
            images: refs,
            ...(mask[0] ? { mask: mask[0] } : {}),
            record,
          };
          position += 1;
        }
        groupStart += groupRows;
      }
    } finally {
      await close();
    }
  }
  if (position === 0) throw new DatasetError(`${input}: no data rows`);
}
