import { closeSync, openSync, writeSync } from 'node:fs';
import { deserialize, serialize } from 'node:v8';
import type { ColumnChunk, OffsetIndex, RowGroup } from 'hyparquet';
import type * as HyparquetWriter from 'hyparquet-writer';
import type { ParquetWriter } from 'hyparquet-writer';
import type { Writer } from 'hyparquet-writer/src/types';
import { loadOnUse } from '../loadOnUse';

// The writer loads when a table is first written (the end of a run's first page), not with the CLI.
const hyparquetWriter = loadOnUse<typeof HyparquetWriter>('hyparquet-writer');

// Parquet tables written the way Hugging Face `datasets` writes them, so `load_dataset("parquet")`
// (and pyarrow, pandas, DuckDB) read them as they are: plain columns with their Arrow types, and
// image columns as struct {bytes: binary, path: string}, described by the `huggingface` key of the
// file's key-value metadata (the features `datasets` would otherwise infer as plain structs).

/** What a column holds. */
export type ColumnKind = 'string' | 'int' | 'double' | 'bool' | 'json' | 'stringList' | 'image' | 'imageList';

export interface TableColumn {
  name: string;
  kind: ColumnKind;
}

/** An image cell: its bytes and a name (a file name, not a path anyone needs to open). */
export interface ImageCell {
  bytes: Uint8Array;
  path: string | null;
}

type SchemaElement = Record<string, unknown>;

