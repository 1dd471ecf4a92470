import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildWorkflowInput, type EditOptions } from '../../cli/edit';
import type { CliIO } from '../../cli/io';
import { runEstimate } from '../../cli/estimate';
import { describeBatchJob, describeMultiTurn } from '../../cli/progress';
import { tempDir, writePng, writeText } from '../helpers/fixtures';

// `--batch` on the command line: what is refused, what the estimate says, how jobs are shown.

function io(): CliIO & { lines: string[] } {
  const lines: string[] = [];
  return { lines, out: (l) => lines.push(l), err: () => undefined, interrupted: new Promise(() => undefined), isTTY: false };
}

async function dataset(): Promise<{ jsonl: string; outputDir: string }> {
  const dir = tempDir('atelier-batchcli-');
  await writePng(join(dir, 'a.png'));
  const turn = (content: string) => ({ role: 'user', content });
  writeText(
    join(dir, 'rows.jsonl'),
    [
      { images: 'a.png', conversations: [turn('one')] },
      { images: 'a.png', conversations: [turn('two')] },
      { images: 'a.png', conversations: [turn('first'), { role: 'assistant', content: 'ok' }, turn('second')] },
    ]
      .map((r) => JSON.stringify(r))
      .join('\n'),
  );
  return { jsonl: join(dir, 'rows.jsonl'), outputDir: join(dir, 'out') };
}

function options(input: string, outputDir: string, extra: Partial<EditOptions>): EditOptions {
  return {
    input,
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

describe('--batch options', () => {
  it('goes into the workflow input, not into the run id; is refused where it cannot work', async () => {
    const { jsonl, outputDir } = await dataset();
    const batched = buildWorkflowInput(options(jsonl, outputDir, { batch: true, batchFallback: 'fail', batchPollMs: 500 }));
    expect(batched.batch).toEqual({ fallback: 'fail', pollInitialMs: 500, pollMaxMs: 8000 });
    expect(batched.runId).toBe(buildWorkflowInput(options(jsonl, outputDir, {})).runId);
    expect(() => buildWorkflowInput(options(jsonl, outputDir, { batch: true, backend: 'fal', model: 'fal-ai/flux-pro/kontext' }))).toThrow(
      /--batch is for the openai and gemini backends \(their batch APIs\); fal has none/,
    );
    expect(() => buildWorkflowInput(options(jsonl, outputDir, { batchFallback: 'fail' }))).toThrow(/--batch-fallback goes with --batch/);
    expect(() => buildWorkflowInput(options(jsonl, outputDir, { batch: true, promptEnhance: 'gpt-4.1-mini' }))).toThrow(
      /batch mode does not run --prompt-enhance/,
    );
    expect(() => buildWorkflowInput(options(jsonl, outputDir, { batch: true, maxCost: 5 }))).toThrow(/batch mode has no --max-cost budget/);
  });

  it('estimates batch rows at half price and multi-turn rows at the standard price', async () => {
    const { jsonl, outputDir } = await dataset();
    const direct = io();
    await runEstimate(options(jsonl, outputDir, { quality: 'medium', size: '1024x1024' }), direct);
    // 4 images x $0.053
    expect(direct.lines[3]).toMatch(/^estimated cost: \$0\.2120 /);
    const batched = io();
    await runEstimate(options(jsonl, outputDir, { quality: 'medium', size: '1024x1024', batch: true }), batched);
    // 2 single-turn images at half price + 2 turns of the multi-turn row at the standard price.
    expect(batched.lines[3]).toBe(
      'estimated cost: $0.1590 (output images at the per-image price; input image tokens of edits are extra; --batch: half price, except 1 multi-turn row (direct, standard price))',
    );
  });

  it("shows a job's provider status and counts, and what became of multi-turn rows", () => {
    expect(
      describeBatchJob({
        jobId: 'run-1#abcd-r0j0',
        rows: 200,
        phase: 'waiting',
        batchId: 'batch_1',
        status: { providerStatus: 'in_progress', terminal: false, total: 200, completed: 120, failed: 2 },
      }),
    ).toBe('batch job abcd-r0j0 (200 rows, batch_1): waiting, provider status in_progress (120/200 done, 2 failed)');
    expect(describeMultiTurn({ jobs: [], multiTurnDirect: 3, multiTurnRefused: 0 })).toEqual([
      'note: 3 multi-turn rows went down the direct path at the standard price (a batch cannot chain turns)',
    ]);
  });
});
