import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBatchActivities, createBatchPlanningActivities, type PlanBatchJobsInput } from '../activities/batch';
import { createModelActivities } from '../activities/editRow';
import { createGpuRowActivities, type GpuRowPlan } from '../activities/gpuRow';
import { createOrchestrationActivities } from '../activities/orchestration';
import { createPromptEnhancer } from '../activities/providers/promptEnhance';
import { providerFromEnv } from '../activities/providers/registry';
import { commitLedgerEntry, readLedgerEntry, writeLedgerEntry, type LedgerEntry } from '../lib/run/ledger';
import { readPlanRows, taskPlanRow } from '../lib/run/plan';
import { setAsideForRedo } from '../lib/run/redo';
import { RunStore } from '../lib/run/runStore';
import type { BatchJobSpec, BatchPlan, BatchStatus, BatchSubmission } from '../lib/shared/batch';
import { ClassifiedError } from '../lib/shared/errors';
import type { DatasetWorkflowInput, RowOutcome, RowTask } from '../lib/shared/types';
import { adoptStorage, type Storage } from '../storage';
import { LocalStorage } from '../storage/local';
import { S3Storage } from '../storage/s3';
import { CountingStorage } from '../testing/countingStorage';
import { startOpenAIStandin, faults, type OpenAIStandin } from '../activities/providers/openai/standin';
import { startOpenRouterStandin, type ChatStandin } from '../activities/providers/openrouter/standin';
import { startS3FaultProxy, type S3FaultProxy } from '../testing/s3FaultProxy';
import { startS3Server, type S3TestServer } from '../testing/versitygw';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { testInput } from './helpers/temporalEnv';

// The run's state under faults, at the activities (the Temporal test environment runs each attempt;
// a retryable failure is retried the way the activity's retry policy would): the providers' real SDKs
// against the stand-ins, real storage (a local folder, versitygw behind a counting fault proxy).
// Every test counts the paid calls at the stand-in.

const OPENAI_KEY = 'sk-test-runstore-6c1d9e2a7b';
const ENHANCE_KEY = 'sk-or-test-runstore-3a8f';
let openai: OpenAIStandin;
let chat: ChatStandin;
let s3: S3TestServer;
let proxy: S3FaultProxy;

beforeAll(async () => {
  openai = await startOpenAIStandin({ batch: { validatingMs: 50, inProgressMs: 100, finalizingMs: 50, concurrency: 4 } });
  chat = await startOpenRouterStandin();
});

afterAll(async () => {
  await openai?.close();
  await chat?.close();
});

const model = async () =>
  createModelActivities(await providerFromEnv('openai', { OPENAI_API_KEY: OPENAI_KEY, OPENAI_BASE_URL: openai.baseURL }), {
    enhancer: (m) => createPromptEnhancer({ apiKey: ENHANCE_KEY, baseURL: chat.baseURL, model: m }),
  });

async function planned(
  tag: string,
  rows: number,
  outputDir?: string,
  overrides: Partial<DatasetWorkflowInput> = {},
): Promise<{ input: DatasetWorkflowInput; tasks: RowTask[] }> {
  const dir = tempDir(`atelier-runstore-${tag}-`);
  await writePng(join(dir, 'in.png'), '#336699', 32);
  const csv = join(dir, 'rows.csv');
  writeText(csv, ['image,instruction', ...Array.from({ length: rows }, (_, i) => `in.png,${tag}-${i} make it warmer`)].join('\n'));
  const input = testInput({ runId: `runstore-${tag}`, inputPath: csv, outputDir: outputDir ?? join(dir, 'out'), ...overrides });
  const result = (await new MockActivityEnvironment().run(createOrchestrationActivities().planRun, input)) as {
    input: DatasetWorkflowInput;
  };
  const full = result.input;
  const tasks = Array.from({ length: rows }, (_, i) => ({
    runId: full.runId,
    outputDir: full.outputDir,
    position: i,
    index: i,
    backend: full.backend,
    model: full.model,
    params: full.params,
    numImages: full.numImages,
    encoding: full.encoding,
    imageCacheDir: full.imageCacheDir!,
    ...(full.promptEnhance ? { promptEnhance: full.promptEnhance } : {}),
    ...(full.gpu ? { gpu: full.gpu } : {}),
  }));
  return { input: full, tasks };
}

/** Runs the row activity as Temporal would: attempts 1..max while the failure is retryable. */
async function editRow(task: RowTask, max = 3): Promise<RowOutcome> {
  const activities = await model();
  for (let attempt = 1; ; attempt++) {
    try {
      return (await new MockActivityEnvironment({ attempt }).run(activities.editRow, task)) as RowOutcome;
    } catch (err) {
      if (attempt >= max || (err instanceof ApplicationFailure && err.nonRetryable)) throw err;
    }
  }
}

