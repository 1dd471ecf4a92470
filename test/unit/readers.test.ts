import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { readDataset, type DatasetRow } from '../../lib/dataset';
import { DatasetError } from '../../lib/shared/errors';
import { tempDir, writeText } from '../helpers/fixtures';
import { writeParquetFixture } from '../helpers/parquet';
import { runBlobStore } from '../../lib/dataset/blobs';
import { LocalStorage } from '../../storage/local';

async function readAll(
  path: string,
  extra: { imageKey?: string; conversationKey?: string; allowOutsidePaths?: boolean; origin?: (file: string) => string } = {},
): Promise<{ rows: DatasetRow[]; runDir: string }> {
  const runDir = join(tempDir(), 'out');
  const storeBlob = runBlobStore(new LocalStorage(runDir));
  const rows: DatasetRow[] = [];
  for await (const row of readDataset(path, { instructionKey: 'instruction', storeBlob, ...extra }, () => undefined)) rows.push(row);
  return { rows, runDir };
}

/** A blob ref's file in the run's folder. */
const blobFile = (runDir: string, ref: { kind: string; source: string }) => {
  expect(ref.kind).toBe('blob');
  return join(runDir, ref.source);
};

const png = (color: string) =>
  sharp({ create: { width: 4, height: 4, channels: 3, background: color } })
    .png()
    .toBuffer();

describe('JSONL datasets (DataFlow shape)', () => {
  it('reads single, multi-image, multi-turn and text-to-image rows', async () => {
    const dir = tempDir();
    const file = join(dir, 'data.jsonl');
    writeText(
      file,
      [
        JSON.stringify({ images: 'a.png', conversations: [{ role: 'user', content: 'make it red' }] }),
        '',
        JSON.stringify({
          images: ['a.png', 'https://x.test/b.png'],
          conversations: [{ role: 'user', content: '<image><image>merge them' }],
        }),
        JSON.stringify({
          images: ['a.png'],
          conversations: [
            { role: 'user', content: 'turn one' },
            { role: 'assistant', content: 'done' },
            { role: 'user', content: [{ type: 'text', text: 'turn two' }] },
          ],
        }),
        JSON.stringify({ conversations: [{ from: 'human', value: 'draw a cat' }] }),
        JSON.stringify({ image: 'c.png', instruction: 'plain instruction', index: 9 }),
      ].join('\n'),
    );
    const { rows } = await readAll(file);
    expect(rows.map((r) => [r.position, r.index, r.turns, r.images.length, r.where])).toEqual([
      [0, 0, ['make it red'], 1, 'data.jsonl line 1'],
      [1, 1, ['merge them'], 2, 'data.jsonl line 3'],
      [2, 2, ['turn one', 'turn two'], 1, 'data.jsonl line 4'],
      [3, 3, ['draw a cat'], 0, 'data.jsonl line 5'],
      [4, 9, ['plain instruction'], 1, 'data.jsonl line 6'],
    ]);
    expect(rows[1]!.images).toEqual([
      { kind: 'file', source: join(dir, 'a.png'), within: dir.length },
      { kind: 'url', source: 'https://x.test/b.png' },
    ]);
    expect(rows[2]!.record.conversations).toHaveLength(3);
  });

  it.each([
    ['a malformed line', '{"images": "a.png", "conversations": [}\n', /data\.jsonl: line 1: invalid JSON/],
    ['a non-object line', '[1,2]\n', /line 1: each line must be a JSON object/],
    ['no instruction at all', '{"images": "a.png"}\n', /line 1: no "conversations" list and no "instruction" string/],
    ['no user turn', '{"conversations": [{"role": "assistant", "content": "x"}]}\n', /line 1: "conversations" has no user message/],
    ['a bad images value', '{"images": 5, "instruction": "x"}\n', /line 1: "images" must be an image path\/URL or a list/],
  ])('rejects %s, naming file and line', async (_name, text, pattern) => {
    const dir = tempDir();
    writeText(join(dir, 'data.jsonl'), text);
    await expect(readAll(join(dir, 'data.jsonl'))).rejects.toThrow(pattern);
  });

  it('rejects an --image-key no row has', async () => {
    const dir = tempDir();
    writeText(join(dir, 'data.jsonl'), '{"images": "a.png", "instruction": "x"}\n');
    await expect(readAll(join(dir, 'data.jsonl'), { imageKey: 'photo' })).rejects.toThrow(/no row has the "photo" key/);
  });
});

