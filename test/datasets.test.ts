import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parse } from 'csv-parse/sync';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLedgerEntry } from '../lib/run/ledger';
import type { DatasetWorkflowInput } from '../lib/shared/types';
import { startGeminiStandin } from '../activities/providers/gemini/standin';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { isPng, tempDir, writePng, writeText } from './helpers/fixtures';
import { writeParquetFixture } from './helpers/parquet';
import { runDataset as runWith, startTestServer, testInput } from './helpers/temporalEnv';

// The Gemini stand-in plays the API as of 2026-06-01 (before the 2.5 Flash Image shutdown) so these
// runs keep their 2.5 rates; test/unit/modelCheck.test.ts covers today's refusals.
const BEFORE_SHUTDOWNS = () => new Date('2026-06-01T00:00:00Z');

// Every input format and naming rule end to end: the real dev server, the project's workers, the
// real openai SDK against the stand-in.

let env: TestWorkflowEnvironment;
let standin: OpenAIStandin;

beforeAll(async () => {
  ({ env } = await startTestServer());
  standin = await startOpenAIStandin();
});
afterAll(async () => {
  await standin?.close();
  await env?.teardown();
});

const run = (input: DatasetWorkflowInput) => runWith(env, input, { OPENAI_API_KEY: 'sk-test-datasets', OPENAI_BASE_URL: standin.baseURL });

function csvResults(path: string): Record<string, string>[] {
  return parse(readFileSync(path), { columns: true }) as Record<string, string>[];
}