async function batchRound(input: DatasetWorkflowInput, phaseId: string, beforeCollect?: () => void): Promise<void> {
  const env = new MockActivityEnvironment();
  const planning: PlanBatchJobsInput = {
    runId: input.runId,
    outputDir: input.outputDir,
    backend: 'openai',
    phaseId,
    round: 0,
    fallback: 'direct',
  };
  const plan = (await env.run(createBatchPlanningActivities().planBatchJobs, planning)) as BatchPlan;
  const activities = createBatchActivities({ backend: 'openai', apiKey: OPENAI_KEY, baseURL: openai.baseURL });
  for (const job of plan.jobs) {
    const spec: BatchJobSpec = {
      runId: input.runId,
      outputDir: input.outputDir,
      jobId: job.jobId,
      phaseId,
      backend: 'openai',
      model: input.model,
      params: input.params,
      numImages: 1,
      encoding: input.encoding,
      imageCacheDir: input.imageCacheDir!,
      rows: job.rows,
      fallback: 'direct',
    };
    const submitted = (await env.run(activities.submitBatchJob, spec)) as BatchSubmission;
    for (;;) {
      const status = (await env.run(activities.pollBatchJob, { backend: 'openai' as const, batchId: submitted.batchId! })) as BatchStatus;
      if (status.terminal) break;
      await sleep(100);
    }
    beforeCollect?.();
    await env.run(activities.collectBatchJob, { spec, batchId: submitted.batchId! });
  }
}

/**
 * Storage requests per row of the row activity (single-call rows, the provider answering at once):
 * a first run, then a re-run of the finished rows. Planning is not counted.
 */
async function requestsPerRow(tag: string, counting: CountingStorage, rows = 8): Promise<{ happy: number; rerun: number }> {
  adoptStorage(counting);
  const { tasks } = await planned(tag, rows, counting.location);
  counting.reset();
  for (const task of tasks) expect((await editRow(task)).status).toBe('ok');
  const happy = counting.total() / rows;
  counting.reset();
  for (const task of tasks) expect((await editRow(task)).status).toBe('ok');
  const rerun = counting.total() / rows;
  console.info(`storage requests per row (${counting.kind}): first run ${happy}, re-run of a finished row ${rerun}`);
  return { happy, rerun };
}

describe('storage requests per row', () => {
  it('local: a first run and a re-run of finished rows stay within their request budget', async () => {
    const { happy, rerun } = await requestsPerRow(
      'count',
      new CountingStorage(new LocalStorage(join(tempDir('atelier-runstore-count-'), 'out'))),
    );
    // Plan row 2, ledger entry 1, stored answer (none) 1, output 1, create-only commit 1: the
    // answer is stored only when a step after the call fails.
    expect(happy).toBeLessThanOrEqual(6);
    // Plan row 2, ledger entry 1, output check 1.
    expect(rerun).toBeLessThanOrEqual(4);
  }, 120_000);
});

