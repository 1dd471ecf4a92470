import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBatchActivities, createBatchPlanningActivities, type PlanBatchJobsInput } from '../activities/batch';
import { sharedUpload, uploadLabel } from '../activities/batchUploads';
import { createOrchestrationActivities } from '../activities/orchestration';
import { layout } from '../lib/run/runStore';
import { LocalStorage } from '../storage/local';
import type { BatchJobResult, BatchJobSpec, BatchPlan, BatchStatus, BatchSubmission } from '../lib/shared/batch';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { testInput } from './helpers/temporalEnv';

// The input images a run's batch jobs upload are the run's (activities/batchUploads.ts): a job reuses
// what another job of the run uploaded, and they are deleted only once every job of the run has
// ended. Driven job by job through the real activities against the OpenAI stand-in (whose Files API
// answers an unknown file with its real 404, and whose batches refuse lines naming a file it does
// not hold), so the order is the test's, not the scheduler's: the first job ends before the second
// submits, which is where deleting at a job's end would take the second job's images away.

const API_KEY = 'sk-test-batch-uploads-7c1e';
let standin: OpenAIStandin;

beforeAll(async () => {
  standin = await startOpenAIStandin({ batch: { validatingMs: 50, inProgressMs: 100, finalizingMs: 50, concurrency: 4 } });
});
afterAll(async () => standin?.close());

async function twoJobRun(runId: string) {
  const dir = tempDir('atelier-batch-uploads-');
  await writePng(join(dir, 'a.png'), '#a03020');
  await writePng(join(dir, 'b.png'), '#20a030');
  const csv = join(dir, 'rows.csv');
  writeText(csv, ['image,instruction', ...Array.from({ length: 4 }, (_, i) => `${i % 2 ? 'b' : 'a'}.png,shared-${i} x`)].join('\n'));
  const outputDir = join(dir, 'out');
  const env = new MockActivityEnvironment();
  await env.run(createOrchestrationActivities().planRun, testInput({ runId, inputPath: csv, outputDir }));
  const planning: PlanBatchJobsInput = {
    runId,
    outputDir,
    backend: 'openai',
    phaseId: 'p1',
    round: 0,
    fallback: 'fail',
    maxRowsPerJob: 2,
  };
  const plan = (await env.run(createBatchPlanningActivities().planBatchJobs, planning)) as BatchPlan;
  expect(plan.jobs.map((j) => j.rows)).toEqual([2, 2]);
  const specOf = (k: number): BatchJobSpec => ({
    runId,
    outputDir,
    jobId: plan.jobs[k]!.jobId,
    phaseId: 'p1',
    backend: 'openai',
    model: 'gpt-image-2',
    params: {},
    numImages: 1,
    encoding: { jpegQuality: 95, webpQuality: 95 },
    imageCacheDir: join(outputDir, '.atelier', 'image-cache'),
    rows: 2,
    fallback: 'fail',
  });
  const activities = createBatchActivities({ backend: 'openai', apiKey: API_KEY, baseURL: standin.baseURL });
  const runFiles = () => standin.batches.storedFiles('vision').filter((f) => f.filename.startsWith(runId));
  const uploadsBefore = standin.batches.uploadCount('vision');
  const finish = async (spec: BatchJobSpec, batchId: string): Promise<BatchJobResult> => {
    for (;;) {
      const status = (await env.run(activities.pollBatchJob, { backend: 'openai' as const, batchId })) as BatchStatus;
      if (status.terminal) break;
      await sleep(100);
    }
    return (await env.run(activities.collectBatchJob, { spec, batchId })) as BatchJobResult;
  };

  return { env, specOf, activities, runFiles, uploadsBefore, finish };
}