const IMAGE_STRUCT: SchemaElement[] = [
  { name: 'bytes', type: 'BYTE_ARRAY', repetition_type: 'OPTIONAL' },
  { name: 'path', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
];

/** Parquet schema elements of one column (lists in the standard three-level LIST layout). */
function schemaOf({ name, kind }: TableColumn): SchemaElement[] {
  const optional = 'OPTIONAL';
  const list = (element: SchemaElement[]): SchemaElement[] => [
    { name, repetition_type: optional, converted_type: 'LIST', num_children: 1 },
    { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
    ...element,
  ];
  switch (kind) {
    case 'string':
    case 'json':
      return [{ name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: optional }];
    case 'int':
      return [{ name, type: 'INT64', repetition_type: optional }];
    case 'double':
      return [{ name, type: 'DOUBLE', repetition_type: optional }];
    case 'bool':
      return [{ name, type: 'BOOLEAN', repetition_type: optional }];
    case 'stringList':
      return list([{ name: 'element', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: optional }]);
    case 'image':
      return [{ name, repetition_type: optional, num_children: 2 }, ...IMAGE_STRUCT];
    case 'imageList':
      return list([{ name: 'element', repetition_type: optional, num_children: 2 }, ...IMAGE_STRUCT]);
  }
}

/** The `datasets` feature of one column (the list form `[feature]` is read by every release). */
function featureOf(kind: ColumnKind): unknown {
  const value = (dtype: string) => ({ dtype, _type: 'Value' });
  switch (kind) {
    case 'string':
    case 'json':
      return value('string');
    case 'int':
      return value('int64');
    case 'double':
      return value('float64');
    case 'bool':
      return value('bool');
    case 'stringList':
      return [value('string')];
    case 'image':
      return { _type: 'Image' };
    case 'imageList':
      return [{ _type: 'Image' }];
  }
}

/** The `huggingface` key-value metadata `datasets` writes and reads back as the table's features. */
export function huggingfaceMetadata(columns: readonly TableColumn[]): string {
  const features: Record<string, unknown> = {};
  for (const c of columns) features[c.name] = featureOf(c.kind);
  return JSON.stringify({ info: { features } });
}

/**
 * The narrowest kind that holds both: the same kind, `double` for integers and numbers, else JSON
 * text. It is a join (order and grouping do not matter), so kinds inferred a chunk at a time
 * combine to the kind of the whole column.
 */
export function widenKind(kind: ColumnKind | undefined, next: ColumnKind | undefined): ColumnKind | undefined {
  if (next === undefined || kind === next) return kind ?? next;
  if (kind === undefined) return next;
  if ((kind === 'int' && next === 'double') || (kind === 'double' && next === 'int')) return 'double';
  return 'json';
}

/** The narrowest kind that holds every value given, or undefined when every value is missing. */
export function valuesKind(values: Iterable<unknown>): ColumnKind | undefined {
  let kind: ColumnKind | undefined;
  for (const v of values) {
    if (v === null || v === undefined) continue;
    if (typeof v === 'string') kind = widenKind(kind, 'string');
    else if (typeof v === 'boolean') kind = widenKind(kind, 'bool');
    else if (typeof v === 'number') kind = widenKind(kind, Number.isSafeInteger(v) ? 'int' : 'double');
    else if (Array.isArray(v) && v.every((e) => typeof e === 'string')) kind = widenKind(kind, 'stringList');
    else kind = 'json';
    if (kind === 'json') return kind;
  }
  return kind;
}

/**
 * The narrowest kind that holds every value of an input column: integers, numbers, booleans,
 * strings, string lists; anything else (objects, mixed types) is kept as JSON text.
 */
export function inferKind(values: Iterable<unknown>): ColumnKind {
  return valuesKind(values) ?? 'string';
}

/** A cell as the writer takes it for its column's kind (null for a missing value). */
export function cellOf(kind: ColumnKind, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (kind) {
    case 'int':
      return BigInt(value as number);
    case 'double':
      return Number(value);
    case 'json':
      return typeof value === 'string' ? value : JSON.stringify(value);
    default:
      return value;
  }
}

/**
 * hyparquet-writer's file writer, with a file descriptor kept open: the table is flushed to disk
 * every megabyte or so, so a shard of large embedded images is never held whole in memory.
 */
function fileWriter(path: string): Writer & { abort: () => void } {
  const writer = new (hyparquetWriter().ByteWriter)() as unknown as Writer & { index: number; abort: () => void };
  let fd: number | undefined = openSync(path, 'w');
  const flush = () => {
    if (writer.index > 0) writeSync(fd!, new Uint8Array(writer.buffer, 0, writer.index));
    writer.index = 0;
  };
  const grow = writer.ensure.bind(writer);
  writer.ensure = (size: number) => {
    if (writer.index > 1_000_000) flush();
    grow(size);
  };
  writer.finish = () => {
    flush();
    closeSync(fd!);
    fd = undefined;
  };
  // A table given up half-written: its file is closed (the caller removes it).
  writer.abort = () => {
    if (fd !== undefined) closeSync(fd);
    fd = undefined;
  };
  return writer;
}

function schemaElements(columns: readonly TableColumn[]): SchemaElement[] {
  return [{ name: 'schema', num_children: columns.length }, ...columns.flatMap(schemaOf)];
}

/**
 * One row group encoded on its own, to be placed in a file later (`ParquetAssembler`): its bytes as
 * they sit in the file, and its metadata (v8-serialised: offsets are bigints, statistics may be
 * bytes) with every offset counted from the group's first byte.
 */
export interface EncodedRowGroup {
  bytes: Uint8Array;
  meta: Uint8Array;
}

interface RowGroupMeta {
  group: RowGroup;
  /** Per column chunk, in order: its page index (written after the row groups, by `finish`). */
  indexes: Array<{ offsetIndex?: OffsetIndex; columnIndex?: unknown; bloomFilter?: Uint32Array }>;
}

/** Moves a row group's file offsets by `delta` bytes. */
function shiftRowGroup({ group, indexes }: RowGroupMeta, delta: bigint): void {
  group.columns.forEach((chunk: ColumnChunk, j) => {
    chunk.file_offset += delta;
    const m = chunk.meta_data;
    if (m) {
      m.data_page_offset += delta;
      if (m.dictionary_page_offset !== undefined) m.dictionary_page_offset += delta;
      if (m.index_page_offset !== undefined) m.index_page_offset += delta;
    }
    for (const page of indexes[j]?.offsetIndex?.page_locations ?? []) page.offset += delta;
  });
}

/**
 * Encodes rows as one row group, exactly as `ParquetTableWriter` would write them in a file whose
 * row groups hold these rows each: the same pages, statistics and page indexes.
 */
export function encodeRowGroup(columns: readonly TableColumn[], rows: ReadonlyArray<Record<string, unknown>>): EncodedRowGroup {
  const { ByteWriter, ParquetWriter } = hyparquetWriter();
  const bytes = new ByteWriter();
  const writer = new ParquetWriter({ writer: bytes, schema: schemaElements(columns) as never, createdBy: 'atelier' });
  const columnData = columns.map((c) => ({ name: c.name, data: rows.map((r) => cellOf(c.kind, r[c.name])) }));
  // Synchronous on a ByteWriter (it has no flush to wait for).
  void writer.write({ columnData: columnData as never, rowGroupSize: Math.max(1, rows.length) });
  const group = writer.row_groups[0];
  if (!group) throw new Error('encodeRowGroup: no rows');
  const meta: RowGroupMeta = {
    group,
    indexes: writer.pendingIndexes.map(({ offsetIndex, columnIndex, bloomFilter }) => ({ offsetIndex, columnIndex, bloomFilter })),
  };
  // The group was written after the file's 4-byte magic: its offsets are made relative to itself.
  shiftRowGroup(meta, -4n);
  return { bytes: bytes.getBytes().slice(4), meta: serialize(meta) };
}

/**
 * Writes a Parquet file from row groups encoded earlier (`encodeRowGroup`), each placed as it is
 * with its offsets moved to where it lands, then the page indexes and footer the writer itself
 * writes: the same bytes as `ParquetTableWriter` writing the rows of the same groups.
 */
export class ParquetAssembler {
  private readonly writer: ParquetWriter;
  private readonly file: ReturnType<typeof fileWriter>;

  constructor(
    readonly path: string,
    columns: readonly TableColumn[],
  ) {
    this.file = fileWriter(path);
    this.writer = new (hyparquetWriter().ParquetWriter)({
      writer: this.file,
      schema: schemaElements(columns) as never,
      createdBy: 'atelier',
    });
  }

  /** The next row group; returns where its bytes start in the file. */
  append(encoded: EncodedRowGroup): number {
    const meta = deserialize(encoded.meta) as RowGroupMeta;
    const at = this.file.offset;
    shiftRowGroup(meta, BigInt(at));
    this.file.appendBytes(encoded.bytes);
    this.writer.row_groups.push(meta.group);
    this.writer.num_rows += meta.group.num_rows;
    meta.group.columns.forEach((chunk, j) => this.writer.pendingIndexes.push({ chunk, ...meta.indexes[j] } as never));
    return at;
  }

  async finish(): Promise<void> {
    await this.writer.finish();
  }

  abort(): void {
    this.file.abort();
  }
}

/** Writes one Parquet file a batch of rows at a time (each batch one or more row groups). */
export class ParquetTableWriter {
  private readonly writer: ParquetWriter;
  private readonly file: ReturnType<typeof fileWriter>;
  private rows = 0;

  constructor(
    readonly path: string,
    private readonly columns: readonly TableColumn[],
    options: { huggingface?: boolean } = {},
  ) {
    const schema = schemaElements(columns);
    this.file = fileWriter(path);
    this.writer = new (hyparquetWriter().ParquetWriter)({
      writer: this.file,
      schema: schema as never,
      ...(options.huggingface ? { kvMetadata: [{ key: 'huggingface', value: huggingfaceMetadata(columns) }] } : {}),
      createdBy: 'atelier',
    });
  }

  /** Rows by column name; a column a row lacks is null. */
  async write(rows: ReadonlyArray<Record<string, unknown>>, rowGroupSize = 1000): Promise<void> {
    if (rows.length === 0) return;
    const columnData = this.columns.map((c) => ({ name: c.name, data: rows.map((r) => cellOf(c.kind, r[c.name])) }));
    await this.writer.write({ columnData: columnData as never, rowGroupSize });
    this.rows += rows.length;
  }

  get rowCount(): number {
    return this.rows;
  }

  async finish(): Promise<void> {
    await this.writer.finish();
  }

  /** Closes the file of a table that will not be finished (idempotent; nothing after `finish`). */
  abort(): void {
    this.file.abort();
  }
}