describe('storage requests per committed GPU row and batch row', () => {
  it('a GPU row (prepare, then the commit of its output) and a batch row (collect) each commit with one conditional write of the entry', async () => {
    const counting = new CountingStorage(new LocalStorage(join(tempDir('atelier-runstore-gpucount-'), 'out')));
    adoptStorage(counting);
    const { tasks } = await planned('gpucount', 4, counting.location, {
      backend: 'diffusers',
      model: '/models/tiny-pix2pix',
      gpu: { modelType: 'instruct-pix2pix', taskQueue: 'gpu-tiny-pix2pix', seed: 7, params: {} },
    });
    const gpu = createGpuRowActivities();
    const env = new MockActivityEnvironment();
    const png = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#00ff00' } })
      .png()
      .toBuffer();
    const sha256 = createHash('sha256').update(png).digest('hex');
    let prepare = 0;
    const gpuCommit: Record<string, number> = {};
    for (const task of tasks) {
      counting.reset();
      const plan = (await env.run(gpu.prepareGpuRow, task)) as GpuRowPlan;
      prepare += counting.total();
      counting.reset();
      // The GPU worker's side: the PNG created at the request's output path.
      writeFileSync(plan.requests[0]!.output_path, png, { flag: 'wx' });
      const result = { output_path: plan.requests[0]!.output_path, width: 32, height: 32, seed: 1, num_inference_steps: 1 };
      await env.run(gpu.commitGpuOutput, {
        task,
        output: 0,
        result: { ...result, latency_ms: 5, batch_size: 1, sha256, size: png.length },
        last: true,
        chained: false,
        attempts: 1,
      });
      for (const [op, n] of Object.entries(counting.counts)) gpuCommit[op] = (gpuCommit[op] ?? 0) + n;
    }
    const perGpuRow = Object.values(gpuCommit).reduce((a, b) => a + b, 0) / tasks.length;
    for (const task of tasks) expect((await readLedgerEntry(task.outputDir, task.index))?.status).toBe('ok');

    const batchCounting = new CountingStorage(new LocalStorage(join(tempDir('atelier-runstore-batchcount-'), 'out')));
    adoptStorage(batchCounting);
    const { input } = await planned('batchcount', 4, batchCounting.location);
    await batchRound(input, 'p1', () => batchCounting.reset());
    const perBatchRow = batchCounting.total() / 4;
    for (let i = 0; i < 4; i++) expect((await readLedgerEntry(input.outputDir, i))?.status).toBe('ok');
    console.info(
      `storage requests per committed row: GPU prepare ${prepare / tasks.length}, GPU commit ${perGpuRow} ${JSON.stringify(gpuCommit)}; ` +
        `batch collect ${perBatchRow} ${JSON.stringify(batchCounting.counts)}`,
    );
    // The commit's ledger part is one create-only write of the entry: the only plain writes are the
    // outputs (the two-request protocol was a done-marker create, then a plain write of the entry).
    expect([gpuCommit.create, gpuCommit.write]).toEqual([tasks.length, tasks.length]);
    // The batch job's one other plain write is its `ended` record (the run's shared uploads,
    // activities/batchUploads.ts): once per job, not per row.
    expect([batchCounting.counts.create, batchCounting.counts.write]).toEqual([4, 4 + 1]);
  }, 180_000);
});

describe('a late GPU attempt', () => {
  it('leaves the outputs and entry of the attempt that finished the row first', async () => {
    const { tasks } = await planned('gpulate', 1, join(tempDir('atelier-runstore-gpulate-'), 'out'), {
      backend: 'diffusers',
      model: '/models/tiny-pix2pix',
      gpu: { modelType: 'instruct-pix2pix', taskQueue: 'gpu-tiny-pix2pix', seed: 7, params: {} },
    });
    const task = tasks[0]!;
    const gpu = createGpuRowActivities();
    const env = new MockActivityEnvironment();
    const plan = (await env.run(gpu.prepareGpuRow, task)) as GpuRowPlan;
    const commit = async (colour: string, latency: number): Promise<void> => {
      const png = await sharp({ create: { width: 32, height: 32, channels: 3, background: colour } })
        .png()
        .toBuffer();
      // Each attempt's GPU worker leaves its image where the request said (the late one after the first's commit).
      mkdirSync(dirname(plan.requests[0]!.output_path), { recursive: true });
      writeFileSync(plan.requests[0]!.output_path, png);
      const sha256 = createHash('sha256').update(png).digest('hex');
      const result = { output_path: plan.requests[0]!.output_path, width: 32, height: 32, seed: 1, num_inference_steps: 1 };
      await env.run(gpu.commitGpuOutput, {
        task,
        output: 0,
        result: { ...result, latency_ms: latency, batch_size: 1, sha256, size: png.length },
        last: true,
        chained: false,
        attempts: 1,
      });
    };
    await commit('#00ff00', 5);
    const first = await readLedgerEntry(task.outputDir, task.index);
    const output = join(task.outputDir, first!.outputImages![0]!);
    const bytes = readFileSync(output);
    await commit('#ff0000', 9);
    expect(await readLedgerEntry(task.outputDir, task.index)).toEqual(first);
    expect(readFileSync(output).equals(bytes)).toBe(true);
  }, 120_000);
});

describe('storage requests per row with the plan line in the task', () => {
  it('a first attempt of a task carrying its plan line and freshness reads neither plan nor ledger: output and entry, 2 requests', async () => {
    const counting = new CountingStorage(new LocalStorage(join(tempDir('atelier-runstore-fresh-'), 'out')));
    adoptStorage(counting);
    const { tasks } = await planned('fresh', 4, counting.location);
    const rows = await readPlanRows(counting.location, 0, 4);
    counting.reset();
    for (const [i, task] of tasks.entries()) {
      const outcome = await editRow({ ...task, row: taskPlanRow(rows[i]!)!, fresh: true });
      expect(outcome.status).toBe('ok');
    }
    expect(counting.counts).toEqual({ write: 4, create: 4 });
    expect(openai.callsFor('fresh-')).toHaveLength(4);
  }, 120_000);
});

