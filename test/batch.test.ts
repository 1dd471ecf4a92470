import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import { parse } from 'csv-parse/sync';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BatchPhaseView } from '../lib/shared/batch';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import { readLedgerEntry } from '../lib/run/ledger';
import type { DatasetRunSummary, DatasetWorkflowInput } from '../lib/shared/types';
import { startGeminiStandin, geminiFaults, type GeminiStandin } from '../standins/gemini';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../standins/openai';
import { createWorkers, runWorkersUntil } from '../workers';
import { batchJobsQuery } from '../workflows/batchMessages';
import { isPng, tempDir, writePng, writeText } from './helpers/fixtures';
import { filesContaining } from './helpers/scan';
import { runDataset as runWith, startTestServer, testInput } from './helpers/temporalEnv';

// `--batch` through the dataset workflow on a real dev server, the providers' real SDKs against the
// stand-ins' Files and Batch APIs.

const OPENAI_KEY = 'sk-test-batch-3f9a1c2e7b6d4a58';
const GEMINI_KEY = 'AIza-test-batch-5e2d9c1b';

let env: TestWorkflowEnvironment;
let stateDir: string;
let openai: OpenAIStandin;
let gemini: GeminiStandin;

beforeAll(async () => {
  ({ env, stateDir } = await startTestServer());
  openai = await startOpenAIStandin({ batch: { validatingMs: 100, inProgressMs: 300, finalizingMs: 100, concurrency: 8 } });
  gemini = await startGeminiStandin({ batch: { pendingMs: 100, runningMs: 300, concurrency: 8 } });
});

afterAll(async () => {
  await openai?.close();
  await gemini?.close();
  await env?.teardown();
});

const workerEnv = () => ({
  OPENAI_API_KEY: OPENAI_KEY,
  OPENAI_BASE_URL: openai.baseURL,
  GEMINI_API_KEY: GEMINI_KEY,
  GEMINI_BASE_URL: gemini.baseURL,
});
const runDataset = (input: DatasetWorkflowInput) => runWith(env, input, workerEnv());
const poll = { pollInitialMs: 200, pollMaxMs: 1000 };

async function dataset(tag: string, rows: number, extra: string[] = []): Promise<{ csv: string; outputDir: string }> {
  const dir = tempDir(`atelier-batch-${tag}-`);
  await writePng(join(dir, 'in.png'), '#204060');
  const csv = join(dir, 'rows.csv');
  writeText(
    csv,
    ['index,image,instruction', ...Array.from({ length: rows }, (_, i) => `${i},in.png,${tag}-${i} make it warmer`), ...extra].join('\n'),
  );
  return { csv, outputDir: join(dir, 'out') };
}

function results(outputDir: string): Record<string, string>[] {
  return parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
}

const direct = <C extends { prompt: string; viaBatch?: boolean }>(calls: C[], tag: string) =>
  calls.filter((c) => c.prompt.includes(tag) && !c.viaBatch);
const viaBatch = <C extends { prompt: string; viaBatch?: boolean }>(calls: C[], tag: string) =>
  calls.filter((c) => c.prompt.includes(tag) && c.viaBatch);