describe('Parquet datasets', () => {
  it('reads embedded images (struct and list of structs), storing bytes content-addressed', async () => {
    const dir = tempDir();
    const red = await png('#ff0000');
    const blue = await png('#0000ff');
    writeParquetFixture(
      join(dir, 'single.parquet'),
      [
        { instruction: 'one', image: { bytes: red, path: 'red.png' } },
        { instruction: 'two', image: { bytes: red, path: null } },
        { instruction: 'three', image: null },
      ],
      { imageKind: 'struct', imageColumn: 'image' },
    );
    const { rows, runDir } = await readAll(join(dir, 'single.parquet'));
    expect(rows.map((r) => [r.index, r.turns[0], r.images.length])).toEqual([
      [0, 'one', 1],
      [1, 'two', 1],
      [2, 'three', 0],
    ]);
    // Same bytes, same blob: content-addressed.
    expect(rows[0]!.images[0]!.source).toBe(rows[1]!.images[0]!.source);
    expect(rows[0]!.images[0]!.source).toMatch(/^\.atelier\/blobs\/[0-9a-f]{64}\.png$/);
    expect(readFileSync(blobFile(runDir, rows[0]!.images[0]!)).equals(red)).toBe(true);
    expect(rows[0]!.record.image).toBe('red.png');
    expect(rows[1]!.record.image).toMatch(/^embedded:[0-9a-f]{64}\.png$/);

    writeParquetFixture(
      join(dir, 'multi.parquet'),
      [
        {
          instruction: 'pair',
          image: [
            { bytes: red, path: 'a' },
            { bytes: blue, path: 'b' },
          ],
          index: 41,
        },
      ],
      { imageKind: 'struct-list', withIndex: true },
    );
    const multi = await readAll(join(dir, 'multi.parquet'));
    expect(multi.rows[0]!.index).toBe(41);
    expect(
      multi.rows[0]!.images.map((i) => readFileSync(blobFile(multi.runDir, i)).equals(i === multi.rows[0]!.images[0] ? red : blue)),
    ).toEqual([true, true]);
  });

  it('reads a directory of shards in sorted order, path strings and lists, relative to the shard', async () => {
    const dir = tempDir();
    const shards = join(dir, 'shards');
    writeParquetFixture(join(shards, 'train-00001.parquet'), [{ instruction: 'c', image: ['x.png', 'y.png'] }], {
      imageKind: 'string-list',
    });
    writeParquetFixture(
      join(shards, 'train-00000.parquet'),
      [
        { instruction: 'a', image: ['a.png'] },
        { instruction: 'b', image: ['https://x.test/b.png'] },
      ],
      { imageKind: 'string-list' },
    );
    writeText(join(shards, 'README.md'), 'not a shard');
    const { rows } = await readAll(shards);
    expect(rows.map((r) => [r.position, r.turns[0], r.where])).toEqual([
      [0, 'a', 'train-00000.parquet row 0'],
      [1, 'b', 'train-00000.parquet row 1'],
      [2, 'c', 'train-00001.parquet row 0'],
    ]);
    expect(rows[2]!.images).toEqual([
      { kind: 'file', source: join(shards, 'x.png'), within: shards.length },
      { kind: 'file', source: join(shards, 'y.png'), within: shards.length },
    ]);
  });

  it('reports unreadable files and missing columns before any row runs', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'broken.parquet'), 'PAR1 this is not parquet');
    await expect(readAll(join(dir, 'broken.parquet'))).rejects.toThrow(/broken\.parquet: not a readable Parquet file/);
    writeParquetFixture(join(dir, 'noimg.parquet'), [{ instruction: 'x', image: 'a.png' }], { imageKind: 'string', imageColumn: 'photo' });
    await expect(readAll(join(dir, 'noimg.parquet'))).rejects.toBeInstanceOf(DatasetError);
    await expect(readAll(join(dir, 'noimg.parquet'))).rejects.toThrow(
      /noimg\.parquet: no image column.*columns are: instruction, photo, extra/,
    );
    expect((await readAll(join(dir, 'noimg.parquet'), { imageKey: 'photo' })).rows).toHaveLength(1);
    expect(existsSync(join(dir, 'empty'))).toBe(false);
  });
});

