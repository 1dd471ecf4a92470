import type { Browser, Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, type CliProcess } from '../helpers/cli';
import { assertChromium, launchChromium, startViewerCli } from '../helpers/chromium';
import { tempDir } from '../helpers/fixtures';
import { fixtureRow, writeFixtureRun } from './runFixture';

// The viewer on a run of 20,000 rows (written with the run's own writers, not 20,000 edits), served
// by the built CLI and driven in headless chromium: the first paint and a filter change are timed
// and printed, and held to generous bounds (the suite runs on 2 shared cores). The page holds one
// page of 100 tiles and asks for thumbnails lazily, so it never loads 20,000 rows' images.

const ROWS = 20_000;

let viewer: CliProcess;
let url: string;
let browser: Browser;
/** When `atelier view` was started: the server starts reading the run as soon as it listens. */
let spawnedAt: number;
const imageRequests: string[] = [];

function inPage(page: Page, expression: string): Promise<unknown> {
  return page.evaluate(expression);
}

async function tiles(page: Page): Promise<number[]> {
  return (await inPage(page, `[...document.querySelectorAll('#grid .tile')].map((e) => Number(e.dataset.index))`)) as number[];
}

beforeAll(async () => {
  assertBuilt();
  assertChromium();
  const started = Date.now();
  const outputDir = await writeFixtureRun(tempDir('atelier-viewer-20k-'), ROWS);
  console.log(`20,000-row run folder written in ${Date.now() - started} ms`);
  spawnedAt = Date.now();
  ({ viewer, url } = await startViewerCli([outputDir], { ...process.env }));
  browser = await launchChromium();
}, 600_000);

afterAll(async () => {
  await browser?.close();
  await viewer?.stop();
});

describe('atelier view with 20,000 rows (headless chromium)', () => {
  it('paints the first page and applies a filter fast, a page of tiles at a time, thumbnails lazily', async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 900 });
    page.on('request', (r) => {
      if (/\/(thumb|image)\//.test(r.url())) imageRequests.push(r.url());
    });
    // First paint: from navigation to the first page's tiles in the grid (the server reads the
    // run's 20,000 ledger entries, judge records and marks for the first request).
    const t0 = Date.now();
    await page.goto(url);
    await page.waitForFunction(`document.querySelectorAll('#grid .tile').length === 100`, { timeout: 120_000 });
    const firstPaintMs = Date.now() - t0;
    const fromStartMs = Date.now() - spawnedAt;
    expect(await tiles(page)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    // Then the whole run: every row counted (until then the page says how far the read is).
    await page.waitForFunction(`document.getElementById('page-info').textContent === '1–100 of 20000'`, { timeout: 120_000 });
    const allReadMs = Date.now() - spawnedAt;
    expect(await inPage(page, `document.getElementById('count-rows').textContent`)).toBe('rows: 20000');

    // A filter change: failed rows, found among all 20,000 and painted.
    const failed = Array.from({ length: ROWS }, (_, i) => i).filter((i) => fixtureRow(i).status === 'failed');
    const t1 = Date.now();
    await page.select('#f-status', 'failed');
    await page.waitForFunction(
      `document.querySelector('#grid .tile')?.dataset.index === '${failed[0]}' && document.getElementById('page-info').textContent === '1–100 of ${failed.length}'`,
      {
        timeout: 60_000,
      },
    );
    const filterMs = Date.now() - t1;

    // Search and a sort over the whole run, timed too.
    const t2 = Date.now();
    await page.select('#f-status', '');
    await page.type('#f-q', 'SNOW violin');
    // Every word, any case, anywhere in the instruction.
    const violins = Array.from({ length: ROWS }, (_, i) => i).filter((i) => /snow.*violin/i.test(fixtureRow(i).instruction));
    await page.waitForFunction(`document.getElementById('page-info').textContent === '1–100 of ${violins.length}'`, { timeout: 60_000 });
    const searchMs = Date.now() - t2;

    console.log(
      `viewer, ${ROWS} rows: first paint ${firstPaintMs} ms after navigation (${fromStartMs} ms after \`atelier view\` started), ` +
        `whole run read ${allReadMs} ms after start, filter change ${filterMs} ms, search ${searchMs} ms, ` +
        `image requests ${imageRequests.length} (${new Date().toISOString()})`,
    );
    // Generous: measured at ~1-2 s / ~0.1-0.3 s under load on 2 shared cores (docs/review-judge-export.md).
    expect(fromStartMs).toBeLessThan(60_000); // includes launching chromium
    expect(firstPaintMs).toBeLessThan(15_000);
    expect(allReadMs).toBeLessThan(120_000);
    expect(filterMs).toBeLessThan(5_000);
    expect(searchMs).toBeLessThan(5_000);
    // Never every row's images: at most two thumbnails per tile of a page, for the pages shown.
    expect(imageRequests.length).toBeLessThanOrEqual(3 * 2 * 100);

    // The last page is reachable and holds the last rows.
    await page.evaluate(`document.getElementById('f-q').value = ''; document.getElementById('f-q').dispatchEvent(new Event('input'))`);
    await page.waitForFunction(`document.getElementById('page-info').textContent === '1–100 of 20000'`);
    // One click at a time: the page scrolls to the top when the next page arrives.
    await page.click('#next');
    await page.waitForFunction(`document.getElementById('page-info').textContent === '101–200 of 20000'`);
    await page.click('#next');
    await page.waitForFunction(`document.getElementById('page-info').textContent === '201–300 of 20000'`);
    expect(await inPage(page, `document.querySelector('#grid .tile').dataset.index`)).toBe('200');
    // The keyboard crosses pages: ← from a page's first row is the previous page's last.
    await page.waitForSelector('#grid .tile.selected[data-index="200"]');
    await page.keyboard.press('ArrowLeft');
    await page.waitForSelector('#grid .tile.selected[data-index="199"]');
    expect(await inPage(page, `document.getElementById('page-info').textContent`)).toBe('101–200 of 20000');
    await page.close();
  });
});
