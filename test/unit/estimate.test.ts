import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { EditOptions } from '../../cli/edit';
import type { CliIO } from '../../cli/io';
import { runEstimate } from '../../cli/estimate';
import { UsageError } from '../../lib/shared/errors';
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
    const code = await runEstimate(options(csv, outputDir, { filterRows: '0:3', numImages: 2, quality: 'medium', size: '1024x1024' }), out);
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
    await runEstimate(options(join(dir, 'rows.csv'), join(dir, 'out'), { backend: 'gemini', model: 'gemini-2.5-flash-image' }), out);
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
