import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Vector } from 'apache-arrow';
import { DatasetError } from '../shared/errors';
import type { DatasetHeader, DatasetReadOptions, DatasetRow } from './common';
import { TableRows } from './tableRows';

// `datasets`' own on-disk format (`Dataset.save_to_disk`): a folder of Arrow IPC stream files
// (`data-00000-of-00002.arrow` ...) listed in `state.json`, with the features in
// `dataset_info.json` and in each file's schema metadata. A `DatasetDict` folder holds one such
// folder per split and a `dataset_dict.json` naming them. Files are read one record batch at a time
// (memory stays bounded by the largest batch, 1,000 rows as `datasets` writes them). Image features
// are the struct {bytes, path} Parquet uses, so the cells go through the same rules.

/** What a folder holds for `datasets`: one dataset, a DatasetDict (its splits), or neither. */
export function arrowFolderKind(dir: string): { kind: 'dataset' } | { kind: 'dict'; splits: string[] } | undefined {
  if (existsSync(join(dir, 'state.json'))) return { kind: 'dataset' };
  const dict = join(dir, 'dataset_dict.json');
  if (!existsSync(dict)) return undefined;
  let splits: unknown;
  try {
    splits = (JSON.parse(readFileSync(dict, 'utf8')) as { splits?: unknown }).splits;
  } catch (err) {
    throw new DatasetError(`${dict}: not readable JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(splits) || !splits.every((s) => typeof s === 'string'))
    throw new DatasetError(`${dict}: "splits" must be a list of split names`);
  return { kind: 'dict', splits };
}

/** The error for a DatasetDict given without a split: it names the splits and how to pick one. */
export function dictWithoutSplit(dir: string, splits: string[]): DatasetError {
  return new DatasetError(
    `${dir} is a DatasetDict with split${splits.length === 1 ? '' : 's'} ${splits.join(', ')}: give one, e.g. --input ${join(dir, splits[0] ?? 'train')}`,
  );
}

/** The Arrow files of a save_to_disk folder, in the order state.json lists them. */
async function arrowShards(input: string): Promise<string[]> {
  if (input.toLowerCase().endsWith('.arrow')) return [input];
  const folder = arrowFolderKind(input);
  if (folder?.kind === 'dict') throw dictWithoutSplit(input, folder.splits);
  const statePath = join(input, 'state.json');
  let files: unknown;
  try {
    files = (JSON.parse(await readFile(statePath, 'utf8')) as { _data_files?: unknown })._data_files;
  } catch (err) {
    throw new DatasetError(`${statePath}: not readable JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(files) || files.length === 0)
    throw new DatasetError(`${statePath}: "_data_files" lists no Arrow files (is this a save_to_disk folder?)`);
  return files.map((f: unknown, i) => {
    const name = (f as { filename?: unknown })?.filename;
    if (typeof name !== 'string' || name.includes('/') || name.includes('\\'))
      throw new DatasetError(`${statePath}: _data_files[${i}] has no plain "filename"`);
    const path = join(input, name);
    if (!existsSync(path)) throw new DatasetError(`${statePath}: lists ${name}, which is not in ${input}`);
    return path;
  });
}

/** An Arrow cell as plain JavaScript: structs as objects, lists as arrays, binary as Uint8Array. */
function plain(value: unknown, vector: typeof Vector): unknown {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'object' || value instanceof Uint8Array) return value;
  if (value instanceof vector) return Array.from(value as Vector, (v) => plain(v, vector));
  const json = (value as { toJSON?: () => unknown }).toJSON?.();
  const entries = Object.entries((json ?? value) as Record<string, unknown>);
  return Object.fromEntries(entries.map(([k, v]) => [k, plain(v, vector)]));
}

export async function* readArrowDataset(
  input: string,
  options: DatasetReadOptions,
  onHeader?: (header: DatasetHeader) => void,
): AsyncGenerator<DatasetRow> {
  const shards = await arrowShards(input);
  // apache-arrow loads when an Arrow input is read, not with the CLI (its import is ~0.1 s of CPU).
  const { RecordBatchReader, Vector } = await import('apache-arrow');
  const table = new TableRows(options, onHeader);
  for (const file of shards) {
    const stream = createReadStream(file);
    try {
      let reader;
      try {
        reader = await RecordBatchReader.from(stream);
        await reader.open();
      } catch (err) {
        throw new DatasetError(`${file}: not a readable Arrow stream file (${(err as Error).message})`);
      }
      if (reader.schema === undefined)
        throw new DatasetError(`${file}: not a readable Arrow stream file (no schema; is it empty or truncated?)`);
      const imageKey = table.columns(
        reader.schema.fields.map((f) => f.name),
        file,
      );
      const shard = input === file ? basename(file) : `${basename(input)}/${basename(file)}`;
      let rowInFile = 0;
      const batches = reader[Symbol.asyncIterator]();
      for (;;) {
        let next;
        try {
          next = await batches.next();
        } catch (err) {
          throw new DatasetError(`${file}: rows from ${rowInFile} on cannot be read (${(err as Error).message})`);
        }
        if (next.done) break;
        const batch = next.value;
        for (let i = 0; i < batch.numRows; i++) {
          yield await table.row(plain(batch.get(i), Vector) as Record<string, unknown>, imageKey, file, shard, rowInFile);
          rowInFile += 1;
        }
      }
    } finally {
      stream.destroy();
    }
  }
  if (table.position === 0) throw new DatasetError(`${input}: no data rows`);
}
