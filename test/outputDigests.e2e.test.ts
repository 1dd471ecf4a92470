import { existsSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLedgerEntry } from '../lib/run/ledger';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';

// Bytes, not names (issue 23). Each output's sha256 and size are part of its row's ledger entry. A
// re-run takes a row as done only while its outputs are still the size its commit recorded, so an
// output emptied or replaced by another file is made again; an export embeds an output only if it is
// the bytes the row made (a replacement of the very same size, which a re-run's one stat cannot
// see, stops the export, naming the row).

const API_KEY = 'sk-test-digests-5b0e2d71c9a84f36';
let standin: OpenAIStandin;
let dir: string;
let outputDir: string;

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
  delete e.TEMPORAL_ADDRESS;
  return e;
}

const edit = () =>
  atelier(
    [
      'edit',
      '--input',
      join(dir, 'edits.csv'),
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

/** A valid PNG of exactly `size` bytes with other pixels: a 1x1 picture padded by a tEXt chunk. */
async function pngOfSize(size: number): Promise<Buffer> {
  const small = await sharp({ create: { width: 1, height: 1, channels: 3, background: '#ff00ff' } })
    .png()
    .toBuffer();
  const pad = size - small.length - 12;
  if (pad < 10) throw new Error(`cannot make a ${size}-byte PNG`);
  const body = Buffer.concat([Buffer.from('tEXt', 'latin1'), Buffer.from('Comment\0', 'latin1'), Buffer.alloc(pad - 8, 'x')]);
  const chunk = Buffer.alloc(body.length + 8);
  chunk.writeUInt32BE(body.length - 4, 0);
  body.copy(chunk, 4);
  chunk.writeUInt32BE(crc32(body) >>> 0, body.length + 4);
  // After IHDR (8-byte signature + 25-byte IHDR chunk).
  return Buffer.concat([small.subarray(0, 33), chunk, small.subarray(33)]);
}

beforeAll(async () => {
  assertBuilt();
  standin = await startOpenAIStandin();
  dir = tempDir('atelier-digests-');
  await writePng(join(dir, 'imgs', 'red.png'), '#ff0000', 48);
  writeText(
    join(dir, 'edits.csv'),
    [
      'index,input_images,instruction',
      '0,imgs/red.png,digests-0 make it cyan',
      '1,imgs/red.png,digests-1 make it teal',
      '2,imgs/red.png,digests-2 make it gold',
    ].join('\n'),
  );
  outputDir = join(dir, 'out');
  const run = await edit();
  expect(run.code, run.stderr).toBe(0);
}, 300_000);
afterAll(async () => standin?.close());

describe('bytes, not names: outputs are checked against the digests their commit recorded', () => {
  it('records each output sha256 and size; a re-run makes emptied or replaced outputs again; export refuses a same-size swap', async () => {
    for (const index of [0, 1, 2]) {
      const entry = (await readLedgerEntry(outputDir, index))!;
      const path = entry.outputImages![0]!;
      expect(entry.outputDigests?.[path]).toEqual({
        sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
        size: statSync(join(outputDir, path)).size,
      });
    }
    const made = [0, 1, 2].map((i) => readFileSync(join(outputDir, `00000${i}.png`)));
    const calls = standin.calls.length;

    // Row 0's output emptied, row 1's replaced by another picture (another size).
    truncateSync(join(outputDir, '000000.png'), 0);
    writeFileSync(join(outputDir, '000001.png'), await pngOfSize(made[1]!.length + 40));
    const again = await edit();
    expect(again.code, again.stderr).toBe(0);
    expect(standin.calls.length - calls).toBe(2);
    expect(
      standin.calls
        .slice(calls)
        .map((c) => c.prompt.split(' ')[0])
        .sort(),
    ).toEqual(['digests-0', 'digests-1']);
    for (const i of [0, 1]) {
      const bytes = readFileSync(join(outputDir, `00000${i}.png`));
      const entry = (await readLedgerEntry(outputDir, i))!;
      expect(entry.outputDigests?.[`00000${i}.png`]?.size).toBe(bytes.length);
      expect((await sharp(bytes).metadata()).width).toBeGreaterThan(1);
    }

    // Row 2's output swapped for another picture of the very same size: the export stops, naming it.
    writeFileSync(join(outputDir, '000002.png'), await pngOfSize(made[2]!.length));
    expect(statSync(join(outputDir, '000002.png')).size).toBe(made[2]!.length);
    const out = join(dir, 'hf');
    const exported = await atelier(['export', outputDir, '--out', out], env());
    expect(exported.code).toBe(1);
    expect(exported.stderr).toMatch(
      /error: row 2: output .*000002\.png is not an image to publish: it is not what the row made \(sha256 [0-9a-f]{16}…, \d+ bytes; the commit recorded/,
    );
    expect(exported.stderr).toMatch(/--redo --rows 2/);
    expect(existsSync(out)).toBe(false);
  }, 300_000);
});
