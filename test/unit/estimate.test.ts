import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { EditOptions } from '../../cli/edit';
import type { CliIO } from '../../cli/io';
import { runEstimate } from '../../cli/estimate';
import { UsageError } from '../../lib/shared/errors';
import { writeLedgerEntry } from '../../lib/run/ledger';
import { tempDir, writePng, writeText } from '../helpers/fixtures';

// `atelier estimate` / `edit --dry-run`: rows, calls and cost from the dataset alone; nothing is
// started, written or spent.

function io(): CliIO & { out: (l: string) => void; lines: string[]; errs: string[] } {
  const lines: string[] = [];
  const errs: string[] = [];
  return { lines, errs, out: (l) => lines.push(l), err: (l) => errs.push(l), interrupted: new Promise(() => undefined), isTTY: false };
}

async function dataset(): Promise<{ csv: string; outputDir: string }> {
  const dir = tempDir('atelier-estimate-');
  await writePng(join(dir, 'a.png'));
  writeText(
    join(dir, 'rows.csv'),
    ['image,instruction', 'a.png,est-1 brighten', 'a.png,est-2 add snow', ',est-3 draw a cat', 'a.png,est-4 darker'].join('\n'),
  );
  return { csv: join(dir, 'rows.csv'), outputDir: join(dir, 'out') };
}

function options(csv: string, outputDir: string, extra: Partial<EditOptions>): EditOptions {
  return {
    input: csv,
    outputDir,
    backend: 'openai',
    model: 'gpt-image-2',
    instructionKey: 'instruction',
    numImages: 1,
    jpegQuality: 95,
    webpQuality: 95,
    stateDir: join(outputDir, '..', 'state'),
    window: 16,
    maxRetries: 4,
    heartbeatTimeout: 60,
    concurrency: 16,
    withWorkers: false,
    ...extra,
  };
}

