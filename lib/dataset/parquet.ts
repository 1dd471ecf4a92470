import { open, readdir, stat } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import type { AsyncBuffer } from 'hyparquet';
import { DatasetError } from '../shared/errors';
import type { DatasetHeader, DatasetReadOptions, DatasetRow } from './common';
import { TableRows } from './tableRows';

// Parquet datasets: one file, or a directory of *.parquet shards read in sorted order, one row group
// at a time (memory stays bounded by the largest row group). Cells become rows as tableRows.ts says.

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

/** One Parquet file to read: a local file or a remote one read by ranges (the Hub). */
export interface ParquetSource {
  /** The file as messages name it. */
  name: string;
  /** The short name a row's `where` uses. */
  shard: string;
  /** Where relative image paths in it resolve (a URL for remote files; the file itself when absent). */
  origin?: string;
  open: () => Promise<{ buffer: AsyncBuffer; close: () => Promise<void> }>;
  /** Bytes read from the end for the footer (hyparquet's default 512 KB is more than a shard's footer, read twice over HTTP). */
  footerFetchBytes?: number;
}

export async function* readParquetDataset(
  input: string,
  options: DatasetReadOptions,
  onHeader?: (header: DatasetHeader) => void,
): AsyncGenerator<DatasetRow> {
  const files = await parquetFiles(input);
  yield* readParquetSources(
    files.map((file) => ({ name: file, shard: input === file ? basename(file) : relative(input, file), open: () => fileBuffer(file) })),
    options,
    onHeader,
    input,
  );
}

export async function* readParquetSources(
  sources: ParquetSource[],
  options: DatasetReadOptions,
  onHeader: ((header: DatasetHeader) => void) | undefined,
  input: string,
): AsyncGenerator<DatasetRow> {
  // hyparquet and its codecs load when a Parquet input is read, not with the CLI.
  const { parquetMetadataAsync, parquetReadObjects, parquetSchema } = await import('hyparquet');
  const { compressors } = await import('hyparquet-compressors');
  const table = new TableRows(options, onHeader);
  for (const source of sources) {
    const file = source.name;
    const { buffer, close } = await source.open();
    const rowOptions = source.origin ? { ...options, origin: () => source.origin! } : options;
    try {
      let metadata;
      try {
        metadata = await parquetMetadataAsync(buffer, source.footerFetchBytes ? { initialFetchSize: source.footerFetchBytes } : {});
      } catch (err) {
        throw new DatasetError(`${file}: not a readable Parquet file (${(err as Error).message})`);
      }
      const imageKey = table.columns(
        parquetSchema(metadata).children.map((c) => c.element.name),
        file,
      );
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
        for (const [i, row] of rows.entries()) yield await table.row(row, imageKey, file, source.shard, groupStart + i, rowOptions);
        groupStart += groupRows;
      }
    } finally {
      await close();
    }
  }
  if (table.position === 0) throw new DatasetError(`${input}: no data rows`);
}
