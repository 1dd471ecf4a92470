import { sniffImageType } from '../images';
import { TarWriter } from '../dataset/tar';
import type { ImageCell, TableColumn } from './parquetTable';

// WebDataset shards of an export: one sample per row, keyed by the row's index (`000042`), with a
// member per image (`000042.input_image.png`, lists as `000042.input_images_1.jpg`; the extension
// from the image's bytes, so `webdataset`'s decoders pick them up), the instruction as `.txt` and
// every other column in `.json`. The same interface as the table writers, so the export loop is one.

const extensionOf = (bytes: Uint8Array): string => {
  const type = sniffImageType(bytes, 'application/octet-stream');
  return type.startsWith('image/') ? type.slice(6).replace('jpeg', 'jpg') : 'bin';
};

export class WebDatasetWriter {
  private readonly tar: TarWriter;
  private readonly mtime = new Date();
  private rows = 0;

  constructor(
    readonly path: string,
    private readonly columns: readonly TableColumn[],
  ) {
    this.tar = new TarWriter(path);
  }

  async write(rows: ReadonlyArray<Record<string, unknown>>): Promise<void> {
    for (const row of rows) {
      const key = String(row.index).padStart(6, '0');
      const json: Record<string, unknown> = {};
      for (const { name, kind } of this.columns) {
        const value = row[name];
        if (kind === 'image') {
          const cell = value as ImageCell | null | undefined;
          if (cell) await this.tar.add(`${key}.${name}.${extensionOf(cell.bytes)}`, cell.bytes, this.mtime);
        } else if (kind === 'imageList') {
          for (const [i, cell] of ((value as ImageCell[] | null | undefined) ?? []).entries())
            await this.tar.add(`${key}.${name}_${i}.${extensionOf(cell.bytes)}`, cell.bytes, this.mtime);
        } else {
          json[name] = value ?? null;
        }
      }
      const instruction = row.instruction ?? (Array.isArray(row.instructions) ? row.instructions.join('\n') : null);
      if (typeof instruction === 'string') await this.tar.add(`${key}.txt`, Buffer.from(instruction, 'utf8'), this.mtime);
      await this.tar.add(`${key}.json`, Buffer.from(JSON.stringify(json), 'utf8'), this.mtime);
      this.rows += 1;
    }
  }

  get rowCount(): number {
    return this.rows;
  }

  async finish(): Promise<void> {
    await this.tar.finish();
  }
}