describe('atelier estimate', () => {
  it("counts selected rows, calls by the model's images per call, and prices the output images", async () => {
    const { csv, outputDir } = await dataset();
    const out = io();
    const code = await runEstimate(options(csv, outputDir, { rows: '0:3', numImages: 2, quality: 'medium', size: '1024x1024' }), out);
    expect(code).toBe(0);
    expect(out.lines).toEqual([
      `openai gpt-image-2: ${csv}`,
      'rows: 4, 3 selected; to run: 3 (1 text-to-image)',
      'model calls: 3  output images: 6  (first attempts; retries add calls)',
      // 6 images x $0.053 (gpt-image-2, medium, 1024x1024)
      'estimated cost: $0.3180 (output images at the per-image price; input image tokens of edits are extra)',
    ]);
    expect(existsSync(outputDir)).toBe(false);

    // Gemini returns one image per call: two calls per row.
    const gemini = io();
    await runEstimate(
      options(csv, outputDir, {
        backend: 'gemini',
        model: 'gemini-3-pro-image',
        numImages: 2,
        imageSize: '4K',
        promptEnhance: 'gpt-4.1-mini',
      }),
      gemini,
    );
    expect(gemini.lines[2]).toBe('model calls: 8 (+ 4 prompt-enhancer calls)  output images: 8  (first attempts; retries add calls)');
    expect(gemini.lines[3]).toBe(
      'estimated cost: $1.9200 (output images at the per-image price; input image tokens of edits are extra; prompt-enhancer calls not included)',
    );
  });

  it("warns about inputs above a model's advice and counts rows above its limit", async () => {
    const dir = tempDir('atelier-estimate-many-');
    for (const n of [0, 1, 2, 3]) await writePng(join(dir, `${n}.png`));
    const four = JSON.stringify(['0.png', '1.png', '2.png', '3.png']).replace(/"/g, '""');
    writeText(join(dir, 'rows.csv'), ['image,instruction', `"${four}",est-many x`, '0.png,est-one y'].join('\n'));
    const out = io();
    await runEstimate(options(join(dir, 'rows.csv'), join(dir, 'out'), { backend: 'vertex', model: 'gemini-2.5-flash-image' }), out);
    // (Vertex still serves 2.5 Flash Image; the Gemini API shut it down on 2026-10-02.)
    expect(out.errs[0]).toBe('warning: gemini-2.5-flash-image works best with up to 3 input images; the row has 4');
    expect(out.lines[1]).toBe('rows: 2; to run: 2');
    const modelscope = io();
    await runEstimate(
      options(join(dir, 'rows.csv'), join(dir, 'out'), { backend: 'modelscope', model: 'Qwen/Qwen-Image-Edit-2511' }),
      modelscope,
    );
    expect(modelscope.lines[1]).toBe(
      'rows: 2; to run: 1; 1 with more input images than Qwen/Qwen-Image-Edit-2511 takes (they fail without a call)',
    );
    expect(modelscope.lines[3]).toBe('estimated cost: $0.0000 (free quota)');
  });

  it('says unknown where there is no price, warns about deprecated models and refuses retired ones', async () => {
    const { csv, outputDir } = await dataset();
    const local = io();
    await runEstimate(options(csv, outputDir, { model: 'my-local-model' }), local);
    expect(local.lines[3]).toBe('estimated cost: unknown (no published per-image price for my-local-model)');
    const deprecated = io();
    process.env.ATELIER_NOW = '2026-11-30T10:00:00Z';
    try {
      await runEstimate(options(csv, outputDir, { model: 'gpt-image-1.5' }), deprecated);
      expect(deprecated.errs[0]).toMatch(/^warning: gpt-image-1\.5 is deprecated and shuts down on 2026-12-01/);
      await expect(runEstimate(options(csv, outputDir, { model: 'dall-e-2' }), io())).rejects.toThrow(UsageError);
      process.env.ATELIER_NOW = '2026-12-02';
      await expect(runEstimate(options(csv, outputDir, { model: 'gpt-image-1.5' }), io())).rejects.toThrow(/retired on 2026-12-01/);
    } finally {
      delete process.env.ATELIER_NOW;
    }
  });
});

describe('atelier estimate after an earlier run', () => {
  async function doneBefore(outputDir: string, digest: string | undefined): Promise<void> {
    for (let index = 0; index < 4; index++) {
      const name = `${String(index).padStart(6, '0')}.png`;
      await writePng(join(outputDir, name));
      await writeLedgerEntry(outputDir, {
        index,
        position: index,
        status: 'ok',
        runId: 'atelier-rows-earlier',
        model: 'gpt-image-2',
        ...(digest ? { digest } : {}),
        outputImages: [name],
        finishedAt: '2026-12-01T00:00:00.000Z',
      });
    }
  }

  it('counts rows done for another request (a parameter changed) as calls to make, not as done', async () => {
    const { csv, outputDir } = await dataset();
    await doneBefore(outputDir, 'f'.repeat(64));
    const out = io();
    await runEstimate(options(csv, outputDir, { quality: 'high', size: '1024x1024' }), out);
    expect(out.lines[1]).toBe('rows: 4, 4 done before for another request (run again); to run: 4 (1 text-to-image)');
    expect(out.lines[2]).toMatch(/^model calls: 4 /);
  });

  it('a ledger from before digests still counts its rows as done', async () => {
    const { csv, outputDir } = await dataset();
    await doneBefore(outputDir, undefined);
    const out = io();
    await runEstimate(options(csv, outputDir, { quality: 'high', size: '1024x1024' }), out);
    expect(out.lines[1]).toBe('rows: 4, 4 already done; to run: 0');
  });

  it('says when quality auto is priced as high', async () => {
    const { csv, outputDir } = await dataset();
    const out = io();
    await runEstimate(options(csv, outputDir, { size: '1024x1024' }), out);
    expect(out.lines[3]).toMatch(/quality auto \(the default\) priced as high/);
    const auto = io();
    await runEstimate(options(csv, outputDir, { quality: 'auto', size: '1024x1024' }), auto);
    expect(auto.lines[3]).toMatch(/quality auto priced as high/);
  });
});
