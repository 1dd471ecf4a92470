import { createReadStream } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'csv-parse';
import { IMAGE_COLUMN_CANDIDATES } from '../constants';
import { DatasetError } from '../errors';
import type { ImageRef, PlanRow } from '../plan';

export interface CsvReadOptions {
  instructionKey: string;
  imageKey?: string | undefined;
}

export interface CsvHeader {
  columns: string[];
  imageKey: string;
  instructionKey: string;
}

/** Splits an image cell: a JSON array, a comma-separated list, or one path/URL. */
export function parseImageCell(cell: string, where: string): string[] {
  const text = cell.trim();
  if (text === '') return [];
  if (text.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new DatasetError(`${where}: the cell looks like a JSON array but does not parse (${(err as Error).message})`);
    }
    if (!Array.isArray(parsed) || !parsed.every((v) => typeof v === 'string')) {
      throw new DatasetError(`${where}: a JSON array of image paths/URLs must hold only strings`);
    }
    return parsed.map((v) => v.trim()).filter((v) => v !== '');
  }
  // A data URI carries a comma of its own; it is always a single image.
  if (text.startsWith('data:')) return [text];
  return text
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/** Relative paths resolve against the dataset file's folder; http(s) stays a URL. */
export function toImageRef(value: string, datasetPath: string): ImageRef {
  if (/^https?:\/\//i.test(value)) return { kind: 'url', source: value };
  if (/^file:\/\//i.test(value)) return { kind: 'file', source: fileURLToPath(value) };
  return { kind: 'file', source: isAbsolute(value) ? value : resolve(dirname(datasetPath), value) };
}

function pickImageKey(columns: string[], file: string, imageKey?: string): string {
  if (imageKey) {
    if (!columns.includes(imageKey)) {
      throw new DatasetError(`${file}: no "${imageKey}" column (--image-key); columns are: ${columns.join(', ')}`);
    }
    return imageKey;
  }
  const found = IMAGE_COLUMN_CANDIDATES.find((c) => columns.includes(c));
  if (!found) {
    throw new DatasetError(
      `${file}: no image column; expected one of ${IMAGE_COLUMN_CANDIDATES.join(', ')} (or name one with --image-key); columns are: ${columns.join(', ')}`,
    );
  }
  return found;
}

/**
 * Streams a CSV dataset as plan rows. Structural problems (bad quoting, ragged rows, a missing
 * column, a bad or duplicate index) throw DatasetError naming the file, line and column; per-row
 * problems (an empty instruction, a missing image file) are left for the row to fail on.
 */
export async function* readCsvDataset(
  file: string,
  options: CsvReadOptions,
  onHeader?: (header: CsvHeader) => void,
): AsyncGenerator<PlanRow> {
  const parser = createReadStream(file).pipe(
    parse({ columns: true, bom: true, skip_empty_lines: true, info: true }),
  );
  let header: CsvHeader | undefined;
  const seenIndex = new Map<number, number>();
  let position = 0;
  try {
    for await (const item of parser as AsyncIterable<{ record: Record<string, string>; info: { lines: number } }>) {
      const { record, info } = item;
      if (!header) {
        const columns = Object.keys(record);
        if (!columns.includes(options.instructionKey)) {
          throw new DatasetError(
            `${file}: no "${options.instructionKey}" column (set another with --instruction-key); columns are: ${columns.join(', ')}`,
          );
        }
        header = { columns, imageKey: pickImageKey(columns, file, options.imageKey), instructionKey: options.instructionKey };
        onHeader?.(header);
      }
      // info.lines is the line the record ends on; rows are reported by that line.
      const line = info.lines;
      let index = position;
      const rawIndex = record.index;
      if (rawIndex !== undefined) {
        if (!/^\d+$/.test(rawIndex.trim())) {
          throw new DatasetError(`${file}: line ${line}, column "index": "${rawIndex}" is not a non-negative integer`);
        }
        index = Number(rawIndex.trim());
        if (!Number.isSafeInteger(index)) {
          throw new DatasetError(`${file}: line ${line}, column "index": ${rawIndex} is too large`);
        }
      }
      const firstLine = seenIndex.get(index);
      if (firstLine !== undefined) {
        throw new DatasetError(
          `${file}: line ${line}, column "index": index ${index} repeats line ${firstLine}; output names would collide`,
        );
      }
      seenIndex.set(index, line);
      const cell = record[header.imageKey] ?? '';
      const images = parseImageCell(cell, `${file}: line ${line}, column "${header.imageKey}"`).map((v) =>
        toImageRef(v, file),
      );
      yield {
        position,
        index,
        line,
        instruction: (record[header.instructionKey] ?? '').trim(),
        images,
        record,
      };
      position += 1;
    }
  } catch (err) {
    if (err instanceof DatasetError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new DatasetError(`input file not found: ${file}`);
    if (e.code === 'EISDIR') throw new DatasetError(`input is a directory, not a CSV file: ${file}`);
    throw new DatasetError(`${file}: ${e.message}`);
  }
  if (!header) {
    throw new DatasetError(`${file}: no data rows (a header line and at least one row are needed)`);
  }
}