describe("a run's batch uploads", () => {
  it('a job that ends first leaves the uploads to the job still to submit, which reuses them; the last to end deletes them', async () => {
    const { env, specOf, activities, runFiles, uploadsBefore, finish } = await twoJobRun('batch-uploads-order');
    // Rows alternate images, so each job needs both.
    const first = (await env.run(activities.submitBatchJob, specOf(0))) as BatchSubmission;
    expect(standin.batches.uploadCount('vision') - uploadsBefore).toBe(2);
    expect(await finish(specOf(0), first.batchId!)).toMatchObject({ ok: 2, failedByType: {} });
    // The other job of the run has not ended: the images stay.
    expect(runFiles()).toHaveLength(2);

    const second = (await env.run(activities.submitBatchJob, specOf(1))) as BatchSubmission;
    // Reused, not uploaded again.
    expect(standin.batches.uploadCount('vision') - uploadsBefore).toBe(2);
    expect(await finish(specOf(1), second.batchId!)).toMatchObject({ ok: 2, failedByType: {} });
    // Every job of the run has ended: nothing left at the provider.
    expect(runFiles()).toEqual([]);
  }, 120_000);

  it("a job whose batch is refused ends too: when it is the last, the run's uploads are deleted", async () => {
    const { env, specOf, activities, runFiles, uploadsBefore, finish } = await twoJobRun('batch-uploads-refused');
    const first = (await env.run(activities.submitBatchJob, specOf(0))) as BatchSubmission;
    expect(await finish(specOf(0), first.batchId!)).toMatchObject({ ok: 2 });
    // The second job's create answers 500 (its last try, say): the workflow fails its rows.
    standin.batches.configure({ failCreates: 1 });
    await expect(env.run(activities.submitBatchJob, specOf(1))).rejects.toThrow(/500/);
    expect(standin.batches.uploadCount('vision') - uploadsBefore).toBe(2);
    expect(runFiles()).toHaveLength(2);
    const refused = (await env.run(activities.failBatchJob, {
      spec: specOf(1),
      errorType: 'Retryable',
      error: 'the batch could not be created: 500',
    })) as BatchJobResult;
    expect(refused).toMatchObject({ ok: 0, failedByType: { Retryable: 2 } });
    expect(runFiles()).toEqual([]);
  }, 120_000);
});

describe("a run's batch uploads when the run is cancelled", () => {
  it('a job cancelled before it had a batch ends: when it is the last, the uploads are deleted', async () => {
    const { env, specOf, activities, runFiles, finish } = await twoJobRun('batch-uploads-cancelled');
    const first = (await env.run(activities.submitBatchJob, specOf(0))) as BatchSubmission;
    expect(await finish(specOf(0), first.batchId!)).toMatchObject({ ok: 2 });
    expect(runFiles()).toHaveLength(2);
    // The run is cancelled before the second job submits: no batch to cancel, and nothing left behind.
    expect(await env.run(activities.cancelBatchJob, { spec: specOf(1) })).toEqual({});
    expect(runFiles()).toEqual([]);
  }, 120_000);
});

describe('an upload the provider deletes by itself (Gemini: after 48 hours)', () => {
  it('is reused only within its reuse window; past it the image is uploaded again and both files are recorded for the cleanup', async () => {
    const storage = new LocalStorage(join(tempDir('atelier-batch-reuse-'), 'out'));
    const spec = { runId: 'reuse', phaseId: 'p1', jobId: 'reuse#p1-r0j0' } as BatchJobSpec;
    const made: string[] = [];
    const upload = async (): Promise<string> => {
      made.push(`file-${made.length}`);
      return made.at(-1)!;
    };
    const png = Buffer.from('an image');
    const args = { storage, spec, attempt: 1, keyScope: 'k', upload, png, reuseMs: 60_000 };
    expect(await sharedUpload(args)).toBe('file-0');
    // A later job within the window names the same file.
    expect(await sharedUpload({ ...args, spec: { ...spec, jobId: 'reuse#p1-r1j0' } })).toBe('file-0');
    expect(made).toHaveLength(1);
    // The same claim, uploaded longer ago than the window: a new upload.
    const claimsAt = `${layout.batchUploads(uploadLabel(spec))}k/claims/`;
    const claims = await storage.list(claimsAt);
    expect(claims).toHaveLength(1);
    const claimKey = claims[0]!.startsWith(claimsAt) ? claims[0]! : `${claimsAt}${claims[0]!}`;
    const claim = JSON.parse((await storage.read(claimKey))!.toString()) as { uploadedAt: number };
    await storage.write(claimKey, JSON.stringify({ ...claim, uploadedAt: claim.uploadedAt - 61_000 }));
    expect(await sharedUpload({ ...args, spec: { ...spec, jobId: 'reuse#p1-r2j0' } })).toBe('file-1');
    // Without a window (OpenAI keeps files until deleted) the old claim is reused as it is.
    expect(await sharedUpload({ ...args, reuseMs: undefined, spec: { ...spec, jobId: 'reuse#p1-r3j0' } })).toBe('file-1');
    expect(await storage.list(`${layout.batchUploads(uploadLabel(spec))}k/files/`)).toHaveLength(2);
  });
});