describe('image paths stay inside the dataset', () => {
  // A dataset from elsewhere must not make the user read (and then export or view) their own files.
  const layout = async () => {
    const dir = tempDir('atelier-confine-');
    const ds = join(dir, 'ds');
    writeText(join(dir, 'secret', 'fake_id_rsa'), '-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n');
    writeFileSync(join(dir, 'secret', 'elsewhere.png'), await png('#ff0000'));
    mkdirSync(join(ds, 'imgs'), { recursive: true });
    writeFileSync(join(ds, 'imgs', 'a.png'), await png('#00ff00'));
    return { dir, ds };
  };
  const csv = (ds: string, cells: string[]) => {
    const file = join(ds, 'edits.csv');
    writeText(file, ['image,instruction', ...cells.map((c, i) => `"${c.replace(/"/g, '""')}",row ${i}`)].join('\n'));
    return file;
  };

  it('refuses ../ climbing out, absolute paths, file:// URLs and s3:// objects elsewhere, naming the row, the path and the flag', async () => {
    const { dir, ds } = await layout();
    const cases: Array<[string, RegExp]> = [
      ['../secret/fake_id_rsa', /outside the dataset's folder/],
      ['imgs/../../secret/fake_id_rsa', /outside the dataset's folder/],
      [join(dir, 'secret', 'fake_id_rsa'), /outside the dataset's folder/],
      [`file://${join(dir, 'secret', 'elsewhere.png')}`, /outside the dataset's folder/],
      ['s3://bucket/private/key.png', /an s3:\/\/ image is elsewhere/],
    ];
    for (const [cell, why] of cases) {
      const file = csv(ds, ['imgs/a.png', cell]);
      const read = readAll(file);
      await expect(read, cell).rejects.toThrow(DatasetError);
      await expect(read, cell).rejects.toThrow(`${file}: line 3, column "image": image ${JSON.stringify(cell)} is outside`);
      await expect(read, cell).rejects.toThrow(why);
      await expect(read, cell).rejects.toThrow(/pass --allow-outside-paths to read images elsewhere/);
    }
  });

  it('refuses symbolic links that lead out (a linked file or a linked folder), follows those that stay in', async () => {
    const { dir, ds } = await layout();
    symlinkSync(join(dir, 'secret', 'fake_id_rsa'), join(ds, 'imgs', 'key.png'));
    symlinkSync(join(dir, 'secret'), join(ds, 'linked'));
    symlinkSync(join(ds, 'imgs', 'a.png'), join(ds, 'same.png'));
    // A dangling link whose target could appear before the row is read.
    symlinkSync(join(dir, 'secret', 'later.png'), join(ds, 'later.png'));
    for (const cell of ['imgs/key.png', 'linked/elsewhere.png', 'later.png']) {
      await expect(readAll(csv(ds, [cell])), cell).rejects.toThrow(/a symbolic link leads to .*secret/);
    }
    const { rows } = await readAll(csv(ds, ['same.png', join(ds, 'imgs', 'a.png'), 'imgs/missing.png']));
    expect(rows.map((r) => r.images[0])).toEqual([
      // Confined to the dataset's folder (`within` its length), checked again when read (test/unit/confineAtRowTime.test.ts).
      { kind: 'file', source: join(ds, 'same.png'), within: ds.length },
      { kind: 'file', source: join(ds, 'imgs', 'a.png'), within: ds.length },
      { kind: 'file', source: join(ds, 'imgs', 'missing.png'), within: ds.length },
    ]);
  });

  it('JSONL cells, Parquet path strings and masks are held to the same rule', async () => {
    const { ds } = await layout();
    const jsonl = join(ds, 'rows.jsonl');
    writeText(jsonl, JSON.stringify({ images: ['imgs/a.png', '../secret/fake_id_rsa'], instruction: 'x' }));
    await expect(readAll(jsonl)).rejects.toThrow(/rows\.jsonl: line 1, "images": image "\.\.\/secret\/fake_id_rsa" is outside/);
    const parquet = join(ds, 'rows.parquet');
    writeParquetFixture(parquet, [{ instruction: 'x', image: '../secret/elsewhere.png' }], { imageKind: 'string', imageColumn: 'image' });
    await expect(readAll(parquet)).rejects.toThrow(/rows\.parquet: row 0, column "image": image "\.\.\/secret\/elsewhere\.png" is outside/);
    const masked = join(ds, 'masked.csv');
    writeText(masked, 'image,mask,instruction\nimgs/a.png,../secret/elsewhere.png,x\n');
    const read = (async () => {
      const rows: DatasetRow[] = [];
      const storeBlob = runBlobStore(new LocalStorage(join(tempDir(), 'out')));
      for await (const row of readDataset(masked, { instructionKey: 'instruction', maskKey: 'mask', storeBlob }, () => undefined))
        rows.push(row);
      return rows;
    })();
    await expect(read).rejects.toThrow(/masked\.csv: line 2, column "mask": image "\.\.\/secret\/elsewhere\.png" is outside/);
  });

  it('an s3:// dataset keeps to its prefix and a Hub dataset to its repo at the commit', async () => {
    const { ds } = await layout();
    const s3 = (file: string) => `s3://bucket/team/ds/${file.slice(ds.length + 1)}`;
    const ok = await readAll(csv(ds, ['imgs/a.png', 's3://bucket/team/ds/imgs/b.png']), { origin: s3 });
    expect(ok.rows.map((r) => r.images[0])).toEqual([
      { kind: 's3', source: 's3://bucket/team/ds/imgs/a.png' },
      { kind: 's3', source: 's3://bucket/team/ds/imgs/b.png' },
    ]);
    for (const cell of ['../other/a.png', 's3://bucket/team/other/a.png', '/etc/passwd'])
      await expect(readAll(csv(ds, [cell]), { origin: s3 }), cell).rejects.toThrow(/is outside the dataset's (prefix|location)/);

    const hub = (file: string) => `https://huggingface.co/datasets/org/name/resolve/0123abcd/data/${file.slice(ds.length + 1)}`;
    const inRepo = await readAll(csv(ds, ['../images/a.png', 'https://example.com/b.png']), { origin: hub });
    expect(inRepo.rows.map((r) => r.images[0]!.source)).toEqual([
      'https://huggingface.co/datasets/org/name/resolve/0123abcd/images/a.png',
      'https://example.com/b.png',
    ]);
    for (const cell of ['../../../other/repo/x.png', '/home/me/.ssh/id_rsa', 's3://bucket/x.png'])
      await expect(readAll(csv(ds, [cell]), { origin: hub }), cell).rejects.toThrow(/is outside the dataset's/);
  });

  it('--allow-outside-paths reads them as before', async () => {
    const { dir, ds } = await layout();
    const { rows } = await readAll(csv(ds, ['../secret/elsewhere.png', join(dir, 'secret', 'elsewhere.png'), 's3://b/k.png']), {
      allowOutsidePaths: true,
    });
    expect(rows.map((r) => r.images[0])).toEqual([
      { kind: 'file', source: join(dir, 'secret', 'elsewhere.png') },
      { kind: 'file', source: join(dir, 'secret', 'elsewhere.png') },
      { kind: 's3', source: 's3://b/k.png' },
    ]);
  });
});
