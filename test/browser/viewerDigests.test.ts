import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'puppeteer-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunStore } from '../../lib/run/runStore';
import { startViewer, type Viewer } from '../../web/server';
import { launchChromium } from '../helpers/chromium';
import { tempDir } from '../helpers/fixtures';
import { writeFixtureRun } from './runFixture';

// The viewer serves an output only if it is the bytes its row's commit recorded (the ledger entry's
// outputDigests, issue 23): an output swapped after the run is refused with a 409 naming the row, and
// the page shows that reason where the picture would be. A thumbnail kept from before the swap is
// not shown once the output's size changed.

let outputDir: string;
let viewer: Viewer;
let browser: Browser | undefined;
let blue: Buffer;

const outputPath = (i: number) => join(outputDir, 'images', `${String(i).padStart(6, '0')}.png`);

/** Replaces a row's output file (the fixture's outputs are hard links to one file: unlinked first). */
async function swap(i: number, rgb: { r: number; g: number; b: number }, side = 80): Promise<void> {
  rmSync(outputPath(i));
  writeFileSync(
    outputPath(i),
    await sharp({ create: { width: side, height: side, channels: 3, background: rgb } })
      .png()
      .toBuffer(),
  );
}

beforeAll(async () => {
  outputDir = await writeFixtureRun(tempDir('atelier-viewer-digests-'), 4);
  blue = readFileSync(outputPath(0));
  // Rows 0, 2 and 3 are ok with one output each; their commits record its sha256 and size.
  const store = RunStore.open(outputDir);
  for (const i of [0, 2, 3]) {
    const entry = (await store.readEntry(i))!;
    const path = entry.outputImages![0]!;
    const outputDigests = { [path]: { sha256: createHash('sha256').update(blue).digest('hex'), size: blue.length } };
    await store.writeEntry({ ...entry, outputDigests }, { setAside: true });
  }
  viewer = await startViewer({ outputDir, runId: 'viewer-fixture' });
});
afterAll(async () => {
  await browser?.close();
  await viewer?.close();
});

describe('the viewer checks outputs against their recorded digests', () => {
  it('serves the recorded bytes, refuses a swapped output naming the row, and the page says so', async () => {
    const get = (path: string) => fetch(new URL(path, viewer.url));
    // Untouched: served as is.
    const ok = await get('/image/3/out0');
    expect(ok.status).toBe(200);
    expect(Buffer.from(await ok.arrayBuffer()).equals(blue)).toBe(true);
    // A thumbnail made while row 2's output held (kept in .atelier/thumbs/).
    expect((await get('/thumb/2/out0')).status).toBe(200);

    // Row 0's output swapped for another picture, row 2's too (after its thumbnail was kept).
    await swap(0, { r: 255, g: 0, b: 255 });
    await swap(2, { r: 0, g: 255, b: 0 });
    for (const path of ['/image/0/out0', '/thumb/0/out0', '/image/2/out0', '/thumb/2/out0']) {
      const res = await get(path);
      expect(res.status, path).toBe(409);
      const { error } = (await res.json()) as { error: string };
      expect(error, path).toMatch(
        new RegExp(`^output 0 of row ${path.split('/')[2]} \\(.*\\.png\\) is not served: .*replaced after the run`),
      );
    }
    // A swap of the very same size: the full image is refused (its bytes are checked, not its size).
    rmSync(outputPath(3));
    const same = Buffer.from(blue);
    same.writeUInt8(same.readUInt8(same.length - 20) ^ 0xff, same.length - 20);
    writeFileSync(outputPath(3), same);
    expect((await get('/image/3/out0')).status).toBe(409);

    // In the page: row 0's tile shows the reason where the output would be, not a picture.
    browser = await launchChromium();
    const page = await browser.newPage();
    await page.goto(viewer.url);
    await page.waitForFunction(`document.querySelector('#grid .tile[data-index="0"] .unserved') !== null`, { timeout: 30_000 });
    const text = (await page.evaluate(`document.querySelector('#grid .tile[data-index="0"] .unserved').textContent`)) as string;
    // The server's refusal, or (once the run is read again) the row's own word that its output changed.
    expect(text).toMatch(/^output 0 of row 0 .* is not served: it is not what the row made|^output replaced or missing since the run/);
  }, 120_000);
});