describe('one commit protocol for every path', () => {
  it('a row that had no entry commits by creating it: a second attempt never overwrites it and takes it; a failure recorded meanwhile is replaced conditionally', async () => {
    const outputDir = join(tempDir('atelier-runstore-create-'), 'out');
    const store = RunStore.open(outputDir);
    const base = { position: 3, runId: 'r', model: 'm', digest: 'd'.repeat(64) };
    const first: LedgerEntry = { ...base, index: 3, status: 'ok', outputImages: ['a.png'], finishedAt: '2026-12-07T06:00:00.000Z' };
    const late: LedgerEntry = { ...first, outputImages: ['late.png'], finishedAt: '2026-12-07T06:00:05.000Z' };
    expect(await store.commitEntry(first, null)).toEqual({ won: true, entry: first });
    expect(await store.commitEntry(late, null)).toEqual({ won: false, entry: first });
    expect(await store.readEntry(3)).toEqual(first);
    expect(existsSync(join(outputDir, '.atelier', 'ledger', 'done'))).toBe(false);
    // A failure recorded after the attempt began (it started from no entry): the commit replaces it.
    const failed: LedgerEntry = { ...base, index: 5, status: 'failed', errorType: 'Retryable', finishedAt: '2026-12-07T06:00:00.000Z' };
    await store.writeEntry(failed);
    const ok: LedgerEntry = { ...first, index: 5 };
    expect(await store.commitEntry(ok, null)).toEqual({ won: true, entry: ok });
    expect(await store.readEntry(5)).toEqual(ok);
    expect(await store.commitEntry({ ...late, index: 5 }, null)).toEqual({ won: false, entry: ok });
    expect(await store.readEntry(5)).toEqual(ok);
    // Two attempts that started from the same failure: the one whose write comes second loses.
    const again: LedgerEntry = { ...failed, index: 6 };
    const startedFrom = await store.putEntry(again);
    expect(await store.commitEntry({ ...ok, index: 6 }, startedFrom)).toEqual({ won: true, entry: { ...ok, index: 6 } });
    expect(await store.commitEntry({ ...late, index: 6 }, startedFrom)).toEqual({ won: false, entry: { ...ok, index: 6 } });
    expect(existsSync(join(outputDir, '.atelier', 'ledger', 'done'))).toBe(false);
  });

  it('a redone row that a --batch pass makes again keeps its history, as the direct path does', async () => {
    const { input } = await planned('bhist', 2);
    await batchRound(input, 'p1');
    const first = (await readLedgerEntry(input.outputDir, 1))!;
    expect(first.status).toBe('ok');
    await setAsideForRedo(input.outputDir, first, 'rejected in the viewer');
    await batchRound(input, 'p2');
    const after = (await readLedgerEntry(input.outputDir, 1))!;
    expect(after).toMatchObject({ status: 'ok', info: { priced: 'batch' } });
    expect(after.history).toHaveLength(1);
    expect(after.history![0]).toMatchObject({ generation: 1, originalImages: first.outputImages, reason: 'rejected in the viewer' });
    expect(openai.batches.all.length).toBeGreaterThanOrEqual(2);
  }, 120_000);

  it('a failed --num-images sibling on the GPU keeps the finished outputs: the retry makes only the failed one', async () => {
    const { tasks } = await planned('gpu', 1, undefined, {
      backend: 'diffusers',
      model: '/models/tiny-pix2pix',
      numImages: 2,
      gpu: { modelType: 'instruct-pix2pix', taskQueue: 'gpu-tiny-pix2pix', seed: 7, params: {} },
    });
    const task = tasks[0]!;
    const gpu = createGpuRowActivities();
    const env = new MockActivityEnvironment();
    const first = (await env.run(gpu.prepareGpuRow, task)) as GpuRowPlan;
    expect(first.requests).toHaveLength(2);
    // The GPU worker's side of the contract: a PNG created at the request's output_path. Output 0 was
    // made; output 1 failed on every attempt, so the row failed.
    const png = (color: string) =>
      sharp({ create: { width: 32, height: 32, channels: 3, background: color } })
        .png()
        .toBuffer();
    writeFileSync(first.requests[0]!.output_path, await png('#00ff00'), { flag: 'wx' });

    const retry = (await env.run(gpu.prepareGpuRow, task)) as GpuRowPlan;
    expect(retry.requests).toHaveLength(1);
    expect(retry.requests[0]!.seed).toBe(first.requests[1]!.seed);
    expect(retry.outputs ?? [retry.firstOutput]).toEqual([1]);
    expect(existsSync(join(task.outputDir, first.outputImages[0]!))).toBe(true);
    const blueOut = await png('#0000ff');
    writeFileSync(retry.requests[0]!.output_path, blueOut, { flag: 'wx' });
    const result = {
      output_path: retry.requests[0]!.output_path,
      width: 32,
      height: 32,
      seed: retry.requests[0]!.seed,
      num_inference_steps: 1,
      latency_ms: 5,
      batch_size: 1,
      sha256: createHash('sha256').update(blueOut).digest('hex'),
      size: blueOut.length,
    };
    // What the worker reports must be what is staged: another object (or no digest) is refused.
    const forged = { ...result, sha256: createHash('sha256').update('other bytes').digest('hex') };
    await expect(
      env.run(gpu.commitGpuOutput, { task, output: 1, result: forged, last: true, chained: false, attempts: 1 }),
    ).rejects.toThrow(/output 1 of row 0 refused: the staged object .* is not what the GPU worker made .*removed, not published/);
    expect(existsSync(retry.requests[0]!.output_path)).toBe(false);
    expect((await readLedgerEntry(task.outputDir, 0))?.status).not.toBe('ok');
    writeFileSync(retry.requests[0]!.output_path, blueOut, { flag: 'wx' });
    const { sha256: _sha, size: _size, ...noDigest } = result;
    await expect(
      env.run(gpu.commitGpuOutput, { task, output: 1, result: noDigest, last: true, chained: false, attempts: 1 }),
    ).rejects.toThrow(/no digest/);
    writeFileSync(retry.requests[0]!.output_path, blueOut, { flag: 'wx' });
    await env.run(gpu.commitGpuOutput, { task, output: 1, result, last: true, chained: false, attempts: 1 });
    const entry = (await readLedgerEntry(task.outputDir, 0))!;
    expect(entry).toMatchObject({ status: 'ok', outputImages: first.outputImages });
    const [green, blue] = await Promise.all(first.outputImages.map((p) => sharp(join(task.outputDir, p)).raw().toBuffer()));
    expect([...green!.subarray(0, 3)]).toEqual([0, 255, 0]);
    expect([...blue!.subarray(0, 3)]).toEqual([0, 0, 255]);
  }, 60_000);

  it('a late attempt of a multi-turn row whose row another attempt commits as it records turn 1 stops there: the commit holds, turn 2 is not paid', async () => {
    const dir = tempDir('atelier-runstore-lateturn-');
    await writePng(join(dir, 'in.png'), '#336699', 32);
    const conversations = [
      { role: 'user', content: 'lateturn-1 add a hat' },
      { role: 'user', content: 'lateturn-2 now make it red' },
    ];
    writeText(join(dir, 'chat.jsonl'), JSON.stringify({ images: ['in.png'], conversations }));
    const disk = new LocalStorage(join(dir, 'out'));
    const { tasks } = await planned('lateturn', 1, disk.location, { inputPath: join(dir, 'chat.jsonl') });
    const [row] = await readPlanRows(disk.location, 0, 1);
    // The other attempt's commit: both turns' outputs, then its ok entry.
    const committed: LedgerEntry = {
      index: 0,
      position: 0,
      status: 'ok',
      runId: tasks[0]!.runId,
      model: tasks[0]!.model,
      digest: row!.digest!,
      outputImages: row!.outputs.map((o) => o.path),
      turnsDone: 2,
      finishedAt: '2026-12-07T05:00:01.000Z',
    };
    for (const output of row!.outputs) await disk.write(output.path, await sharp(join(dir, 'in.png')).png().toBuffer());
    adoptStorage(commitLandsBeforePartial(disk, committed));
    try {
      await expect(editRow(tasks[0]!, 1)).rejects.toThrow(/finished by another attempt/);
    } finally {
      adoptStorage(disk);
    }
    expect(await readLedgerEntry(disk.location, 0)).toEqual(committed);
    expect(openai.callsFor('lateturn-1')).toHaveLength(1);
    expect(openai.callsFor('lateturn-2')).toHaveLength(0);
    // The row is done: the next attempt pays nothing.
    expect((await editRow(tasks[0]!)).status).toBe('ok');
    expect(openai.calls.filter((c) => c.prompt.startsWith('lateturn'))).toHaveLength(1);
  }, 60_000);

  it('an answer stored by an earlier release (record + image objects) is still found, and cleared whole', async () => {
    const outputDir = join(tempDir('atelier-runstore-oldanswer-'), 'out');
    const image = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } })
      .png()
      .toBuffer();
    const sha = createHash('sha256').update(image).digest('hex');
    // The layout d31c45d wrote: the image by content, then a record naming it.
    mkdirSync(join(outputDir, '.atelier', 'answers', 'objects', '000002'), { recursive: true });
    writeFileSync(join(outputDir, '.atelier', 'answers', 'objects', '000002', sha), image);
    const record = {
      requestId: 'req_1',
      usage: { output_tokens: 9 },
      digest: 'abc',
      images: [{ sha256: sha, mimeType: 'image/png' }],
      storedAt: '2026-11-30T10:00:00.000Z',
    };
    writeFileSync(join(outputDir, '.atelier', 'answers', '000002-0.json'), JSON.stringify(record));
    const store = RunStore.open(outputDir);
    expect(await store.storedAnswer(2, 0, 'other')).toBeUndefined();
    const kept = (await store.storedAnswer(2, 0, 'abc'))!;
    expect(kept.answer).toMatchObject({ requestId: 'req_1', usage: { output_tokens: 9 } });
    expect(kept.answer.images[0]!.data.equals(image)).toBe(true);
    await store.clearAnswers(kept.keys);
    expect(existsSync(join(outputDir, '.atelier', 'answers', '000002-0.json'))).toBe(false);
    expect(existsSync(join(outputDir, '.atelier', 'answers', 'objects', '000002', sha))).toBe(false);
  });

  it('a late attempt never writes its partial entry over the committed ok one', async () => {
    const outputDir = join(tempDir('atelier-runstore-late-'), 'out');
    const base = { index: 4, position: 4, runId: 'r', model: 'm', digest: 'e'.repeat(64) };
    const ok: LedgerEntry = {
      ...base,
      status: 'ok',
      outputImages: ['a.png', 'b.png'],
      turnsDone: 2,
      finishedAt: '2026-12-07T05:00:01.000Z',
    };
    expect((await commitLedgerEntry(outputDir, ok, null)).won).toBe(true);
    // The frozen attempt resumes and records its first turn.
    await writeLedgerEntry(outputDir, {
      ...base,
      status: 'partial',
      outputImages: ['a.png'],
      turnsDone: 1,
      finishedAt: new Date().toISOString(),
    });
    expect(await readLedgerEntry(outputDir, 4)).toEqual(ok);
    // A failure recorded for the same request does not replace it either.
    await writeLedgerEntry(outputDir, { ...base, status: 'failed', errorType: 'Retryable', finishedAt: new Date().toISOString() });
    expect(await readLedgerEntry(outputDir, 4)).toEqual(ok);
  });
});