function jsonlResults(path: string): Record<string, unknown>[] {
  return readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const png = (color: string, width = 16, height = 16) =>
  sharp({ create: { width, height, channels: 3, background: color } })
    .png()
    .toBuffer();

describe('Parquet shards with embedded images, --filter-rows and merged results', () => {
  it('runs the selected rows, leaves the rest pending, and a second filter merges into the same results', async () => {
    const dir = tempDir();
    const shards = join(dir, 'shards');
    writeParquetFixture(
      join(shards, 'data-00000.parquet'),
      [
        { instruction: 'pq-row-0 warmer', image: { bytes: await png('#000000'), path: 'zero.png' }, extra: 'e0' },
        { instruction: 'pq-row-1 cooler', image: { bytes: await png('#202020'), path: null }, extra: 'e1' },
      ],
      { imageKind: 'struct' },
    );
    writeParquetFixture(
      join(shards, 'data-00001.parquet'),
      [
        { instruction: 'pq-row-2 sharper', image: { bytes: await png('#404040'), path: 'two.png' }, extra: 'e2' },
        { instruction: 'pq-row-3 a red balloon', image: null, extra: 'e3' },
      ],
      { imageKind: 'struct' },
    );
    const outputDir = join(dir, 'out');
    const base = testInput({ runId: 'ds-parquet', inputPath: shards, outputDir });

    const first = await run({ ...base, filterRows: '0:2' });
    expect(first).toMatchObject({ total: 4, ok: 2, failed: 0, pending: 2 });
    expect(csvResults(join(outputDir, 'results.csv')).map((r) => [r.instruction?.split(' ')[0], r.status, r.output_image])).toEqual([
      ['pq-row-0', 'ok', '000000.png'],
      ['pq-row-1', 'ok', '000001.png'],
      ['pq-row-2', 'pending', ''],
      ['pq-row-3', 'pending', ''],
    ]);
    expect(standin.callsFor('pq-row-')).toHaveLength(2);

    const second = await run({ ...base, filterRows: '2:' });
    expect(second).toMatchObject({ total: 4, ok: 4, failed: 0, pending: 0 });
    // Rows 0 and 1 were not called again; row 3 has no image, so it went to the generation endpoint.
    expect(standin.callsFor('pq-row-0')).toHaveLength(1);
    expect(standin.callsFor('pq-row-3').map((c) => c.path)).toEqual(['/v1/images/generations']);
    expect(standin.callsFor('pq-row-2').map((c) => c.path)).toEqual(['/v1/images/edits']);

    const rows = csvResults(join(outputDir, 'results.csv'));
    expect(Object.keys(rows[0]!)).toEqual(['instruction', 'input_images', 'extra', 'output_image', 'status', 'error']);
    expect(rows.map((r) => [r.input_images, r.extra, r.status])).toEqual([
      ['zero.png', 'e0', 'ok'],
      [expect.stringMatching(/^embedded:[0-9a-f]{64}\.png$/), 'e1', 'ok'],
      ['two.png', 'e2', 'ok'],
      ['', 'e3', 'ok'],
    ]);
    const jsonl = jsonlResults(join(outputDir, 'results.jsonl'));
    expect(jsonl.map((r) => [r.extra, r.output_image, r.status])).toEqual([
      ['e0', ['000000.png'], 'ok'],
      ['e1', ['000001.png'], 'ok'],
      ['e2', ['000002.png'], 'ok'],
      ['e3', ['000003.png'], 'ok'],
    ]);
    // The edited image is the embedded input, inverted by the stand-in: black in, white out.
    const { data } = await sharp(join(outputDir, '000000.png')).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(255);
  });
});

describe('JSONL rows: multi-image, multi-turn, resume of multi-turn', () => {
  it('sends all images, chains turns, names every turn _NN, and never re-bills a finished turn', async () => {
    const dir = tempDir();
    await writePng(join(dir, 'a.png'), '#000000');
    await writePng(join(dir, 'b.png'), '#ffffff');
    const user = (content: string) => ({ role: 'user', content });
    writeText(
      join(dir, 'rows.jsonl'),
      [
        { images: ['a.png', 'b.png'], conversations: [user('jl-multi combine')] },
        {
          images: 'a.png',
          conversations: [user('jl-turn-1 first'), { role: 'assistant', content: 'ok' }, user('jl-turn-2 second'), user('jl-turn-3 third')],
        },
        { images: ['a.png'], conversations: [user('jl-resume-a first'), user('jl-resume-b second')] },
      ]
        .map((r) => JSON.stringify(r))
        .join('\n'),
    );
    // Turn b of the third row fails on every attempt of the first run.
    standin.script('jl-resume-b', [faults.serverError(), faults.serverError(), faults.serverError()]);
    const outputDir = join(dir, 'out');
    const input = testInput({
      runId: 'ds-jsonl',
      inputPath: join(dir, 'rows.jsonl'),
      outputDir,
      retry: { maxAttempts: 3, initialIntervalMs: 50, maximumIntervalMs: 100 },
    });

    const first = await run(input);
    expect(first).toMatchObject({ total: 3, ok: 2, failed: 1 });
    expect(standin.callsFor('jl-multi')[0]).toMatchObject({ imageCount: 2, imageTypes: ['image/png', 'image/png'] });
    expect(['jl-turn-1', 'jl-turn-2', 'jl-turn-3'].map((t) => standin.callsFor(t).length)).toEqual([1, 1, 1]);
    for (const k of ['00', '01', '02']) expect(existsSync(join(outputDir, `000001_${k}.png`))).toBe(true);
    // Turn 2 edited turn 1's output (white, since the stand-in inverts black), so turn 2's output is black.
    const turn2 = await sharp(join(outputDir, '000001_01.png')).raw().toBuffer();
    expect(turn2[0]).toBe(0);

    const rows = csvResults(join(outputDir, 'results.csv'));
    expect(rows.map((r) => [r.status, r.output_image])).toEqual([
      ['ok', '000000.png'],
      ['ok', '000001_02.png'],
      ['failed', ''],
    ]);
    expect(rows[2]!.error).toMatch(/^Retryable: 500/);
    expect(jsonlResults(join(outputDir, 'results.jsonl'))[1]!.output_image).toEqual(['000001_00.png', '000001_01.png', '000001_02.png']);
    expect(await readLedgerEntry(outputDir, 2)).toMatchObject({ status: 'failed', turnsDone: 1 });
    expect(standin.callsFor('jl-resume-a')).toHaveLength(1);
    expect(standin.callsFor('jl-resume-b')).toHaveLength(3);

    const second = await run(input);
    expect(second).toMatchObject({ total: 3, ok: 3, failed: 0 });
    // The finished first turn was not paid for again; only the failed turn ran.
    expect(standin.callsFor('jl-resume-a')).toHaveLength(1);
    expect(standin.callsFor('jl-resume-b')).toHaveLength(4);
    expect(csvResults(join(outputDir, 'results.csv'))[2]).toMatchObject({ status: 'ok', output_image: '000002_01.png' });
  });
});

describe('output names and formats', () => {
  it('writes each row where its name column says, in the format its extension says, and nothing outside', async () => {
    const dir = tempDir();
    await writePng(join(dir, 'in.png'), '#336699');
    const names = ['cats/one.jpg', 'two.webp', 'three', '../escape.png', '/abs.png', '', 'cats/one.jpg', 'deep/er/four.PNG'];
    writeText(join(dir, 'named.csv'), ['input_images,instruction,out_name', ...names.map((n, i) => `in.png,nm-${i} edit,${n}`)].join('\n'));
    const outputDir = join(dir, 'out');
    const summary = await run(
      testInput({
        runId: 'ds-names',
        inputPath: join(dir, 'named.csv'),
        outputDir,
        outputNameColumn: 'out_name',
        encoding: { jpegQuality: 40, webpQuality: 50 },
      }),
    );
    expect(summary).toMatchObject({ total: 8, ok: 4, failed: 4 });
    const rows = csvResults(join(outputDir, 'results.csv'));
    expect(rows.map((r) => [r.status, r.output_image])).toEqual([
      ['ok', 'cats/one.jpg'],
      ['ok', 'two.webp'],
      ['ok', 'three.png'],
      ['failed', ''],
      ['failed', ''],
      ['failed', ''],
      ['failed', ''],
      ['ok', 'deep/er/four.PNG'],
    ]);
    expect(rows[3]!.error).toMatch(/InputError: .*output name "\.\.\/escape\.png" escapes --out/);
    expect(rows[4]!.error).toMatch(/InputError: .*"\/abs\.png" is an absolute path/);
    expect(rows[5]!.error).toMatch(/InputError: .*the output name is empty/);
    expect(rows[6]!.error).toMatch(/InputError: .*output name cats\/one\.jpg is already used by row 0/);
    // Rows refused for their names never reached the provider.
    for (const i of [3, 4, 5, 6]) expect(standin.callsFor(`nm-${i} `)).toHaveLength(0);

    const jpeg = readFileSync(join(outputDir, 'cats', 'one.jpg'));
    expect([...jpeg.subarray(0, 3)]).toEqual([0xff, 0xd8, 0xff]);
    const webp = readFileSync(join(outputDir, 'two.webp'));
    expect(webp.subarray(0, 4).toString('latin1') + webp.subarray(8, 12).toString('latin1')).toBe('RIFFWEBP');
    expect(isPng(readFileSync(join(outputDir, 'three.png')))).toBe(true);
    expect(isPng(readFileSync(join(outputDir, 'deep', 'er', 'four.PNG')))).toBe(true);
    // Nothing was written beside the output dir.
    expect(readdirSync(dir).sort()).toEqual(['in.png', 'named.csv', 'out']);
  });

  it('--num-images names every image _NN and lists them in the results', async () => {
    const dir = tempDir();
    await writePng(join(dir, 'in.png'));
    writeText(join(dir, 'n.csv'), 'image,instruction\nin.png,ni-two images please\n');
    const outputDir = join(dir, 'out');
    const summary = await run(testInput({ runId: 'ds-num-images', inputPath: join(dir, 'n.csv'), outputDir, numImages: 2 }));
    expect(summary).toMatchObject({ ok: 1 });
    expect(standin.callsFor('ni-two')[0]!.n).toBe(2);
    expect(csvResults(join(outputDir, 'results.csv'))[0]!.output_image).toBe('["000000_00.png","000000_01.png"]');
    expect(jsonlResults(join(outputDir, 'results.jsonl'))[0]!.output_image).toEqual(['000000_00.png', '000000_01.png']);
  });
});

describe('image paths outside the dataset', () => {
  it('refuses the run at planning, naming the row and the path, before any call; --allow-outside-paths reads them', async () => {
    const dir = tempDir();
    writeText(join(dir, 'secret', 'fake_id_rsa'), '-----BEGIN OPENSSH PRIVATE KEY-----\n');
    const csv = join(dir, 'ds', 'rows.csv');
    writeText(csv, ['image,instruction', 'ok.png,outside-ok x', '../secret/fake_id_rsa,outside-key x'].join('\n'));
    writeFileSync(join(dir, 'ds', 'ok.png'), await png('#00ff00'));
    const before = standin.calls.length;
    await expect(run(testInput({ runId: 'ds-outside', inputPath: csv, outputDir: join(dir, 'out') }))).rejects.toMatchObject({
      cause: {
        type: 'DatasetError',
        message: expect.stringContaining(
          `${csv}: line 3, column "image": image "../secret/fake_id_rsa" is outside the dataset's folder (${join(dir, 'ds')})`,
        ) as unknown,
      },
    });
    expect(standin.calls.length).toBe(before);

    const allowed = await run(
      testInput({ runId: 'ds-outside-allowed', inputPath: csv, outputDir: join(dir, 'out-allowed'), allowOutsidePaths: true }),
    );
    expect(allowed).toMatchObject({ total: 2, ok: 1, failed: 1 });
    expect(csvResults(join(dir, 'out-allowed', 'results.csv'))[1]!.error).toMatch(
      /InputError: input image .*fake_id_rsa is not a decodable image/,
    );
  });
});

describe('bad images, downloads and size limits', () => {
  let server: Server;
  let hits = 0;
  let web = '';
  beforeAll(async () => {
    const body = await png('#000000', 24, 12);
    server = createServer((req, res) => {
      hits += 1;
      if (req.url === '/shared.png') res.writeHead(200, { 'content-type': 'image/png' }).end(body);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    web = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => server?.close());

  it('fails truncated and empty files alone, downloads a URL once for all rows and runs, shrinks oversized inputs', async () => {
    const dir = tempDir();
    const good = await png('#123456', 5000, 1000);
    writeFileSync(join(dir, 'big.png'), good);
    writeFileSync(join(dir, 'truncated.png'), good.subarray(0, Math.floor(good.length / 2)));
    writeFileSync(join(dir, 'empty.png'), '');
    writeText(
      join(dir, 'rows.csv'),
      [
        'image,instruction',
        'truncated.png,bad-truncated x',
        'empty.png,bad-empty x',
        `${web}/shared.png,url-a x`,
        `${web}/shared.png,url-b x`,
        'big.png,big-input x',
      ].join('\n'),
    );
    const cache = join(dir, 'out', 'cache');
    // Gemini takes inline images of at most 4096 px a side (and 7 MB): larger ones are shrunk.
    const gemini = await startGeminiStandin({ now: BEFORE_SHUTDOWNS });
    try {
      const input = testInput({
        runId: 'ds-bad',
        inputPath: join(dir, 'rows.csv'),
        outputDir: join(dir, 'out'),
        backend: 'gemini',
        model: 'gemini-2.5-flash-image',
        imageCacheDir: cache,
      });
      const summary = await runWith(env, input, { GEMINI_API_KEY: 'test-datasets-gemini', GEMINI_BASE_URL: gemini.baseURL });
      expect(summary).toMatchObject({ total: 5, ok: 3, failed: 2 });
      const rows = csvResults(join(dir, 'out', 'results.csv'));
      expect(rows[0]!.error).toMatch(/InputError: input image .*truncated\.png is not a decodable image/);
      expect(rows[1]!.error).toMatch(/InputError: input image .*empty\.png is empty \(0 bytes\)/);
      expect(gemini.callsFor('bad-')).toHaveLength(0);
      expect(hits).toBe(1);
      // Shrunk to 4096 px on its long side, keeping the aspect ratio.
      expect(gemini.callsFor('big-input')[0]!.imageSizes).toEqual([{ width: 4096, height: 819 }]);
    } finally {
      await gemini.close();
    }

    // Another run sharing the cache downloads nothing.
    writeText(join(dir, 'again.csv'), `image,instruction\n${web}/shared.png,url-c x\n`);
    await run(testInput({ runId: 'ds-bad-2', inputPath: join(dir, 'again.csv'), outputDir: join(dir, 'out2'), imageCacheDir: cache }));
    expect(hits).toBe(1);
  });
});
