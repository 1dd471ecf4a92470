import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import type { Browser, Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { assertBuilt, atelier, type CliProcess, REPO } from '../helpers/cli';
import { assertChromium, launchChromium, startViewerCli } from '../helpers/chromium';
import { tempDir } from '../helpers/fixtures';

// `atelier view` in a real browser: Debian's chromium (installed by the test setup) driven by
// puppeteer-core, against the viewer the built CLI serves for a real run of the example dataset
// (embedded dev server, openai SDK against the stand-in; one row refused to have a failure to see).
// Screenshots go to test-artifacts/viewer/; the grid's is copied to docs/ for the README.

const ARTIFACTS = join(REPO, 'test-artifacts', 'viewer');
const API_KEY = 'sk-test-viewer-3f9a1c7e5b2d4068';

let standin: OpenAIStandin;
let dir: string;
let outputDir: string;
let viewer: CliProcess;
let url: string;
let browser: Browser;

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
  delete e.TEMPORAL_ADDRESS;
  return e;
}

/** Evaluates an expression in the page (a string: this file is compiled without the DOM's types). */
function inPage(page: Page, expression: string): Promise<unknown> {
  return page.evaluate(expression);
}

async function tiles(page: Page): Promise<number[]> {
  return (await inPage(page, `[...document.querySelectorAll('#grid .tile')].map((e) => Number(e.dataset.index))`)) as number[];
}

/** Waits for the grid to show these rows (the server filters: a change is a request away). */
async function showsTiles(page: Page, indexes: number[]): Promise<void> {
  await page
    .waitForFunction(`[...document.querySelectorAll('#grid .tile')].map((e) => Number(e.dataset.index)).join() === '${indexes.join()}'`, {
      timeout: 15_000,
    })
    .catch(async () => expect(await tiles(page)).toEqual(indexes));
}

/** Waits until every thumbnail in the grid has loaded and decoded to a real image. */
async function thumbnailsLoaded(page: Page): Promise<number> {
  await page.waitForFunction(`[...document.querySelectorAll('#grid .tile img')].every((i) => i.complete && i.naturalWidth > 0)`);
  return (await inPage(page, `document.querySelectorAll('#grid .tile img').length`)) as number;
}

beforeAll(async () => {
  assertBuilt();
  assertChromium();
  mkdirSync(ARTIFACTS, { recursive: true });
  standin = await startOpenAIStandin();
  standin.script('Turn the mug into a glass of iced tea', [faults.moderationBlocked()], { repeat: true });
  dir = tempDir('atelier-viewer-');
  outputDir = join(dir, 'out');
  const run = await atelier(
    [
      'edit',
      '--input',
      join(REPO, 'examples', 'edits.csv'),
      '--output-dir',
      outputDir,
      '--backend',
      'openai',
      '--model',
      'gpt-image-2',
      '--state-dir',
      join(dir, 'state'),
    ],
    env(),
  );
  expect(run.code, run.stderr).toBe(2);
  ({ viewer, url } = await startViewerCli([outputDir], env()));
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await viewer?.stop();
  await standin?.close();
});