describe('storage faults are not "absent" and never pay twice', () => {
  it('a storage failure reading the kept enhanced prompt fails the attempt instead of paying the enhancer again', async () => {
    const { tasks } = await planned('enh', 1, undefined, { promptEnhance: { model: 'openai/gpt-4.1-mini', withImages: false } });
    const task = tasks[0]!;
    // The edit fails once, after the enhancer answered: the rewrite is kept for the retry.
    openai.script('enh-0', [faults.serverError()]);
    const activities = await model();
    await expect(new MockActivityEnvironment({ attempt: 1 }).run(activities.editRow, task)).rejects.toThrow();
    expect(chat.callsFor('enh-0')).toHaveLength(1);
    const kept = join(task.outputDir, '.atelier', 'enhanced', '000000.json');
    const bytes = readFileSync(kept);
    // The kept prompt cannot be read (a directory where the file was: EISDIR, a storage failure).
    rmSync(kept);
    mkdirSync(kept);
    await expect(new MockActivityEnvironment({ attempt: 2 }).run(activities.editRow, task)).rejects.toThrow();
    expect(chat.callsFor('enh-0')).toHaveLength(1);
    rmSync(kept, { recursive: true });
    writeFileSync(kept, bytes);
    const outcome = (await new MockActivityEnvironment({ attempt: 3 }).run(activities.editRow, task)) as RowOutcome;
    expect(outcome.status).toBe('ok');
    expect(chat.callsFor('enh-0')).toHaveLength(1);
    expect(openai.callsFor('enh-0')).toHaveLength(2);
  }, 60_000);
});

