import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';

// Writes Parquet fixtures with the schemas Hugging Face `datasets` produces: an image column as a
// struct {bytes: binary, path: string}, or a list of such structs, or plain strings / string lists.

export type ImageColumnKind = 'struct' | 'struct-list' | 'string' | 'string-list';

export interface ParquetFixtureRow {
  instruction: string | null;
  image: unknown;
  index?: number;
  extra?: string;
}

function imageSchema(kind: ImageColumnKind, name: string) {
  const struct = [
    { name: 'bytes', type: 'BYTE_ARRAY', repetition_type: 'OPTIONAL' },
    { name: 'path', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
  ];
  switch (kind) {
    case 'struct':
      return [{ name, repetition_type: 'OPTIONAL', num_children: 2 }, ...struct];
    case 'struct-list':
      return [
        { name, repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
        ...struct,
      ];
    case 'string':
      return [{ name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' }];
    case 'string-list':
      return [
        { name, repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { name: 'element', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
      ];
  }
}

export function writeParquetFixture(
  path: string,
  rows: ParquetFixtureRow[],
  options: { imageKind: ImageColumnKind; imageColumn?: string; withIndex?: boolean; rowGroupSize?: number },
): void {
  const imageColumn = options.imageColumn ?? 'input_images';
  const columnData: { name: string; data: unknown[] }[] = [];
  const schema: Record<string, unknown>[] = [];
  if (options.withIndex) {
    columnData.push({ name: 'index', data: rows.map((r) => BigInt(r.index ?? 0)) });
    schema.push({ name: 'index', type: 'INT64', repetition_type: 'OPTIONAL' });
  }
  columnData.push({ name: 'instruction', data: rows.map((r) => r.instruction) });
  schema.push({ name: 'instruction', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' });
  columnData.push({ name: imageColumn, data: rows.map((r) => r.image) });
  schema.push(...imageSchema(options.imageKind, imageColumn));
  columnData.push({ name: 'extra', data: rows.map((r) => r.extra ?? null) });
  schema.push({ name: 'extra', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' });
  const buffer = parquetWriteBuffer({
    columnData,
    schema: [{ name: 'root', num_children: columnData.length }, ...schema],
    rowGroupSize: options.rowGroupSize ?? 2,
  } as unknown as Parameters<typeof parquetWriteBuffer>[0]);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, Buffer.from(buffer));
}
