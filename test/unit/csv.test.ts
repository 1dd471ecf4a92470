import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseImageCell, type DatasetRow } from '../../lib/dataset/common';
import { readCsvDataset } from '../../lib/dataset/csv';
import { DatasetError } from '../../lib/shared/errors';
import { tempDir, writeText } from '../helpers/fixtures';

async function readAll(file: string, imageKey?: string): Promise<DatasetRow[]> {
  const rows: DatasetRow[] = [];
  for await (const row of readCsvDataset(file, {
    instructionKey: 'instruction',
    imageKey,
    // Resolution only: an absolute path elsewhere (/abs/c.png) is the user's to allow (test/unit/readers.test.ts covers the refusal).
    allowOutsidePaths: true,
    storeBlob: () => Promise.reject(new Error('a CSV has no embedded images')),
  }))
    rows.push(row);
  return rows;
}

describe('CSV datasets', () => {
  it('reads rows with quoting, resolves relative paths against the CSV folder, keeps the record', async () => {
    const dir = tempDir();
    const file = join(dir, 'sub', 'data.csv');
    writeText(
      file,
      [
        'index,input_images,instruction,extra',
        '7,a.png,"Make it ""warmer"", please",x',
        '3,"[""b.png"", ""/abs/c.png""]","multi\nline",y',
        '10,https://example.test/d.png,url row,z',
      ].join('\n'),
    );
    const rows = await readAll(file);
    expect(rows.map((r) => r.index)).toEqual([7, 3, 10]);
    expect(rows.map((r) => r.position)).toEqual([0, 1, 2]);
    expect(rows[0]!.turns[0]).toBe('Make it "warmer", please');
    expect(rows[0]!.images).toEqual([{ kind: 'file', source: join(dir, 'sub', 'a.png') }]);
    expect(rows[1]!.images).toEqual([
      { kind: 'file', source: join(dir, 'sub', 'b.png') },
      { kind: 'file', source: '/abs/c.png' },
    ]);
    expect(rows[1]!.turns[0]).toBe('multi\nline');
    expect(rows[2]!.images).toEqual([{ kind: 'url', source: 'https://example.test/d.png' }]);
    expect(rows[2]!.record).toEqual({ index: '10', input_images: 'https://example.test/d.png', instruction: 'url row', extra: 'z' });
  });

  it('uses the row position as index without an index column and finds image_url / image columns', async () => {
    const dir = tempDir();
    const file = join(dir, 'd.csv');
    writeText(file, 'image,instruction\nx.png,one\ny.png,two\n');
    const rows = await readAll(file);
    expect(rows.map((r) => [r.index, r.where])).toEqual([
      [0, 'd.csv line 2'],
      [1, 'd.csv line 3'],
    ]);
  });

  it('splits comma lists but keeps data URIs whole', () => {
    expect(parseImageCell('a.png, b.png', 'x')).toEqual(['a.png', 'b.png']);
    expect(parseImageCell('data:image/png;base64,AAAA', 'x')).toEqual(['data:image/png;base64,AAAA']);
    expect(parseImageCell('  ', 'x')).toEqual([]);
    expect(() => parseImageCell('["a.png",', 'f.csv: line 2')).toThrow(/f\.csv: line 2.*JSON array/);
  });

  it.each([
    [
      'missing instruction column',
      'input_images,prompt\na.png,x\n',
      /no "instruction" column.*--instruction-key.*columns are: input_images, prompt/,
    ],
    ['missing image column', 'photo,instruction\na.png,x\n', /no image column; expected one of input_images, image_url, image/],
    ['ragged row', 'input_images,instruction\na.png,x\nb.png,y,z\n', /line 3/],
    ['bad quoting', 'input_images,instruction\na.png,"unterminated\n', /data\.csv: .*quote/i],
    [
      'non-integer index',
      'index,input_images,instruction\n1,a.png,x\nabc,b.png,y\n',
      /data\.csv: line 3, column "index": "abc" is not a non-negative integer/,
    ],
    [
      'duplicate index',
      'index,input_images,instruction\n1,a.png,x\n1,b.png,y\n',
      /data\.csv: line 3, column "index": index 1 repeats .*data\.csv: line 2/,
    ],
    ['header only', 'input_images,instruction\n', /no data rows/],
  ])('rejects a dataset with %s, naming file, line and column', async (_name, text, pattern) => {
    const dir = tempDir();
    const file = join(dir, 'data.csv');
    writeText(file, text);
    const attempt = readAll(file);
    await expect(attempt).rejects.toBeInstanceOf(DatasetError);
    await expect(readAll(file)).rejects.toThrow(pattern);
  });

  it('names a missing --image-key column', async () => {
    const dir = tempDir();
    const file = join(dir, 'data.csv');
    writeText(file, 'input_images,instruction\na.png,x\n');
    await expect(readAll(file, 'photo')).rejects.toThrow(/no "photo" column \(--image-key\)/);
  });
});
