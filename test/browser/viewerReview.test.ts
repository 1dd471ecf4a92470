import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { parquetReadObjects } from 'hyparquet';
import type { Browser, Page } from 'puppeteer-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overallScore, writeJudgeRecord } from '../../lib/run/judgeScores';
import { writeLedgerEntry } from '../../lib/run/ledger';
import type { ReviewMark } from '../../lib/run/review';
import { REJECT_PRESETS } from '../../web/page';
import { atelier, assertBuilt, CliProcess, waitUntil } from '../helpers/cli';
import { assertChromium, launchChromium, startViewerCli } from '../helpers/chromium';
import { tempDir } from '../helpers/fixtures';
import { fixtureRow, INPUT2_RGB, INPUT_RGB, MULTI_ROW, MULTI_TURN, OUTPUT2_RGB, OUTPUT_RGB, writeFixtureRun } from './runFixture';

// The viewer's reviewing tools in headless chromium, against the built CLI's `atelier view` of a run
// folder of known shape (test/browser/runFixture.ts: red inputs, blue outputs, scores, marks):
// compare and zoom, search, sort, conflict flags, filter + bulk marks in one request, reject reasons
// kept with the mark and exported.

const ROWS = 60;
const ALL = Array.from({ length: ROWS }, (_, i) => i);

let dir: string;
let outputDir: string;
let viewer: CliProcess;
let url: string;
let browser: Browser;

function inPage(page: Page, expression: string): Promise<unknown> {
  return page.evaluate(expression);
}

async function tiles(page: Page): Promise<number[]> {
  return (await inPage(page, `[...document.querySelectorAll('#grid .tile')].map((e) => Number(e.dataset.index))`)) as number[];
}

/** Waits for the grid to show these rows, in this order (each control change is a request to the server). */
async function showsTiles(page: Page, indexes: number[]): Promise<void> {
  await page
    .waitForFunction(`[...document.querySelectorAll('#grid .tile')].map((e) => e.dataset.index).join() === '${indexes.join()}'`, {
      timeout: 15_000,
    })
    .catch(async () => expect(await tiles(page)).toEqual(indexes));
}

async function setInput(page: Page, id: string, value: string): Promise<void> {
  await inPage(
    page,
    `(() => { const e = document.getElementById('${id}'); e.value = ${JSON.stringify(value)}; e.dispatchEvent(new Event('input')); })()`,
  );
}

/** results.csv's review cells, by row index. */
function csvReviews(): Map<number, { review: string; review_reason: string }> {
  const rows = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Array<Record<string, string>>;
  return new Map(rows.map((r, i) => [i, { review: r.review ?? '', review_reason: r.review_reason ?? '' }]));
}

/** Waits for results.csv and results.jsonl to show a row's mark (the viewer rewrites them after marks). */
async function tablesShow(index: number, review: string, reason = ''): Promise<void> {
  await waitUntil(
    () => csvReviews().get(index)?.review === review && csvReviews().get(index)?.review_reason === reason,
    30_000,
    `results.csv row ${index}: ${review}`,
  ).catch(() => expect(csvReviews().get(index)).toEqual({ review, review_reason: reason }));
  const line = readFileSync(join(outputDir, 'results.jsonl'), 'utf8').split('\n')[index]!;
  expect(JSON.parse(line)).toMatchObject({ review, ...(reason ? { review_reason: reason } : {}) });
}

function marks(): Map<number, ReviewMark> {
  const folder = join(outputDir, '.atelier', 'review');
  return new Map(
    readdirSync(folder).map((name) => {
      const mark = JSON.parse(readFileSync(join(folder, name), 'utf8')) as ReviewMark;
      return [mark.index, mark] as const;
    }),
  );
}

/** The colour at a fraction of an element's box, from a real screenshot of it. */
async function colourAt(page: Page, selector: string, fx: number, fy: number): Promise<{ r: number; g: number; b: number }> {
  const png = await (await page.$(selector))!.screenshot();
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const at = (Math.floor(info.height * fy) * info.width + Math.floor(info.width * fx)) * 3;
  return { r: data[at]!, g: data[at + 1]!, b: data[at + 2]! };
}

