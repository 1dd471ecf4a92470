import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DatasetRow } from '../../lib/dataset/common';
import { readCsvDataset } from '../../lib/dataset/csv';
import { readSource } from '../../lib/images';
import { ClassifiedError } from '../../lib/shared/errors';
import { tempDir, writePng, writeText } from '../helpers/fixtures';

// Image paths stay inside the dataset's folder (issue 23), and not only when the run is planned: a
// dataset can change between planning and the row (or the export, or the viewer) reading the file.
// A file swapped for a link leading out after planning is refused when it is read, naming the path
// and where it leads; a file that is still the dataset's own reads as before.

async function planned(csv: string, allowOutsidePaths = false): Promise<DatasetRow[]> {
  const rows: DatasetRow[] = [];
  for await (const row of readCsvDataset(csv, {
    instructionKey: 'instruction',
    imageKey: undefined,
    allowOutsidePaths,
    storeBlob: () => Promise.reject(new Error('a CSV has no embedded images')),
  }))
    rows.push(row);
  return rows;
}

async function layout() {
  const dir = tempDir('atelier-confine-row-');
  const ds = join(dir, 'ds');
  mkdirSync(join(ds, 'imgs'), { recursive: true });
  await writePng(join(ds, 'imgs', 'a.png'), '#204060', 8);
  await writePng(join(ds, 'b.png'), '#406020', 8);
  // Outside the dataset: a picture of the user's own (it decodes, so "only images" would not stop it).
  mkdirSync(join(dir, 'private'));
  await writePng(join(dir, 'private', 'me.png'), '#ff00ff', 8);
  const csv = join(ds, 'rows.csv');
  writeText(csv, ['image,instruction', 'imgs/a.png,one', 'b.png,two'].join('\n'));
  return { dir, ds, csv };
}

const sources = { cacheDir: tempDir('atelier-confine-cache-') };

describe('image paths stay inside the dataset when the row reads them', () => {
  it('a file swapped for a link leading out after planning is refused at read time, naming the path', async () => {
    const { dir, ds, csv } = await layout();
    const rows = await planned(csv);
    const [a, b] = rows.map((r) => r.images[0]!);
    // Planned inside: both read as they are.
    expect(await readSource(a!, sources)).toEqual(readFileSync(join(ds, 'imgs', 'a.png')));

    // After planning, the file becomes a link to the user's own picture, and a folder on the way a link out.
    rmSync(join(ds, 'b.png'));
    symlinkSync(join(dir, 'private', 'me.png'), join(ds, 'b.png'));
    renameSync(join(ds, 'imgs'), join(dir, 'imgs-moved'));
    mkdirSync(join(dir, 'private', 'imgs'));
    await writePng(join(dir, 'private', 'imgs', 'a.png'), '#ff00ff', 8);
    symlinkSync(join(dir, 'private', 'imgs'), join(ds, 'imgs'));

    for (const [ref, name, target] of [
      [b!, 'b.png', 'me.png'],
      [a!, join('imgs', 'a.png'), join('imgs', 'a.png')],
    ] as const) {
      const read = readSource(ref, sources);
      await expect(read).rejects.toBeInstanceOf(ClassifiedError);
      await expect(read).rejects.toMatchObject({ kind: 'inputError' });
      await expect(read).rejects.toThrow(
        `input image ${join(ds, name)} is outside the dataset's folder (${ds}) now: it leads to ${join(dir, 'private', target)}`,
      );
    }
  });

  it('--allow-outside-paths reads what the path leads to, as before', async () => {
    const { dir, ds, csv } = await layout();
    const rows = await planned(csv, true);
    rmSync(join(ds, 'b.png'));
    symlinkSync(join(dir, 'private', 'me.png'), join(ds, 'b.png'));
    expect(await readSource(rows[1]!.images[0]!, sources)).toEqual(readFileSync(join(dir, 'private', 'me.png')));
  });

  it('a link inside the dataset stays readable', async () => {
    const { ds, csv } = await layout();
    const rows = await planned(csv);
    rmSync(join(ds, 'b.png'));
    symlinkSync(join(ds, 'imgs', 'a.png'), join(ds, 'b.png'));
    expect(await readSource(rows[1]!.images[0]!, sources)).toEqual(readFileSync(join(ds, 'imgs', 'a.png')));
  });
});
