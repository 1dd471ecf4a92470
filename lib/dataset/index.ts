import { statSync } from 'node:fs';
import { extname } from 'node:path';
import { DatasetError } from '../shared/errors';
import type { DatasetHeader, DatasetReadOptions, DatasetRow } from './common';
import { readCsvDataset } from './csv';
import { readJsonlDataset } from './jsonl';
import { readParquetDataset } from './parquet';
import { arrowFolderKind, dictWithoutSplit, readArrowDataset } from './arrow';
import { isWebDatasetInput, readWebDataset } from './webdataset';
import { isHubLocation, parseHubLocation, readHubDataset } from './hub';
import { fetchDatasetCopy } from './remote';
import { isS3Location } from '../../storage';
import type { DatasetWorkflowInput } from '../shared/types';

export type { DatasetHeader, DatasetReadOptions, DatasetRow } from './common';

export type DatasetFormat = 'csv' | 'jsonl' | 'parquet' | 'arrow' | 'webdataset' | 'hub';

/**
 * The format, from the extension; a directory is a `datasets` save_to_disk folder when it holds
 * state.json (a DatasetDict folder asks for a split), else a folder of Parquet shards; .tar files
 * and brace patterns of them are WebDataset shards.
 */
export function datasetFormat(path: string): DatasetFormat {
  if (isHubLocation(path)) {
    parseHubLocation(path);
    return 'hub';
  }
  if (isWebDatasetInput(path)) return 'webdataset';
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    throw new DatasetError(`input not found: ${path}`);
  }
  if (isDir) {
    const arrow = arrowFolderKind(path);
    if (arrow?.kind === 'dict') throw dictWithoutSplit(path, arrow.splits);
    return arrow ? 'arrow' : 'parquet';
  }
  const ext = extname(path).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  if (ext === '.parquet') return 'parquet';
  if (ext === '.arrow') return 'arrow';
  throw new DatasetError(
    `${path}: unsupported input format "${ext || '(none)'}"; use .csv, .jsonl, .parquet, a folder of .parquet files, a datasets save_to_disk folder, or WebDataset .tar shards`,
  );
}

/** Streams the rows of any supported dataset. `onHeader` may be called after the last row (JSONL). */
export function readDataset(path: string, options: DatasetReadOptions, onHeader: (h: DatasetHeader) => void): AsyncGenerator<DatasetRow> {
  switch (datasetFormat(path)) {
    case 'csv':
      return readCsvDataset(path, options, onHeader);
    case 'jsonl':
      return readJsonlDataset(path, options, onHeader);
    case 'parquet':
      return readParquetDataset(path, options, onHeader);
    case 'arrow':
      return readArrowDataset(path, options, onHeader);
    case 'webdataset':
      return readWebDataset(path, options, onHeader);
    case 'hub':
      return readHubDataset(path, options, onHeader);
  }
}

/**
 * The rows of a run's input, wherever it lives: a dataset in object storage is read from a local
 * copy (removed when the rows are done), and its relative image paths still resolve next to the
 * original.
 */
export async function* readRunDataset(
  input: Pick<DatasetWorkflowInput, 'inputPath' | 'instructionKey' | 'imageKey' | 'conversationKey' | 'maskKey'>,
  storeBlob: DatasetReadOptions['storeBlob'],
  onHeader: (h: DatasetHeader) => void,
): AsyncGenerator<DatasetRow> {
  // WebDataset shards are streamed from object storage where they are; other formats are copied.
  const copy = isS3Location(input.inputPath) && !isWebDatasetInput(input.inputPath);
  const source = copy ? await fetchDatasetCopy(input.inputPath) : undefined;
  try {
    yield* readDataset(
      source?.localPath ?? input.inputPath,
      {
        instructionKey: input.instructionKey,
        imageKey: input.imageKey,
        conversationKey: input.conversationKey,
        maskKey: input.maskKey,
        storeBlob,
        ...(source ? { origin: source.origin } : {}),
      },
      onHeader,
    );
  } finally {
    await source?.cleanup();
  }
}
