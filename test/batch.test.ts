import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
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
import { startGeminiStandin, geminiFaults, type GeminiStandin } from '../activities/providers/gemini/standin';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { createWorkers, runWorkersUntil } from '../workers';
import { batchJobsQuery } from '../workflows/batchMessages';
import { progressQuery } from '../workflows/messages';
import { isPng, tempDir, writePng, writeText } from './helpers/fixtures';
import { filesContaining } from './helpers/scan';
import { runDataset as runWith, startTestServer, testInput } from './helpers/temporalEnv';

// The Gemini stand-in plays the API as of 2026-06-01 (before the 2.5 Flash Image shutdown) so these
// runs keep their 2.5 rates; test/unit/modelCheck.test.ts covers today's refusals.
const BEFORE_SHUTDOWNS = () => new Date('2026-06-01T00:00:00Z');

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
  gemini = await startGeminiStandin({ batch: { pendingMs: 100, runningMs: 300, concurrency: 8 }, now: BEFORE_SHUTDOWNS });
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
  it('each distinct input image is uploaded once (file_id in the lines): 60 rows over 2 distinct 1024² images are 1 job, and the uploads are deleted once committed', async () => {
    const dir = tempDir('atelier-batch-files-');
    // Noise: PNGs that do not compress, about 3 MB each (what a photo costs).
    const sizes: number[] = [];
    for (const name of ['a.png', 'b.png']) {
      const raw = randomBytes(1024 * 1024 * 3);
      const png = await sharp(raw, { raw: { width: 1024, height: 1024, channels: 3 } })
        .png()
        .toBuffer();
      writeFileSync(join(dir, name), png);
      sizes.push(png.length);
    }
    const distinct = sizes[0]! + sizes[1]!;
    const csv = join(dir, 'rows.csv');
    writeText(
      csv,
      ['index,image,instruction', ...Array.from({ length: 60 }, (_, i) => `${i},${i % 2 ? 'b' : 'a'}.png,bf60-${i} x`)].join('\n'),
    );
    const outputDir = join(dir, 'out');
    const batchesBefore = openai.batches.all.length;
    const bytesBefore = openai.batches.uploadedBytes();
    const summary = await runDataset(
      testInput({ runId: 'batch-files-60', inputPath: csv, outputDir, window: 8, batch: { fallback: 'direct', ...poll } }),
    );
    expect(summary).toMatchObject({ total: 60, ok: 60, failed: 0 });
    expect(direct(openai.calls, 'bf60-')).toHaveLength(0);
    const created = openai.batches.all.slice(batchesBefore);
    const uploaded = openai.batches.uploadedBytes() - bytesBefore;
    console.log(
      `60 rows over 2 distinct 1024² images (${(distinct / 1e6).toFixed(1)} MB): ${created.length} job(s), ${(uploaded / 1e6).toFixed(2)} MB uploaded`,
    );
    // Before: every line carried its images as base64 data URLs: 2 jobs, 240 MB.
    expect(created).toHaveLength(1);
    expect(uploaded).toBeLessThanOrEqual(1.5 * distinct + 1024 * 1024);
    // Every line referred to an uploaded image by file id, and those files are gone once committed.
    expect(viaBatch(openai.calls, 'bf60-').every((c) => c.imageSizes[0]?.width === 1024)).toBe(true);
    expect(openai.batches.storedFiles('vision').filter((f) => f.filename.startsWith('batch-files-60'))).toEqual([]);
  }, 240_000);

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
    // Row 1's line gets a 500 (then its first direct call, slowly: the progress is sampled
    // meanwhile; the direct retry succeeds); row 2 is refused every time.
    openai.script('fbd-1 ', [faults.serverError(), { ...faults.serverError(), delayMs: 3000 }]);
    openai.script('fbd-2 ', [faults.moderationBlocked()], { repeat: true });
    // The progress (rows done = ok + failed) as the CLI shows it, sampled while the run goes.
    const done: number[] = [];
    let running = true;
    const sampling = (async () => {
      while (running) {
        const p = await env.client.workflow
          .getHandle('batch-fallback-direct')
          .query(progressQuery)
          .catch(() => undefined);
        if (p && p.phase !== 'planning') done.push(p.ok + p.failed);
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const summary = await runDataset(
      testInput({ runId: 'batch-fallback-direct', inputPath: csv, outputDir, batch: { fallback: 'direct', ...poll } }),
    ).finally(() => (running = false));
    await sampling;
    // The count never goes backwards (rows the direct pass takes over were counted failed, then not).
    expect(done.length).toBeGreaterThan(3);
    expect(
      done.every((n, k) => k === 0 || n >= done[k - 1]!),
      done.join(' '),
    ).toBe(true);
    expect(summary).toMatchObject({ total: 6, ok: 5, failed: 1, failedByType: { Blocked: 1 } });
    // Only the row whose line failed transiently was called directly: a moderation refusal is
    // final, so the blocked row is not sent again at full price.
    expect(direct(openai.calls, 'fbd-').map((c) => c.prompt.split(' ')[0])).toEqual(['fbd-1', 'fbd-1']);
    const rows = results(outputDir);
    expect(rows.find((r) => r.index === '1')).toMatchObject({ status: 'ok' });
    expect(rows.find((r) => r.index === '2')!.error).toMatch(/^Blocked: batch /);
    // Row 1 was called 3 times (its batch line, then twice directly): its entry says so.
    expect(await readLedgerEntry(outputDir, 1)).toMatchObject({ status: 'ok', attempts: 3 });
    expect(await readLedgerEntry(outputDir, 2)).toMatchObject({ status: 'failed', errorType: 'Blocked', attempts: 1 });
  }, 120_000);

  it('a submit retried after its uploads (the batch create answered 500) reuses them: no image uploaded twice, none left behind', async () => {
    const dir = tempDir('atelier-batch-leak-');
    await writePng(join(dir, 'a.png'), '#a03020');
    await writePng(join(dir, 'b.png'), '#20a030');
    const csv = join(dir, 'rows.csv');
    writeText(csv, ['image,instruction', ...Array.from({ length: 4 }, (_, i) => `${i % 2 ? 'b' : 'a'}.png,leak-${i} x`)].join('\n'));
    const mine = (purpose: string) => openai.batches.storedFiles(purpose).filter((f) => f.filename.startsWith('batch-upload-retry'));
    const uploadsBefore = openai.batches.uploadCount('vision');
    openai.batches.configure({ failCreates: 1 });
    const summary = await runDataset(
      testInput({ runId: 'batch-upload-retry', inputPath: csv, outputDir: join(dir, 'out'), batch: { fallback: 'fail', ...poll } }),
    );
    expect(summary).toMatchObject({ total: 4, ok: 4, failed: 0 });
    // Two distinct images, each uploaded once across both submit attempts, and deleted once committed.
    expect(openai.batches.uploadCount('vision') - uploadsBefore).toBe(2);
    expect(mine('vision')).toEqual([]);
    // The first attempt's batch input file (its create failed) was deleted too: only the batch's own remains.
    expect(mine('batch')).toHaveLength(1);
  }, 120_000);

  it('a run split into 3 jobs (run in parallel) uploads each distinct image once for the run, and deletes every upload at its end', async () => {
    const dir = tempDir('atelier-batch-share-');
    const names = ['a.png', 'b.png', 'c.png'];
    for (const [k, name] of names.entries()) await writePng(join(dir, name), ['#a03020', '#20a030', '#2030a0'][k]!);
    const csv = join(dir, 'rows.csv');
    // 12 rows, 4 per job: every job holds rows of all 3 images.
    writeText(csv, ['image,instruction', ...Array.from({ length: 12 }, (_, i) => `${names[i % 3]},share-${i} x`)].join('\n'));
    const mine = (purpose: string) => openai.batches.storedFiles(purpose).filter((f) => f.filename.startsWith('batch-share-run'));
    const uploadsBefore = openai.batches.uploadCount('vision');
    const batchesBefore = openai.batches.all.length;
    // One job's create answers 500: its retry (2 s later) comes after the other jobs' batches have
    // ended and their answers are committed, and must still find the run's uploads there.
    openai.batches.configure({ failCreates: 1 });
    const summary = await runDataset(
      testInput({
        runId: 'batch-share-run',
        inputPath: csv,
        outputDir: join(dir, 'out'),
        batch: { fallback: 'fail', maxRowsPerJob: 4, ...poll },
      }),
    );
    expect(summary).toMatchObject({ total: 12, ok: 12, failed: 0 });
    expect(openai.batches.all.length - batchesBefore).toBe(3);
    // Per job, this was 9 uploads (3 images × 3 jobs); per run it is 3.
    expect(openai.batches.uploadCount('vision') - uploadsBefore).toBe(3);
    // All deleted once the last job committed its answers; each job's own batch input stays.
    expect(mine('vision')).toEqual([]);
    expect(mine('batch')).toHaveLength(3);
    expect(direct(openai.calls, 'share-')).toHaveLength(0);
  }, 180_000);

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
    // gem-3's 400 may be the batch's own: it goes direct; gem-4's safety refusal is final.
    expect(direct(gemini.calls, 'gem-').map((c) => c.prompt.split(' ')[0])).toEqual(['gem-3']);
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

  it('large inputs go through the Files API once each (fileData parts): the requests stay inline and small, the uploads are deleted once committed', async () => {
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
    const storedBefore = gemini.storedFiles();
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
    // Before: 24 MB of base64 in the requests, so a JSONL file; now each request names its image.
    expect(job.source).toBe('inline');
    // One upload per distinct image, no JSONL file.
    expect(gemini.uploadedFiles()).toBe(filesBefore + 6);
    // Deleted once the answers were committed (an inline job leaves no responses file either).
    expect(gemini.storedFiles()).toBe(storedBefore);
    expect(direct(gemini.calls, 'gfile-')).toHaveLength(0);
  }, 120_000);
});