describe('--batch on OpenAI', () => {
  it('a 200-row run goes through one batch: every row ok, zero direct edit calls, costs at half the direct price', async () => {
    const { csv, outputDir } = await dataset('b200', 200);
    const batchesBefore = openai.batches.all.length;
    const summary = await runDataset(
      testInput({ runId: 'batch-200', inputPath: csv, outputDir, window: 8, batch: { fallback: 'direct', ...poll } }),
    );
    expect(summary).toMatchObject({ total: 200, ok: 200, failed: 0, pending: 0 });
    expect(direct(openai.calls, 'b200-')).toHaveLength(0);
    expect(viaBatch(openai.calls, 'b200-')).toHaveLength(200);
    const created = openai.batches.all.slice(batchesBefore);
    expect(created).toHaveLength(1);
    expect(created[0]).toMatchObject({
      endpoint: '/v1/images/edits',
      status: 'completed',
      request_counts: { total: 200, completed: 200, failed: 0 },
    });
    expect(created[0]!.metadata).toMatchObject({ atelier_run_id: 'batch-200' });
    expect(created[0]!.metadata!.atelier_job_id).toMatch(/^batch-200#/);
    const rows = results(outputDir);
    expect(rows.filter((r) => r.status === 'ok')).toHaveLength(200);
    expect(isPng(readFileSync(join(outputDir, rows[0]!.output_image!)))).toBe(true);
    const entry = await readLedgerEntry(outputDir, 7);
    expect(entry).toMatchObject({ status: 'ok', info: { batchId: created[0]!.id, priced: 'batch' } });
    // The same rows straight through the Images API: the batch run cost half.
    const again = await dataset('d200', 200);
    const directSummary = await runDataset(
      testInput({ runId: 'direct-200', inputPath: again.csv, outputDir: again.outputDir, window: 16 }),
    );
    expect(directSummary.ok).toBe(200);
    expect(summary.costUsd).toBeGreaterThan(0);
    expect(summary.costUsd / directSummary.costUsd).toBeCloseTo(0.5, 6);
    console.log(
      `200 rows, gpt-image-2, stand-in usage: direct $${directSummary.costUsd.toFixed(4)}, --batch $${summary.costUsd.toFixed(4)}`,
    );

    // Keys stay in the worker: not in the server's state (history), the outputs or the ledger.
    expect(filesContaining(stateDir, 'batch-200').length).toBeGreaterThan(0);
    expect(filesContaining(stateDir, OPENAI_KEY)).toEqual([]);
    expect(filesContaining(outputDir, OPENAI_KEY)).toEqual([]);

    // Running the finished run again makes no batch and no call.
    const callsBefore = openai.calls.length;
    const rerun = await runDataset(
      testInput({ runId: 'batch-200', inputPath: csv, outputDir, window: 8, batch: { fallback: 'direct', ...poll } }),
    );
    expect(rerun).toMatchObject({ ok: 200, failed: 0 });
    expect(openai.batches.all.length).toBe(batchesBefore + 1);
    expect(openai.calls.length).toBe(callsBefore);
  }, 240_000);

  it('edit and text-to-image rows go in one job per endpoint; --num-images 2 is `n` in each line', async () => {
    const { csv, outputDir } = await dataset('mix', 3, ['3,,mix-3 draw a lighthouse', '4,,mix-4 draw a fox']);
    const before = openai.batches.all.length;
    const summary = await runDataset(
      testInput({ runId: 'batch-mixed', inputPath: csv, outputDir, numImages: 2, batch: { fallback: 'fail', ...poll } }),
    );
    expect(summary).toMatchObject({ total: 5, ok: 5, failed: 0 });
    const created = openai.batches.all.slice(before);
    expect(created.map((b) => [b.endpoint, b.request_counts.total]).sort()).toEqual([
      ['/v1/images/edits', 3],
      ['/v1/images/generations', 2],
    ]);
    expect(viaBatch(openai.calls, 'mix-').every((c) => c.n === 2)).toBe(true);
    expect(direct(openai.calls, 'mix-')).toHaveLength(0);
    const rows = results(outputDir);
    expect(JSON.parse(rows.find((r) => r.index === '3')!.output_image!)).toEqual(['000003_00.png', '000003_01.png']);
  }, 120_000);

  it('per-line failures fall back to the direct path (--batch-fallback direct)', async () => {
    const { csv, outputDir } = await dataset('fbd', 6);
    // Row 1's line gets a 500 once (the direct retry succeeds); row 2 is refused every time.
    openai.script('fbd-1 ', [faults.serverError()]);
    openai.script('fbd-2 ', [faults.moderationBlocked()], { repeat: true });
    const summary = await runDataset(
      testInput({ runId: 'batch-fallback-direct', inputPath: csv, outputDir, batch: { fallback: 'direct', ...poll } }),
    );
    expect(summary).toMatchObject({ total: 6, ok: 5, failed: 1, failedByType: { Blocked: 1 } });
    // Only the two rows the batch failed were called directly.
    expect(new Set(direct(openai.calls, 'fbd-').map((c) => c.prompt.split(' ')[0]))).toEqual(new Set(['fbd-1', 'fbd-2']));
    const rows = results(outputDir);
    expect(rows.find((r) => r.index === '1')).toMatchObject({ status: 'ok' });
    expect(rows.find((r) => r.index === '2')!.error).toMatch(/^Blocked: /);
  }, 120_000);

  it("per-line failures are reported with the provider's reason (--batch-fallback fail); an expired batch too", async () => {
    const { csv, outputDir } = await dataset('fbf', 6);
    openai.script('fbf-2 ', [faults.moderationBlocked()], { repeat: true });
    openai.batches.configure({ expireAfterRequests: 4 });
    try {
      const summary = await runDataset(
        testInput({ runId: 'batch-fallback-fail', inputPath: csv, outputDir, batch: { fallback: 'fail', ...poll } }),
      );
      expect(summary.total).toBe(6);
      expect(summary.ok + summary.failed).toBe(6);
      expect(summary.failedByType.Blocked).toBe(1);
      // 4 lines ran before the batch expired; the 2 left were never run.
      expect(summary.failedByType.Retryable).toBe(2);
    } finally {
      openai.batches.configure({ expireAfterRequests: undefined });
    }
    expect(direct(openai.calls, 'fbf-')).toHaveLength(0);
    const failed = results(outputDir).filter((r) => r.status === 'failed');
    expect(failed.find((r) => r.index === '2')!.error).toMatch(
      /^Blocked: batch batch-\S+: 400 moderation_blocked: Your request was rejected by the safety system/,
    );
    expect(
      failed.filter((r) => /batch_expired: This request could not be executed before the completion window expired/.test(r.error!)),
    ).toHaveLength(2);
  }, 120_000);

  it('a multi-turn row goes down the direct path with --batch-fallback direct, and is refused with fail', async () => {
    const dir = tempDir('atelier-batch-mt-');
    await writePng(join(dir, 'in.png'));
    const jsonl = join(dir, 'rows.jsonl');
    const turns = (tag: string) =>
      JSON.stringify({
        images: 'in.png',
        conversations: [
          { role: 'user', content: `${tag}-a first` },
          { role: 'assistant', content: 'ok' },
          { role: 'user', content: `${tag}-b second` },
        ],
      });
    writeText(
      jsonl,
      [JSON.stringify({ images: 'in.png', conversations: [{ role: 'user', content: 'mt-single one edit' }] }), turns('mt-chain')].join(
        '\n',
      ),
    );
    const outDirect = join(dir, 'out-direct');
    const viaDirect = await runDataset(
      testInput({ runId: 'batch-mt-direct', inputPath: jsonl, outputDir: outDirect, batch: { fallback: 'direct', ...poll } }),
    );
    expect(viaDirect).toMatchObject({ total: 2, ok: 2, failed: 0 });
    expect(direct(openai.calls, 'mt-chain')).toHaveLength(2);
    expect(viaBatch(openai.calls, 'mt-single')).toHaveLength(1);

    const outFail = join(dir, 'out-fail');
    const refused = await runDataset(
      testInput({ runId: 'batch-mt-fail', inputPath: jsonl, outputDir: outFail, batch: { fallback: 'fail', ...poll } }),
    );
    expect(refused).toMatchObject({ total: 2, ok: 1, failed: 1, failedByType: { InputError: 1 } });
    expect(results(outFail).find((r) => r.status === 'failed')!.error).toMatch(/multi-turn row cannot go through a provider batch/);
    expect(direct(openai.calls, 'mt-chain')).toHaveLength(2);
  }, 120_000);

  it('cancelling the run cancels the provider batch; the query shows its status and counts', async () => {
    const { csv, outputDir } = await dataset('cancel', 20);
    openai.batches.configure({ inProgressMs: 60_000 });
    const before = openai.batches.all.length;
    const cancelsBefore = openai.batches.cancelCalls();
    const workers: Worker[] = await createWorkers({
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      env: workerEnv(),
      workerOptions: { shutdownGraceTime: '1 second' },
    });
    const input = testInput({ runId: 'batch-cancel', inputPath: csv, outputDir, batch: { fallback: 'direct', ...poll } });
    const handle = await env.client.workflow.start('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: input.runId,
      args: [input],
    });
    const outcome = (async () => {
      try {
        for (let i = 0; i < 300; i++) {
          const view = (await handle.query(batchJobsQuery).catch(() => null)) as BatchPhaseView | null;
          if (view?.jobs[0]?.status?.providerStatus === 'in_progress' && view.jobs[0].status.completed === 20) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        const view = (await handle.query(batchJobsQuery)) as BatchPhaseView;
        await handle.cancel();
        await handle.result().catch(() => undefined);
        return view;
      } finally {
        openai.batches.configure({ inProgressMs: 300 });
      }
    })();
    const view = await runWorkersUntil(workers, outcome);
    expect(view.jobs).toHaveLength(1);
    expect(view.jobs[0]).toMatchObject({
      phase: 'waiting',
      rows: 20,
      status: { providerStatus: 'in_progress', total: 20, completed: 20, failed: 0 },
    });
    const created = openai.batches.all.slice(before);
    expect(created).toHaveLength(1);
    expect(openai.batches.cancelCalls()).toBe(cancelsBefore + 1);
    expect(created[0]!.status).toBe('cancelled');
    expect((await handle.describe()).status.name).toBe('CANCELLED');
    // The 20 answers the batch made before the cancel were paid for: they are committed, not lost.
    expect(results(outputDir).filter((r) => r.status === 'ok')).toHaveLength(20);
  }, 120_000);
});

describe('--batch on Gemini', () => {
  it('inline requests, per-request errors fall back to the direct path, costs at batch prices', async () => {
    const { csv, outputDir } = await dataset('gem', 12);
    gemini.script('gem-3 ', [geminiFaults.invalidArgument('Unable to process input image.')]);
    gemini.script('gem-4 ', [geminiFaults.finishReason('IMAGE_SAFETY')], { repeat: true });
    const summary: DatasetRunSummary = await runDataset(
      testInput({
        runId: 'batch-gemini',
        backend: 'gemini',
        model: 'gemini-2.5-flash-image',
        inputPath: csv,
        outputDir,
        batch: { fallback: 'direct', ...poll },
      }),
    );
    expect(summary).toMatchObject({ total: 12, ok: 11, failed: 1, failedByType: { Blocked: 1 } });
    expect(gemini.batches.all.filter((b) => b.displayName.startsWith('batch-gemini#'))).toHaveLength(1);
    expect(viaBatch(gemini.calls, 'gem-')).toHaveLength(12);
    expect(new Set(direct(gemini.calls, 'gem-').map((c) => c.prompt.split(' ')[0]))).toEqual(new Set(['gem-3', 'gem-4']));
    const entry = await readLedgerEntry(outputDir, 0);
    // 1290 output tokens at $30/M, halved.
    expect(entry?.costUsd).toBeCloseTo((1290 * 30) / 1e6 / 2 + (entry!.usage!.inputTokens! * 0.3) / 1e6 / 2, 6);
  }, 120_000);

  it('an expired Gemini batch returns nothing: every row is failed with the job state (--batch-fallback fail)', async () => {
    const { csv, outputDir } = await dataset('gexp', 4);
    gemini.batches.configure({ expireAfterRequests: 2 });
    try {
      const summary = await runDataset(
        testInput({
          runId: 'batch-gemini-expired',
          backend: 'gemini',
          model: 'gemini-2.5-flash-image',
          inputPath: csv,
          outputDir,
          batch: { fallback: 'fail', ...poll },
        }),
      );
      expect(summary).toMatchObject({ total: 4, ok: 0, failed: 4, failedByType: { Retryable: 4 } });
    } finally {
      gemini.batches.configure({ expireAfterRequests: undefined });
    }
    expect(results(outputDir).every((r) => /ended JOB_STATE_EXPIRED without an answer for this row/.test(r.error!))).toBe(true);
    expect(direct(gemini.calls, 'gexp-')).toHaveLength(0);
  }, 120_000);

  it('over 20 MB of requests: a JSONL file through the Files API, answers read from the responses file', async () => {
    const dir = tempDir('atelier-batch-gemfile-');
    // Noise does not compress: each PNG is about 3 MB, about 4 MB once base64 in a request.
    for (let i = 0; i < 6; i++) {
      const noise = randomBytes(1000 * 1000 * 3);
      await sharp(noise, { raw: { width: 1000, height: 1000, channels: 3 } })
        .png({ compressionLevel: 1 })
        .toFile(join(dir, `n${i}.png`));
    }
    const csv = join(dir, 'rows.csv');
    writeText(csv, ['image,instruction', ...Array.from({ length: 6 }, (_, i) => `n${i}.png,gfile-${i} make it calmer`)].join('\n'));
    const outputDir = join(dir, 'out');
    const filesBefore = gemini.uploadedFiles();
    const summary = await runDataset(
      testInput({
        runId: 'batch-gemini-file',
        backend: 'gemini',
        model: 'gemini-2.5-flash-image',
        inputPath: csv,
        outputDir,
        batch: { fallback: 'fail', ...poll },
      }),
    );
    expect(summary).toMatchObject({ total: 6, ok: 6, failed: 0 });
    const job = gemini.batches.all.find((b) => b.displayName.startsWith('batch-gemini-file#'))!;
    expect(job.source).toMatch(/^files\//);
    expect(job.output).toMatchObject({ responsesFile: expect.stringMatching(/^files\//) });
    // The input file and the responses file.
    expect(gemini.uploadedFiles()).toBe(filesBefore + 2);
    expect(direct(gemini.calls, 'gfile-')).toHaveLength(0);
  }, 120_000);
});
