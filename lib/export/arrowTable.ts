import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import {
  Binary,
  Bool,
  Field,
  Float64,
  Int64,
  List,
  makeData,
  RecordBatch,
  RecordBatchStreamWriter,
  Schema,
  Struct,
  Utf8,
  vectorFromArray,
  type DataType,
} from 'apache-arrow';
import { cellOf, huggingfaceMetadata, type ColumnKind, type TableColumn } from './parquetTable';

// Arrow IPC stream files as `datasets`' save_to_disk writes them (`data-00000-of-00001.arrow`): the
// same Arrow types as the Parquet export (images as struct {bytes: binary, path: string}) and the
// same `huggingface` schema metadata, so `datasets.load_from_disk` restores the Image features.

const imageType = () => new Struct([new Field('bytes', new Binary(), true), new Field('path', new Utf8(), true)]);

function arrowType(kind: ColumnKind): DataType {
  switch (kind) {
    case 'string':
    case 'json':
      return new Utf8();
    case 'int':
      return new Int64();
    case 'double':
      return new Float64();
    case 'bool':
      return new Bool();
    case 'stringList':
      return new List(new Field('item', new Utf8(), true));
    case 'image':
      return imageType();
    case 'imageList':
      return new List(new Field('item', imageType(), true));
  }
}

/** Writes one Arrow stream file a record batch at a time, streaming it to disk as it goes. */
export class ArrowTableWriter {
  private readonly schema: Schema;
  private readonly writer: RecordBatchStreamWriter;
  private readonly file: WriteStream;
  private readonly done: Promise<unknown>;
  private rows = 0;

  constructor(
    readonly path: string,
    private readonly columns: readonly TableColumn[],
  ) {
    this.schema = new Schema(
      columns.map((c) => new Field(c.name, arrowType(c.kind), true)),
      new Map([['huggingface', huggingfaceMetadata(columns)]]),
    );
    this.writer = new RecordBatchStreamWriter();
    this.file = createWriteStream(path);
    this.done = once(this.file, 'finish');
    this.writer.toNodeStream().pipe(this.file);
  }

  /** Rows by column name; a column a row lacks is null. One record batch per `batchSize` rows. */
  async write(rows: ReadonlyArray<Record<string, unknown>>, batchSize = 1000): Promise<void> {
    for (let start = 0; start < rows.length; start += batchSize) {
      const slice = rows.slice(start, start + batchSize);
      const children = this.schema.fields.map((field, i) => {
        const kind = this.columns[i]!.kind;
        const vector = vectorFromArray(
          slice.map((r) => cellOf(kind, r[field.name])),
          field.type,
        );
        // One chunk per column: the batch's columns are its children.
        return vector.data.length === 1 ? vector.data[0]! : vectorFromArray([...vector], field.type).data[0]!;
      });
      const data = makeData({ type: new Struct(this.schema.fields), length: slice.length, nullCount: 0, children });
      this.writer.write(new RecordBatch(this.schema, data));
      this.rows += slice.length;
      // Let the file stream take what was written before the next batch is built.
      if (this.file.writableNeedDrain) await once(this.file, 'drain');
    }
  }

  get rowCount(): number {
    return this.rows;
  }

  async finish(): Promise<void> {
    // A file with no batches still needs its schema, or `datasets` cannot open it.
    if (this.rows === 0) this.writer.reset(undefined, this.schema);
    this.writer.finish();
    await this.done;
  }
}
