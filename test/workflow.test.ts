import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { decodeArrayFromPayloads } from '@temporalio/common/lib/internal-non-workflow';
import { parse } from 'csv-parse/sync';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLedgerEntry } from '../lib/run/ledger';
import type { DatasetWorkflowInput, RowWorkflowInput } from '../lib/shared/types';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { isPng, tempDir, writePng, writeRotatedJpeg, writeText } from './helpers/fixtures';
import { filesContaining } from './helpers/scan';
import { runDataset as runWith, startTestServer, testInput } from './helpers/temporalEnv';

const API_KEY = 'sk-test-workflow-7c1f0e9a55d24b1e';

let env: TestWorkflowEnvironment;
let standin: OpenAIStandin;
let stateDir: string;

beforeAll(async () => {
  ({ env, stateDir } = await startTestServer());
  standin = await startOpenAIStandin();
});

afterAll(async () => {
  await standin?.close();
  await env?.teardown();
});

const runDataset = (input: DatasetWorkflowInput) => runWith(env, input, { OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL });

describe('dataset workflow on a real dev server', () => {
  let dataDir: string;
  let outputDir: string;
  let input: DatasetWorkflowInput;
  let imageServer: Server;

  afterAll(() => imageServer?.close());

  beforeAll(async () => {
    dataDir = tempDir('atelier-wf-data-');
    // A local web server for http(s) image rows: one image, everything else 404.
    const served = await sharp({ create: { width: 30, height: 10, channels: 3, background: '#000000' } })
      .png()
      .toBuffer();
    imageServer = createServer((req, res) => {
      if (req.url === '/img.png') res.writeHead(200, { 'content-type': 'image/png' }).end(served);
      else res.writeHead(404).end('not found');
    });
    await new Promise<void>((resolve) => imageServer.listen(0, '127.0.0.1', resolve));
    const web = `http://127.0.0.1:${(imageServer.address() as AddressInfo).port}`;
    outputDir = join(tempDir('atelier-wf-out-'), 'out');
    await writePng(join(dataDir, 'ok.png'), '#000000');
    await writePng(join(dataDir, 'flaky.png'));
    await writePng(join(dataDir, 'refused.png'));
    await writeRotatedJpeg(join(dataDir, 'rotated.jpg'));
    writeFileSync(join(dataDir, 'corrupt.png'), 'this is not an image');
    writeText(
      join(dataDir, 'rows.csv'),
      [
        'index,input_images,instruction',
        '0,ok.png,row-ok make it brighter',
        '1,flaky.png,row-flaky add a hat',
        '2,refused.png,row-refused something the safety system refuses',
        '3,missing.png,row-missing-image whatever',
        '4,corrupt.png,row-corrupt-image whatever',
        '5,rotated.jpg,row-rotated keep it upright',
        '6,ok.png,',
        `7,${web}/img.png,row-url fetched over http`,
        `8,${web}/gone.png,row-url-404 never sent`,
      ].join('\n'),
    );
    standin.script('row-flaky', [faults.rateLimited(1), faults.serverError()]);
    standin.script('row-refused', [faults.moderationBlocked()], { repeat: true });
    input = testInput({
      runId: 'wf-test-mixed',
      inputPath: join(dataDir, 'rows.csv'),
      outputDir,
      window: 3,
      retry: { maxAttempts: 5, initialIntervalMs: 100, maximumIntervalMs: 1000 },
    });
  });

  it('edits good rows, retries transient failures, fails bad rows alone, and writes every row to results.csv', async () => {
    const summary = await runDataset(input);
    expect(summary).toMatchObject({ total: 9, ok: 4, failed: 5, pending: 0 });

    // Flaky: 429 (Retry-After 1 s) then 500, then success: exactly three calls.
    const flakyCalls = standin.callsFor('row-flaky');
    expect(flakyCalls.map((c) => c.status)).toEqual([429, 500, 200]);
    expect(flakyCalls[1]!.at - flakyCalls[0]!.at).toBeGreaterThanOrEqual(950);
    // Refused: final after exactly one call.
    expect(standin.callsFor('row-refused')).toHaveLength(1);
    // Bad inputs never reach the provider.
    expect(standin.callsFor('row-missing-image')).toHaveLength(0);
    expect(standin.callsFor('row-corrupt-image')).toHaveLength(0);
    expect(standin.calls.filter((c) => c.prompt === '')).toHaveLength(0);
    expect(standin.callsFor('row-url-404')).toHaveLength(0);

    const rows = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
    expect(Object.keys(rows[0]!)).toEqual(['index', 'input_images', 'instruction', 'output_image', 'status', 'error']);
    expect(rows.map((r) => [r.index, r.status, r.output_image])).toEqual([
      ['0', 'ok', '000000.png'],
      ['1', 'ok', '000001.png'],
      ['2', 'failed', ''],
      ['3', 'failed', ''],
      ['4', 'failed', ''],
      ['5', 'ok', '000005.png'],
      ['6', 'failed', ''],
      ['7', 'ok', '000007.png'],
      ['8', 'failed', ''],
    ]);
    expect(rows[2]!.error).toMatch(/^Blocked: .*safety system/);
    expect(rows[3]!.error).toMatch(/^InputError: input image not found: .*missing\.png/);
    expect(rows[4]!.error).toMatch(/^InputError: input image .*corrupt\.png is not a decodable image/);
    expect(rows[6]!.error).toMatch(/^InputError: .*empty instruction/);
    expect(rows[8]!.error).toMatch(/^InputError: downloading http:\/\/127\.0\.0\.1:\d+\/gone\.png failed: HTTP 404/);
    await expect(sharp(join(outputDir, '000007.png')).metadata()).resolves.toMatchObject({ width: 30, height: 10 });
    for (const r of rows.filter((row) => row.status === 'ok')) expect(r.error).toBe('');

    for (const name of ['000000.png', '000001.png', '000005.png']) {
      const bytes = readFileSync(join(outputDir, name));
      expect(isPng(bytes)).toBe(true);
      await expect(sharp(bytes).metadata()).resolves.toMatchObject({ format: 'png' });
    }
    // The EXIF-rotated JPEG was sent upright (20x40); the stand-in echoes the geometry back.
    await expect(sharp(join(outputDir, '000005.png')).metadata()).resolves.toMatchObject({ width: 20, height: 40 });
    // Black input, inverted by the stand-in: the output really is the provider's image.
    const { data } = await sharp(join(outputDir, '000000.png')).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(255);
    expect(existsSync(join(outputDir, '000002.png'))).toBe(false);

    const ledger = await readLedgerEntry(outputDir, 1);
    expect(ledger).toMatchObject({ status: 'ok', attempts: 3, requestIds: [expect.stringMatching(/^req_standin_/)] });

    // A row's page in the Temporal UI: its input names the instruction and input images (a URL
    // without its query), its result the outputs, cost and latency.
    const child = env.client.workflow.getHandle('wf-test-mixed/row/7');
    const started = (await child.fetchHistory()).events![0]!.workflowExecutionStartedEventAttributes!;
    const [childInput] = await decodeArrayFromPayloads(env.client.options.loadedDataConverter, started.input?.payloads ?? []);
    expect((childInput as RowWorkflowInput).row).toEqual({
      instruction: 'row-url fetched over http',
      inputs: [`http://127.0.0.1:${(imageServer.address() as AddressInfo).port}/img.png`],
    });
    expect(await child.result()).toMatchObject({ status: 'ok', outputImages: ['000007.png'], latencyMs: expect.any(Number) });
  });

  it('re-running makes no call for ok rows and tries failed rows again', async () => {
    const before = standin.calls.length;
    const refusedBefore = standin.callsFor('row-refused').length;
    const summary = await runDataset(input);
    expect(summary).toMatchObject({ total: 9, ok: 4, failed: 5 });
    const newCalls = standin.calls.slice(before);
    // Only the refused row reaches the provider again (the others failed before any call).
    expect(newCalls.map((c) => c.prompt.split(' ')[0])).toEqual(['row-refused']);
    expect(standin.callsFor('row-refused')).toHaveLength(refusedBefore + 1);
  });

  it('keeps the API key out of the server state, outputs and results', () => {
    // Positive control: the scan does find strings that travel through workflow history.
    expect(filesContaining(stateDir, 'wf-test-mixed').length).toBeGreaterThan(0);
    expect(filesContaining(stateDir, API_KEY)).toEqual([]);
    expect(filesContaining(outputDir, API_KEY)).toEqual([]);
    // The key went where it belongs: the Authorization header of provider calls.
    expect(standin.calls.every((c) => c.authorization === `Bearer ${API_KEY}`)).toBe(true);
  });

  it('fails the run with a clear error for a dataset missing its instruction column, before any call', async () => {
    writeText(join(dataDir, 'bad.csv'), 'input_images,prompt\nok.png,hello\n');
    const before = standin.calls.length;
    const bad = { ...input, runId: 'wf-test-bad', inputPath: join(dataDir, 'bad.csv'), outputDir: join(outputDir, '..', 'bad-out') };
    await expect(runDataset(bad)).rejects.toMatchObject({
      cause: { type: 'DatasetError', message: expect.stringMatching(/bad\.csv: no "instruction" column/) },
    });
    expect(standin.calls.length).toBe(before);
  });

  it('finishes the run when a row child is terminated from outside (the row counts as failed, then runs again on a re-run)', async () => {
    writeText(
      join(dataDir, 'term.csv'),
      ['index,input_images,instruction', '0,ok.png,row-term-0 x', '1,ok.png,row-term-1 held up', '2,ok.png,row-term-2 x'].join('\n'),
    );
    // Row 1 waits out a long Retry-After, so its child is still running when it is terminated.
    standin.script('row-term-1 ', [faults.rateLimited(30)]);
    const term = {
      ...input,
      runId: 'wf-test-term',
      inputPath: join(dataDir, 'term.csv'),
      outputDir: join(outputDir, '..', 'term-out'),
      window: 3,
    };
    const run = runDataset(term);
    const child = env.client.workflow.getHandle('wf-test-term/row/1');
    for (let i = 0; i < 200 && standin.callsFor('row-term-1 ').length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(standin.callsFor('row-term-1 ')).toHaveLength(1);
    await child.terminate('test: terminated from outside');
    const summary = await run;
    // The run did not wait for it, and recorded it with its class: results.csv says why, and
    // `retry --error-type Terminated` can find it.
    expect(summary).toMatchObject({ total: 3, ok: 2, failed: 1, pending: 0, failedByType: { Terminated: 1 } });
    const results = readFileSync(join(term.outputDir, 'results.csv'), 'utf8');
    expect(results).toMatch(/row-term-1 held up.*failed,Terminated: the row child was terminated/);
    const again = await runDataset(term);
    expect(again).toMatchObject({ total: 3, ok: 3, pending: 0 });
    expect(standin.callsFor('row-term-0 ')).toHaveLength(1);
    expect(standin.callsFor('row-term-1 ')).toHaveLength(2);
  });

  it('continues as new to keep every run of the parent under its history cap, carrying counts only', async () => {
    const rows = Array.from({ length: 200 }, (_, i) => `${i},ok.png,row-can-${i} x`);
    writeText(join(dataDir, 'many.csv'), ['index,input_images,instruction', ...rows].join('\n'));
    // Every 8th row is held up a second (a 429 with Retry-After), so rows are in flight when the
    // run continues as new: they outlive the run that started them and must report by signal.
    const slow = Array.from({ length: 25 }, (_, k) => k * 8);
    for (const i of slow) standin.script(`row-can-${i} `, [faults.rateLimited(1)]);
    const many = {
      ...input,
      runId: 'wf-test-can',
      inputPath: join(dataDir, 'many.csv'),
      outputDir: join(outputDir, '..', 'can-out'),
      window: 4,
      maxHistoryEvents: 200,
    };
    const summary = await runDataset(many);
    expect(summary).toMatchObject({ total: 200, ok: 200, failed: 0 });
    const runs: { runId: string; historyLength: number }[] = [];
    for await (const wf of env.client.workflow.list({ query: `WorkflowId = 'wf-test-can'` }))
      runs.push({ runId: wf.runId, historyLength: wf.historyLength });
    expect(runs.length).toBeGreaterThan(3);
    // The cap is checked between dispatches: a run may overshoot it by a window's worth of events.
    for (const run of runs) expect(run.historyLength).toBeLessThan(200 + 60);
    // Rows that outlived their run reported by signal; the others by their completion (no signal).
    let signalled = 0;
    for (const run of runs) {
      const history = await env.client.workflow.getHandle('wf-test-can', run.runId).fetchHistory();
      signalled += (history.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'rowDone').length;
    }
    expect(signalled).toBeGreaterThan(0);
    expect(signalled).toBeLessThan(60);
    expect(new Set(standin.callsFor('row-can-').map((c) => c.prompt)).size).toBe(200);
    expect(standin.callsFor('row-can-')).toHaveLength(200 + slow.length);
  });
});
