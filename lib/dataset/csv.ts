import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { parse } from 'csv-parse';
import { DatasetError } from '../shared/errors';
import {
  IndexTracker,
  maskRef,
  parseImageCell,
  pickImageKey,
  requireMaskColumn,
  toImageRef,
  type DatasetHeader,
  type DatasetReadOptions,
  type DatasetRow,
} from './common';

/**
 * Streams a CSV dataset. Structural problems (bad quoting, ragged rows, a missing column, a bad or
 * duplicate index) throw DatasetError naming the file, line and column; per-row problems (an empty
 * instruction, a missing image file) are left for the row to fail on.
 */
export async function* readCsvDataset(
  file: string,
  options: DatasetReadOptions,
  onHeader?: (header: DatasetHeader) => void,
): AsyncGenerator<DatasetRow> {
  const parser = createReadStream(file).pipe(parse({ columns: true, bom: true, skip_empty_lines: true, info: true }));
  let header: DatasetHeader | undefined;
  const indexes = new IndexTracker();
  const name = basename(file);
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
        requireMaskColumn(columns, file, options.maskKey);
        header = { columns, imageKey: pickImageKey(columns, file, options.imageKey), instructionKey: options.instructionKey };
        onHeader?.(header);
      }
      // info.lines is the line the record ends on; rows are reported by that line.
      const where = `${name} line ${info.lines}`;
      const index = indexes.take(record.index, position, `${file}: line ${info.lines}`);
      const imageKey = header.imageKey!;
      const cellWhere = `${file}: line ${info.lines}, column "${imageKey}"`;
      const images = parseImageCell(record[imageKey] ?? '', cellWhere).map((v) => toImageRef(v, file, options, cellWhere));
      const mask = options.maskKey
        ? maskRef(record[options.maskKey], `${file}: line ${info.lines}, column "${options.maskKey}"`, file, options)
        : undefined;
      yield { position, index, where, turns: [(record[header.instructionKey] ?? '').trim()], images, ...(mask ? { mask } : {}), record };
      position += 1;
    }
  } catch (err) {
    if (err instanceof DatasetError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new DatasetError(`input file not found: ${file}`);
    if (e.code === 'EISDIR') throw new DatasetError(`input is a directory, not a CSV file: ${file}`);
    throw new DatasetError(`${file}: ${e.message}`);
  }
  if (!header) throw new DatasetError(`${file}: no data rows (a header line and at least one row are needed)`);
}