function near(a: { r: number; g: number; b: number }, b: { r: number; g: number; b: number }): boolean {
  return Math.abs(a.r - b.r) + Math.abs(a.g - b.g) + Math.abs(a.b - b.b) < 30;
}

beforeAll(async () => {
  assertBuilt();
  assertChromium();
  dir = tempDir('atelier-viewer-review-');
  outputDir = await writeFixtureRun(dir, ROWS, { results: true });
  ({ viewer, url } = await startViewerCli([outputDir], { ...process.env }));
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await viewer?.stop();
});

describe('atelier view: reviewing tools (headless chromium)', () => {
  it('compares before and after with a slider or one over the other, and zooms both together', async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 900 });
    await page.goto(url);
    await page.waitForSelector('#grid .tile[data-index="0"]');
    await page.click('#grid .tile[data-index="0"]');
    await page.waitForFunction(
      `[...document.querySelectorAll('#stage img')].length === 2 && [...document.querySelectorAll('#stage img')].every((i) => i.complete && i.naturalWidth > 0)`,
    );
    // Split at 50%: the input (red) left of the line, the output (blue) right of it.
    expect(near(await colourAt(page, '#stage', 0.3, 0.5), INPUT_RGB)).toBe(true);
    expect(near(await colourAt(page, '#stage', 0.7, 0.5), OUTPUT_RGB)).toBe(true);
    // The slider moves the line: at 70%, 65% across is the input now (the square images fill 20-80% of the frame).
    await setInput(page, 'split', '70');
    expect(near(await colourAt(page, '#stage', 0.65, 0.5), INPUT_RGB)).toBe(true);
    expect(near(await colourAt(page, '#stage', 0.75, 0.5), OUTPUT_RGB)).toBe(true);
    // o: one image over the other, flipped.
    await page.keyboard.press('o');
    expect(near(await colourAt(page, '#stage', 0.3, 0.5), INPUT_RGB) && near(await colourAt(page, '#stage', 0.7, 0.5), INPUT_RGB)).toBe(
      true,
    );
    await page.keyboard.press('o');
    expect(near(await colourAt(page, '#stage', 0.3, 0.5), OUTPUT_RGB) && near(await colourAt(page, '#stage', 0.7, 0.5), OUTPUT_RGB)).toBe(
      true,
    );
    await page.keyboard.press('s');
    // Zoom: both images scale together (+ doubles, the wheel zooms around the pointer, 0 fits).
    const widths = `[...document.querySelectorAll('#stage img')].map((i) => Math.round(i.getBoundingClientRect().width / document.getElementById('stage').clientWidth * 100) / 100)`;
    expect(await inPage(page, widths)).toEqual([1, 1]);
    await page.keyboard.press('+');
    expect(await inPage(page, widths)).toEqual([2, 2]);
    expect(await inPage(page, `document.getElementById('zoom-level').textContent`)).toBe('2×');
    const box = (await (await page.$('#stage'))!.boundingBox())!;
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.wheel({ deltaY: -100 });
    await page.waitForFunction(`document.getElementById('zoom-level').textContent === '2.5×'`);
    // Dragging pans both images by the same amount.
    const left = `[...document.querySelectorAll('#stage img')].map((i) => Math.round(i.getBoundingClientRect().left))`;
    const before = (await inPage(page, left)) as number[];
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2 + 40, box.y + box.height / 2, { steps: 4 });
    await page.mouse.up();
    const after = (await inPage(page, left)) as number[];
    expect(after[0]! - before[0]!).toBe(40);
    expect(after[1]! - before[1]!).toBe(40);
    await page.keyboard.press('0');
    expect(await inPage(page, widths)).toEqual([1, 1]);
    // A row of one input and one output offers no choice of images.
    expect(await page.$('#compare-before')).toBeNull();
    await page.keyboard.press('Escape');

    // A row of two inputs and two turns: the first input (red) and the last turn's output (yellow)
    // by default; any of its images can be picked on either side, and the pick outlives a redraw.
    await page.click(`#grid .tile[data-index="${MULTI_ROW}"]`);
    await page.waitForFunction(`document.getElementById('detail').textContent.includes(${JSON.stringify(MULTI_TURN)})`);
    const stageLoaded = `[...document.querySelectorAll('#stage img')].every((i) => i.complete && i.naturalWidth > 0)`;
    await page.waitForFunction(stageLoaded);
    await setInput(page, 'split', '50');
    const options = `[...document.querySelectorAll('#compare-after option')].map((o) => o.textContent)`;
    expect(await inPage(page, options)).toEqual(['input 1', 'input 2', 'turn 1 output', 'turn 2 output']);
    expect(near(await colourAt(page, '#stage', 0.3, 0.5), INPUT_RGB)).toBe(true);
    expect(near(await colourAt(page, '#stage', 0.7, 0.5), OUTPUT2_RGB)).toBe(true);
    await page.select('#compare-before', 'in1');
    await page.select('#compare-after', 'out0');
    await page.waitForFunction(stageLoaded);
    expect(near(await colourAt(page, '#stage', 0.3, 0.5), INPUT2_RGB)).toBe(true);
    expect(near(await colourAt(page, '#stage', 0.7, 0.5), OUTPUT_RGB)).toBe(true);
    // Turn 1's output against turn 2's: what the second turn changed.
    await page.select('#compare-before', 'out0');
    await page.select('#compare-after', 'out1');
    await page.waitForFunction(stageLoaded);
    expect(near(await colourAt(page, '#stage', 0.3, 0.5), OUTPUT_RGB)).toBe(true);
    expect(near(await colourAt(page, '#stage', 0.7, 0.5), OUTPUT2_RGB)).toBe(true);
    // The page polls every 2 s and may redraw the detail: the pick stays.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(await inPage(page, `[document.getElementById('compare-before').value, document.getElementById('compare-after').value]`)).toEqual(
      ['out0', 'out1'],
    );
    await page.keyboard.press('Escape');
    await page.close();
  });

  it('searches the instructions, sorts by score, cost and latency, and flags accepted rows the judge scored low', async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 900 });
    await page.goto(url);
    await showsTiles(page, ALL);
    await page.type('#f-q', 'LIGHTHOUSE sky');
    await showsTiles(
      page,
      ALL.filter((i) => /sky.*lighthouse/i.test(fixtureRow(i).instruction)),
    );
    await setInput(page, 'f-q', '');
    await showsTiles(page, ALL);

    // Sorted over the whole run; rows without the value (unscored, not run) last, in plan order.
    const by = (value: (i: number) => number | undefined, sign: number) => [
      ...ALL.filter((i) => value(i) !== undefined).sort((a, b) => (value(a)! - value(b)!) * sign || a - b),
      ...ALL.filter((i) => value(i) === undefined),
    ];
    await page.select('#f-sort', 'score:desc');
    await showsTiles(
      page,
      by((i) => fixtureRow(i).score, -1),
    );
    await page.select('#f-sort', 'cost:asc');
    await showsTiles(
      page,
      by((i) => fixtureRow(i).costUsd, 1),
    );
    await page.select('#f-sort', 'latency:desc');
    await showsTiles(
      page,
      by((i) => fixtureRow(i).latencyMs, -1),
    );
    expect(page.url()).toContain('sort=latency&order=desc');
    await page.select('#f-sort', 'index:asc');
    await showsTiles(page, ALL);

    // Conflicts: accepted by a person, scored below 5 (of 10) by the judge; the threshold is the page's.
    const conflicts = (below: number) => ALL.filter((i) => fixtureRow(i).review === 'accepted' && (fixtureRow(i).score ?? 10) < below);
    expect(conflicts(5).length).toBeGreaterThan(0);
    expect(conflicts(8).length).toBeGreaterThan(conflicts(5).length);
    await page.waitForFunction(`document.getElementById('count-conflicts')?.textContent === 'conflicts: ${conflicts(5).length}'`);
    const flagged = `[...document.querySelectorAll('#grid .tile .badge.conflict')].map((b) => Number(b.closest('.tile').dataset.index))`;
    expect(await inPage(page, flagged)).toEqual(conflicts(5));
    await page.select('#f-review', 'conflict');
    await showsTiles(page, conflicts(5));
    await setInput(page, 'f-conflict', '8');
    await showsTiles(page, conflicts(8));
    await page.close();

    // `atelier view --conflict-below 8` prints the link that opens on those rows.
    const second = new CliProcess(['view', outputDir, '--conflict-below', '8'], { ...process.env });
    try {
      await second.waitForOutput(/accepted rows the judge scored below 8: (\S+)/);
      const link = /accepted rows the judge scored below 8: (\S+)/.exec(second.output)![1]!;
      const opened = await browser.newPage();
      await opened.goto(link);
      await showsTiles(opened, conflicts(8));
      expect(await inPage(opened, `document.getElementById('f-review').value`)).toBe('conflict');
      await opened.close();
    } finally {
      await second.stop();
    }
    const outOfScale = await atelier(['view', outputDir, '--conflict-below', '11'], { ...process.env });
    expect(outOfScale.code).toBe(1);
    expect(outOfScale.stderr).toMatch(/--conflict-below <x>.*must be a score from 0 to 10/);
  });

  it('marks every row a filter shows in one request, and keeps reject reasons with the marks and in the export', async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 900 });
    page.on('dialog', (d) => void d.accept());
    const posts: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'POST') posts.push(r.url());
    });
    await page.goto(url);
    // Unmarked done rows about teapots: accepted all at once.
    await page.select('#f-status', 'ok');
    await page.select('#f-review', 'unmarked');
    await page.type('#f-q', 'teapot');
    const teapots = ALL.filter(
      (i) => fixtureRow(i).status === 'ok' && !fixtureRow(i).review && fixtureRow(i).instruction.includes('teapot'),
    );
    await showsTiles(page, teapots);
    await page.click('#bulk-accept');
    await page.waitForFunction(`document.getElementById('status').textContent === 'accepted ${teapots.length} row(s)'`);
    expect(posts).toEqual([`${url}api/review`]);
    for (const i of teapots) expect(marks().get(i)?.verdict).toBe('accepted');
    // The marks reach the results tables without another run's results write.
    await tablesShow(teapots[0]!, 'accepted');
    await tablesShow(teapots.at(-1)!, 'accepted');
    await showsTiles(page, []); // no longer unmarked

    // Every bicycle row, whatever its status, rejected with a reason: rows without an output are skipped.
    await page.select('#f-status', '');
    await page.select('#f-review', '');
    await setInput(page, 'f-q', 'bicycle');
    const bicycles = ALL.filter((i) => fixtureRow(i).instruction.includes('bicycle'));
    const done = bicycles.filter((i) => fixtureRow(i).status === 'ok');
    await showsTiles(page, bicycles);
    await page.type('#reason', 'wheels melted');
    await page.click('#bulk-reject');
    await page.waitForFunction(
      `document.getElementById('status').textContent === 'rejected ${done.length} row(s), ${bicycles.length - done.length} without an output skipped'`,
    );
    expect(posts).toHaveLength(2);
    for (const i of done) expect(marks().get(i)).toMatchObject({ verdict: 'rejected', reason: 'wheels melted' });
    await page.waitForFunction(
      `document.querySelector('#grid .tile[data-index="${done[0]}"] .reason')?.textContent === 'rejected: wheels melted'`,
    );

    // One row by key: 2 rejects the selected row with the second preset reason.
    await setInput(page, 'reason', '');
    await setInput(page, 'f-q', '');
    const one = ALL.find(
      (i) =>
        fixtureRow(i).status === 'ok' &&
        !fixtureRow(i).review &&
        !fixtureRow(i).instruction.includes('teapot') &&
        !fixtureRow(i).instruction.includes('bicycle'),
    )!;
    await page.waitForSelector(`#grid .tile[data-index="${one}"]`);
    await page.click(`#grid .tile[data-index="${one}"]`);
    await page.keyboard.press('2');
    await page.waitForFunction(`document.getElementById('status').textContent === 'row ${one}: rejected (${REJECT_PRESETS[1]})'`);
    expect(marks().get(one)).toMatchObject({ verdict: 'rejected', reason: REJECT_PRESETS[1] });
    await tablesShow(one, 'rejected', REJECT_PRESETS[1]);
    await tablesShow(done[0]!, 'rejected', 'wheels melted');
    await page.waitForFunction(`document.getElementById('detail').textContent.includes('reject reason${REJECT_PRESETS[1]}')`);
    await page.close();

    // A bulk mark whose filter now shows another number of rows than the person saw is refused.
    const stale = await fetch(`${url}api/review`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ verdict: 'accepted', filter: { q: 'robot' }, expect: 1 }),
    });
    expect(stale.status).toBe(409);
    expect(((await stale.json()) as { error: string }).error).toMatch(/^the filter now shows \d+ row\(s\), not 1/);
    const badReason = await fetch(`${url}api/review/0`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ verdict: 'accepted', reason: 'fine' }),
    });
    expect(badReason.status).toBe(400);
    const badSort = await fetch(`${url}api/rows?sort=colour`);
    expect(badSort.status).toBe(400);
    expect(((await badSort.json()) as { error: string }).error).toMatch(/^sort must be one of index, score, cost, latency/);

    // Where review marks go, their reasons go: the export's review_reason column.
    const out = join(dir, 'hf');
    const exported = await atelier(['export', outputDir, '--format', 'hf', '--out', out, '--only', 'ok'], { ...process.env });
    expect(exported.code, exported.stderr).toBe(0);
    const [shard] = readdirSync(join(out, 'data'));
    const bytes = readFileSync(join(out, 'data', shard!));
    const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    const table = (await parquetReadObjects({ file, columns: ['index', 'review', 'review_reason'] })) as Array<{
      index: bigint;
      review: string | null;
      review_reason: string | null;
    }>;
    expect(table.find((r) => Number(r.index) === done[0])).toMatchObject({ review: 'rejected', review_reason: 'wheels melted' });
    expect(table.find((r) => Number(r.index) === one)).toMatchObject({ review: 'rejected', review_reason: REJECT_PRESETS[1] });
    expect(table.find((r) => Number(r.index) === teapots[0])).toMatchObject({ review: 'accepted', review_reason: null });
  });
  it('reads a run that does not change once, and a change made outside the viewer shows within seconds', async () => {
    type Rows = { reads: number; rows: Array<{ index: number; status: string; score?: { overall: number } }> };
    const rows = async (): Promise<Rows> => (await (await fetch(`${url}api/rows?limit=100`)).json()) as Rows;
    // Polled as the page polls (more often, even): the earlier tests' marks settle first.
    const poll = async (ms: number): Promise<Rows> => {
      let last = await rows();
      for (const end = Date.now() + ms; Date.now() < end;) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        last = await rows();
      }
      return last;
    };
    const settled = await poll(3500);
    expect(typeof settled.reads).toBe('number');
    const later = await poll(4000);
    expect(later.reads).toBe(settled.reads);

    // Another process judges a row and fails a pending one: the next background read finds both.
    const scored = ALL.find((i) => fixtureRow(i).status === 'ok' && fixtureRow(i).score === undefined)!;
    const pending = ALL.find((i) => fixtureRow(i).status === 'pending')!;
    await writeJudgeRecord(outputDir, {
      index: scored,
      model: 'judge-fixture',
      entryFinishedAt: '2026-12-07T08:00:00.000Z',
      scores: { instructionFollowing: 4, preservation: 4, quality: 4, overall: overallScore(4, 4, 4) },
      reason: 'judged later',
      at: new Date().toISOString(),
    });
    await writeLedgerEntry(outputDir, {
      index: pending,
      position: pending,
      runId: 'viewer-fixture',
      model: 'gpt-image-2',
      attempts: 1,
      finishedAt: new Date().toISOString(),
      status: 'failed',
      errorType: 'Blocked',
      error: 'failed later',
    });
    await waitUntil(
      async () => {
        const now = (await rows()).rows;
        return now.find((r) => r.index === scored)?.score?.overall === 4 && now.find((r) => r.index === pending)?.status === 'failed';
      },
      30_000,
      'the outside changes in /api/rows',
    );
    expect((await rows()).reads).toBeGreaterThan(later.reads);
  });
});