describe('store faults on S3 (versitygw behind a counting fault proxy)', () => {
  beforeAll(async () => {
    s3 = await startS3Server();
    proxy = await startS3FaultProxy(s3.endpoint);
    // Every S3 request of this process goes through the proxy, which counts it. A paid answer
    // waits 5 s for a store that keeps failing, not the default 2 minutes.
    Object.assign(process.env, s3.env, {
      AWS_ENDPOINT_URL_S3: proxy.endpoint,
      AWS_ENDPOINT_URL: proxy.endpoint,
      ATELIER_STORE_PATIENCE_S: '5',
    });
    await s3.createBucket('runstore');
  }, 120_000);

  afterAll(async () => {
    await proxy?.close();
    await s3?.stop();
  });

  it('s3: a first run and a re-run of finished rows stay within their request budget, as the store counts them', async () => {
    const before = proxy.requests.length;
    const counting = new CountingStorage(new S3Storage('s3://runstore/count/out'));
    const rows = 8;
    const { happy, rerun } = await requestsPerRow('s3count', counting, rows);
    expect(happy).toBeLessThanOrEqual(6);
    expect(rerun).toBeLessThanOrEqual(4);
    // What the store received (planning included, a few requests): the client counts no fewer than it sends.
    const received = proxy.requests.length - before;
    console.info(`S3 requests the store received for ${rows} rows, planning, first run and re-run: ${received}`);
    expect(received).toBeGreaterThanOrEqual((happy + rerun) * rows);
  }, 180_000);

  it('a page finds which of its rows have an entry from their own key range: one listing on S3, a stat each on a disk, never the whole ledger', async () => {
    // 1,200 rows, every even one with an entry: more than one listing request's worth of keys.
    const entries = Array.from({ length: 600 }, (_, n) => 2 * n);
    const page = Array.from({ length: 128 }, (_, n) => 1000 + n);
    for (const storage of [new S3Storage('s3://runstore/among/out'), new LocalStorage(join(tempDir('atelier-runstore-among-'), 'out'))]) {
      for (let i = 0; i < entries.length; i += 32)
        await Promise.all(
          entries.slice(i, i + 32).map((index) => storage.write(`.atelier/ledger/${String(index).padStart(6, '0')}.json`, '{}')),
        );
      const counting = new CountingStorage(storage);
      const found = await new RunStore(counting).ledgerIndexesAmong(page);
      expect([...found].sort((a, b) => a - b)).toEqual(page.filter((index) => index % 2 === 0));
      // Before, a page listed the whole ledger (two requests here; a request per 1,000 entries, read whole on a disk).
      expect(counting.counts).toEqual(storage.kind === 's3' ? { list: 1 } : { stat: page.length });
      // The first rows and the last ones of the ledger: the range is inclusive at both ends.
      expect([...(await new RunStore(storage).ledgerIndexesAmong([0, 1, 1197, 1198, 1199]))].sort((a, b) => a - b)).toEqual([0, 1198]);
    }
  }, 180_000);

  it("a commit that lands between a late attempt's check of the entry and its partial write holds: the partial is never written over it (disk and S3)", async () => {
    const base = { index: 4, position: 4, runId: 'r', model: 'm', digest: 'e'.repeat(64) };
    const ok: LedgerEntry = {
      ...base,
      status: 'ok',
      outputImages: ['a.png', 'b.png'],
      turnsDone: 2,
      finishedAt: '2026-12-07T05:00:01.000Z',
    };
    const partial = (turns: number): LedgerEntry => ({
      ...base,
      status: 'partial',
      outputImages: ['a.png', 'b.png'].slice(0, turns),
      turnsDone: turns,
      finishedAt: new Date().toISOString(),
    });
    for (const storage of [new LocalStorage(join(tempDir('atelier-runstore-race-'), 'out')), new S3Storage('s3://runstore/race/out')]) {
      // The late attempt began with no entry for the row: the other attempt's commit lands as it writes turn 1.
      const late = new RunStore(commitLandsBeforePartial(storage, ok));
      expect(await late.writeEntry(partial(1))).toEqual(ok);
      expect(await new RunStore(storage).readEntry(4), storage.kind).toEqual(ok);
      // The late attempt had recorded turn 1 itself; the commit lands as it writes turn 2.
      await storage.remove('.atelier/ledger/000004.json');
      await new RunStore(storage).writeEntry(partial(1));
      expect(await new RunStore(commitLandsBeforePartial(storage, ok)).writeEntry(partial(2))).toEqual(ok);
      expect(await new RunStore(storage).readEntry(4), storage.kind).toEqual(ok);
      // As editRow writes it: from the version the attempt itself last wrote, no read before the write.
      await storage.remove('.atelier/ledger/000004.json');
      const own = await new RunStore(storage).putEntry(partial(1));
      const held = await new RunStore(commitLandsBeforePartial(storage, ok)).putEntry(partial(2), { over: own });
      expect(held.entry).toEqual(ok);
      expect(await new RunStore(storage).readEntry(4), storage.kind).toEqual(ok);
    }
  }, 120_000);

  it('a bucket that is gone is a storage fault with a plain reason, not a missing object', async () => {
    const gone = new S3Storage('s3://runstore-no-such-bucket/run/out');
    for (const op of [() => gone.read('.atelier/plan.json'), () => gone.stat('.atelier/plan.idx')]) {
      const err = await op().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ClassifiedError);
      expect(err).toMatchObject({ kind: 'storageError' });
      expect((err as Error).message).toMatch(/bucket runstore-no-such-bucket does not exist/);
    }
    await expect(readLedgerEntry('s3://runstore-no-such-bucket/run/out', 0)).rejects.toMatchObject({ kind: 'storageError' });
  }, 60_000);

  it('a SlowDown on writing the paid answer’s output is retried from memory within the attempt: one provider call', async () => {
    const { tasks } = await planned('slow', 1, 's3://runstore/slow/out');
    const task = tasks[0]!;
    // Longer than the S3 client's own retries (3 tries), shorter than the row's.
    proxy.slowDown({ method: 'PUT', path: /\/slow\/out\/000000\.png/, times: 5 });
    try {
      const outcome = await editRow(task);
      expect(outcome.status).toBe('ok');
    } finally {
      proxy.clearFaults();
    }
    expect(openai.callsFor('slow-0')).toHaveLength(1);
    expect((await readLedgerEntry(task.outputDir, 0))?.status).toBe('ok');
  }, 120_000);

  it('a lasting SlowDown on the output write of a fresh single-call row: the answer is kept then, and the row run again finishes from it: one call', async () => {
    const { tasks } = await planned('keep', 1, 's3://runstore/keep/out');
    const rows = await readPlanRows('s3://runstore/keep/out', 0, 1);
    const task = { ...tasks[0]!, row: taskPlanRow(rows[0]!)!, fresh: true };
    proxy.slowDown({ method: 'PUT', path: /\/keep\/out\/000000\.png/, times: Infinity });
    let failure: unknown;
    try {
      await editRow(task, 1);
    } catch (err) {
      failure = err;
    } finally {
      proxy.clearFaults();
    }
    expect(failure).toMatchObject({ type: 'StorageError', nonRetryable: true });
    expect(openai.callsFor('keep-0')).toHaveLength(1);
    // The run pauses; resumed, the row is dispatched again (no longer fresh) and finishes from the kept answer.
    const { fresh: _fresh, ...again } = task;
    expect((await editRow(again)).status).toBe('ok');
    expect(openai.callsFor('keep-0')).toHaveLength(1);
    expect((await readLedgerEntry(task.outputDir, 0))?.status).toBe('ok');
    expect(await RunStore.open(task.outputDir).answerIndexes()).toEqual(new Set());
  }, 180_000);

  it('a page of rows read while the store is down for a few seconds waits for it instead of failing the run', async () => {
    const { input } = await planned('page', 3, 's3://runstore/page/out');
    await proxy.down();
    const back = new Promise((r) => setTimeout(r, 2000)).then(() => proxy.up());
    try {
      const page = (await new MockActivityEnvironment().run(createOrchestrationActivities().nextRowsPage, {
        outputDir: input.outputDir,
        cursor: 0,
        limit: 100,
      })) as { rows: unknown[]; nextCursor: number | null };
      expect(page.rows).toHaveLength(3);
    } finally {
      await back;
    }
  }, 120_000);

  it('a lasting SlowDown after the provider answered pauses the run (StorageError): no blind retry pays again', async () => {
    const { tasks } = await planned('lasting', 1, 's3://runstore/lasting/out');
    const task = tasks[0]!;
    proxy.slowDown({ method: 'PUT', path: /\/lasting\/out\//, times: Infinity });
    let failure: unknown;
    try {
      await editRow(task);
    } catch (err) {
      failure = err;
    } finally {
      proxy.clearFaults();
    }
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: 'StorageError', nonRetryable: true });
    expect(openai.callsFor('lasting-0')).toHaveLength(1);
  }, 180_000);
});

/**
 * A storage through which another attempt's commit of `committed` lands between a late attempt's
 * check of the row's ledger entry and its write: right before the first write of a partial entry for
 * the row reaches the store (whatever request carries it), the ok entry is put there, as the other
 * attempt's commit would put it. Everything else passes straight to `inner`.
 */
function commitLandsBeforePartial(inner: Storage, committed: LedgerEntry): Storage {
  const key = `.atelier/ledger/${String(committed.index).padStart(6, '0')}.json`;
  let landed = false;
  return new Proxy(inner, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      const method = (value as (...args: unknown[]) => unknown).bind(target);
      if (!['write', 'create', 'writeIf'].includes(String(prop))) return method;
      return async (k: string, data: string | Uint8Array, ...rest: unknown[]) => {
        if (!landed && k === key && Buffer.from(data).toString('utf8').includes('"status":"partial"')) {
          landed = true;
          await target.write(key, `${JSON.stringify(committed)}\n`);
        }
        return method(k, data, ...rest);
      };
    },
  });
}