describe('atelier view (headless chromium)', () => {
  it('shows before → after thumbnails, filters by status and error class, marks a row by keyboard and keeps the mark', async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 900 });
    await page.goto(url);
    await page.waitForSelector('#grid .tile');
    expect(await tiles(page)).toEqual([0, 1, 2, 3]);
    // Three ok rows show input and output; the refused one shows its input only.
    expect(await thumbnailsLoaded(page)).toBe(7);
    // Made once per image and kept in the run's folder: row 3's first input is row 1's cat.
    expect(readdirSync(join(outputDir, '.atelier', 'thumbs'))).toHaveLength(6);
    const refusedText = await inPage(page, `document.querySelector('#grid .tile[data-index="2"] .error').textContent`);
    expect(refusedText).toMatch(/^Blocked: /);
    await page.screenshot({ path: join(ARTIFACTS, 'grid.png') });

    await page.select('#f-status', 'failed');
    await showsTiles(page, [2]);
    await page.select('#f-status', '');
    await page.select('#f-error', 'Blocked');
    await showsTiles(page, [2]);
    await page.select('#f-error', '');
    await page.select('#f-status', 'ok');
    await showsTiles(page, [0, 1, 3]);

    // Keyboard: the first tile is selected; → moves to row 1; r rejects it; → and a accept row 3.
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('r');
    await page.waitForFunction(`document.getElementById('status').textContent === 'row 1: rejected'`);
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('a');
    await page.waitForFunction(`document.getElementById('status').textContent === 'row 3: accepted'`);
    expect(await inPage(page, `document.querySelector('#redo code').textContent`)).toMatch(/^atelier retry \S+ --rejected --redo$/);
    await page.select('#f-status', '');
    await page.screenshot({ path: join(ARTIFACTS, 'grid-marked.png') });
    // The README's screenshot: made here, refreshed on request (its header holds a temp path and a
    // time, so rewriting it on every run would leave the working tree changed).
    if (process.env.ATELIER_UPDATE_SCREENSHOTS === '1' || !existsSync(join(REPO, 'docs', 'viewer.png'))) {
      copyFileSync(join(ARTIFACTS, 'grid-marked.png'), join(REPO, 'docs', 'viewer.png'));
    }

    // The marks are the run's, on disk: a reload (a new page, the server re-reading) shows them.
    await page.reload();
    await page.waitForSelector('#grid .tile');
    await page.select('#f-review', 'rejected');
    await showsTiles(page, [1]);
    await page.select('#f-review', 'accepted');
    await showsTiles(page, [3]);
    const mark = JSON.parse(readFileSync(join(outputDir, '.atelier', 'review', '000001.json'), 'utf8')) as { verdict: string };
    expect(mark.verdict).toBe('rejected');

    // A row's detail: instruction, every input and output full size, attempts, cost.
    await page.select('#f-review', '');
    await page.select('#f-status', '');
    await showsTiles(page, [0, 1, 2, 3]);
    await page.click('#grid .tile[data-index="3"]');
    await page.waitForSelector('#detail:not([hidden]) img');
    await page.waitForFunction(`[...document.querySelectorAll('#detail img')].every((i) => i.complete && i.naturalWidth > 0)`);
    const detail = (await inPage(
      page,
      `({ text: document.getElementById('detail').textContent, images: document.querySelectorAll('#detail .images img').length })`,
    )) as { text: string; images: number };
    expect(detail.images).toBe(3); // two inputs (cat, hat) and the output
    expect(detail.text).toContain('Put the hat from the second image on the cat');
    expect(detail.text).toMatch(/attempts1/);
    expect(detail.text).toMatch(/cost \(estimate\)\$\d/);
    await page.screenshot({ path: join(ARTIFACTS, 'detail.png') });
    await page.keyboard.press('Escape');
    expect(await inPage(page, `document.getElementById('detail').hidden`)).toBe(true);
    await page.close();
  });

  it('is live: a row redone while the page is open shows its new generation without a reload', async () => {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForSelector('#grid .tile[data-index="0"]');
    const runId = (JSON.parse(readFileSync(join(outputDir, '.atelier', 'run.json'), 'utf8')) as { runId: string }).runId;
    const redo = await atelier(['retry', runId, '--redo', '--rows', '0', '--state-dir', join(dir, 'state')], env());
    expect(redo.code, redo.stderr).toBe(0); // the retry's own row succeeded (the refused row is not one of them)
    // The page polls: it shows the row done again, as generation 2 (not the interim "set aside" state).
    const tile0 = `document.querySelector('#grid .tile[data-index="0"] .meta')`;
    await page.waitForFunction(`${tile0}?.textContent.includes('gen 2') && ${tile0}?.querySelector('.badge.ok') !== null`, {
      timeout: 15_000,
    });
    await page.click('#grid .tile[data-index="0"]');
    await page.waitForFunction(`document.getElementById('detail').textContent.includes('Earlier outputs (this is generation 2)')`);
    // Its earlier output is shown too (from .atelier/history/).
    await page.waitForFunction(
      `[...document.querySelectorAll('#detail .images img')].length === 3 && [...document.querySelectorAll('#detail img')].every((i) => i.complete && i.naturalWidth > 0)`,
    );
    await page.screenshot({ path: join(ARTIFACTS, 'redone.png') });
    await page.close();
  });

  it('refuses writes from other origins: a wrong Host, a form post, a mark on a failed row', async () => {
    const port = new URL(url).port;
    // A page on another name that resolves to loopback (DNS rebinding) sends its own Host.
    const wrongHost = await new Promise<number | undefined>((resolve, reject) =>
      get(
        { host: '127.0.0.1', port, path: '/api/rows', headers: { host: `evil.example:${port}` } },
        (res) => (res.resume(), resolve(res.statusCode)),
      ).on('error', reject),
    );
    expect(wrongHost).toBe(403);
    const form = await fetch(`${url}api/review/0`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'verdict=accepted',
    });
    expect(form.status).toBe(415);
    const failed = await fetch(`${url}api/review/2`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ verdict: 'accepted' }),
    });
    expect(failed.status).toBe(409);
    expect(((await failed.json()) as { error: string }).error).toMatch(/row 2 has no output to judge \(failed\)/);
    const bad = await fetch(`${url}api/review/0`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ verdict: 'maybe' }),
    });
    expect(bad.status).toBe(400);
  });
});
