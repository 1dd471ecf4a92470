import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBatchActivities, createBatchPlanningActivities, type PlanBatchJobsInput } from '../activities/batch';
import { createOrchestrationActivities } from '../activities/orchestration';
import type { BatchJobSpec, BatchPlan, BatchSubmission } from '../lib/shared/batch';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { tempDir, writeText } from './helpers/fixtures';
import { testInput } from './helpers/temporalEnv';

// Batch at scale (issue 22, "Numbers"): 20,000 rows of 1024² images go in one OpenAI batch job, each
// distinct image uploaded once through the Files API and referenced by file_id in every line. The
// rows share 4 generated 1024² images (random noise: PNGs that do not compress, ~3 MB each). Run
// through the real planning and submit activities against the OpenAI stand-in, which validates the
// JSONL (every line's file_ids must be files it holds) as the Batch API does; the batch is left
// validating (the lines' edits are not what is measured). Reports jobs, lines and bytes uploaded.

const API_KEY = 'sk-test-batch-scale-4d3c2b1a';
const ROWS = 20_000;
const DISTINCT = 4;
let standin: OpenAIStandin;

beforeAll(async () => {
  standin = await startOpenAIStandin({ batch: { validatingMs: 3_600_000 } });
});
afterAll(async () => standin?.close());

describe('batch at scale', () => {
  it(`${ROWS} rows over ${DISTINCT} distinct 1024² images: one job, each image uploaded once, uploads within 1.5× the distinct bytes + the JSONL`, async () => {
    const dir = tempDir('atelier-batch-scale-');
    let distinctBytes = 0;
    for (let k = 0; k < DISTINCT; k++) {
      const noise = randomBytes(1024 * 1024 * 3);
      const png = await sharp(noise, { raw: { width: 1024, height: 1024, channels: 3 } })
        .png()
        .toBuffer();
      await sharp(png).toFile(join(dir, `img${k}.png`));
      distinctBytes += png.length;
    }
    const csv = join(dir, 'rows.csv');
    writeText(
      csv,
      ['image,instruction', ...Array.from({ length: ROWS }, (_, i) => `img${i % DISTINCT}.png,scale-${i} make it warmer`)].join('\n'),
    );
    const outputDir = join(dir, 'out');
    const runId = 'batch-scale';
    const env = new MockActivityEnvironment();
    const t0 = Date.now();
    await env.run(
      createOrchestrationActivities().planRun,
      testInput({ runId, inputPath: csv, outputDir, backend: 'openai', model: 'gpt-image-2' }),
    );
    const planning: PlanBatchJobsInput = { runId, outputDir, backend: 'openai', phaseId: 'p1', round: 0, fallback: 'fail' };
    const plan = (await env.run(createBatchPlanningActivities().planBatchJobs, planning)) as BatchPlan;
    const planned = Date.now();
    expect(plan.jobs).toHaveLength(1);
    const spec: BatchJobSpec = {
      runId,
      outputDir,
      jobId: plan.jobs[0]!.jobId,
      phaseId: 'p1',
      backend: 'openai',
      model: 'gpt-image-2',
      params: {},
      numImages: 1,
      encoding: { jpegQuality: 95, webpQuality: 95 },
      imageCacheDir: join(outputDir, '.atelier', 'image-cache'),
      rows: plan.jobs[0]!.rows,
      fallback: 'fail',
    };
    const activities = createBatchActivities({ backend: 'openai', apiKey: API_KEY, baseURL: standin.baseURL });
    const submission = (await env.run(activities.submitBatchJob, spec)) as BatchSubmission;
    const submitted = Date.now();
    expect(submission).toMatchObject({ rows: ROWS, requests: ROWS, leftOver: 0, inputErrors: 0 });
    expect(standin.batches.all).toHaveLength(1);
    const uploaded = standin.batches.uploadedBytes();
    const images = standin.batches.storedFiles().filter((f) => f.purpose !== 'batch');
    const jsonl = standin.batches.storedFiles('batch')[0]!;
    expect(standin.batches.uploadCount()).toBe(DISTINCT + 1);
    expect(images).toHaveLength(DISTINCT);
    // Issue 22's bound: within 1.5× the distinct image bytes + 1 MB, plus the JSONL of 20,000 lines.
    expect(uploaded).toBeLessThanOrEqual(1.5 * distinctBytes + 1024 * 1024 + jsonl.bytes.length);
    console.log(
      `[batch scale] ${ROWS} rows, ${DISTINCT} distinct 1024² images (${(distinctBytes / 1048576).toFixed(1)} MB): ` +
        `${standin.batches.all.length} job, ${submission.requests} lines, uploaded ${(uploaded / 1048576).toFixed(1)} MB ` +
        `(images ${(images.reduce((n, f) => n + f.bytes.length, 0) / 1048576).toFixed(1)} MB, JSONL ${(jsonl.bytes.length / 1048576).toFixed(1)} MB); ` +
        `plan ${((planned - t0) / 1000).toFixed(0)} s, submit ${((submitted - planned) / 1000).toFixed(0)} s`,
    );
  }, 1_200_000);
});
