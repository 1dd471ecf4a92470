import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import contract from '../../contracts/gpu-edit.schema.json';
import { createGpuRowActivities, type GpuRowPlan } from '../../activities/gpuRow';
import { createOrchestrationActivities } from '../../activities/orchestration';
import { GPU_URLS_UPDATE, validateGpuRequest, type GpuUrlsRequest } from '../../lib/gpuContract';
import type { DatasetWorkflowInput, RowTask } from '../../lib/shared/types';
import { openStorage } from '../../storage';
import { startS3Server, type S3TestServer } from '../../testing/versitygw';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { testInput } from '../helpers/temporalEnv';
import { gpuUrlsUpdate } from '../../workflows/row';

// The GPU worker asks the row workflow for the URLs of its request's `staged:` references (issue 23:
// no upload URL in the history). These hold the names and the refusals that need no server; the
// whole flow runs in test/dataPlane/forgedGpuOutput.e2e.test.ts.

const task = { runId: 'r', outputDir: '/nonexistent', position: 0, index: 3 } as RowTask;

async function mint(request: Partial<GpuUrlsRequest>) {
  const full: GpuUrlsRequest = { activity_id: '2', attempt: 1, names: [], create: false, ...request };
  return new MockActivityEnvironment().run(createGpuRowActivities().mintGpuUrls, { task, request: full });
}

describe('URLs asked for at call time', () => {
  it('the row workflow answers the update the contract names (the one the Python worker sends)', () => {
    expect(gpuUrlsUpdate.name).toBe(contract.urlsUpdateName);
    expect(GPU_URLS_UPDATE).toBe(contract.urlsUpdateName);
  });

  it('a request may name staged objects instead of URLs', () => {
    expect(() =>
      validateGpuRequest({
        run_id: 'r',
        row_index: 0,
        model: 'm',
        model_type: 'instruct-pix2pix',
        prompt: 'p',
        input_images: ['staged:in_0.png'],
        output_path: 'staged:out_0.0123456789ab.png',
        seed: 1,
        params: {},
      }),
    ).not.toThrow();
  });

  it('no URL for a name outside the row staging folder, an input to create, or several outputs at once', async () => {
    for (const [request, what] of [
      [{ names: ['../../000000.png'], create: true }, /"\.\.\/\.\.\/000000\.png" is not a staged name it may create/],
      [{ names: ['in_0.png'], create: true }, /"in_0\.png" is not a staged name it may create/],
      [{ names: ['results.csv'] }, /"results\.csv" is not a staged name it may read/],
      [{ names: ['out_0.0123456789ab.png', 'out_1.0123456789ab.png'], create: true }, /is not a staged name it may create/],
    ] as Array<[Partial<GpuUrlsRequest>, RegExp]>) {
      await expect(mint(request)).rejects.toThrow(what);
      await expect(mint(request)).rejects.toMatchObject({ type: 'InvalidRequest', nonRetryable: true });
    }
  });
});

describe('a multi-turn GPU row in object storage', () => {
  let s3: S3TestServer;
  beforeAll(async () => {
    s3 = await startS3Server();
    Object.assign(process.env, s3.env);
    await s3.createBucket('grant');
  }, 120_000);
  afterAll(async () => s3?.stop());

  it('names staged objects only; each turn reads the output the commit checked, under the preparation name', async () => {
    const dir = tempDir('atelier-grant-');
    await writePng(join(dir, 'a.png'), '#336699', 32);
    const rows = join(dir, 'rows.jsonl');
    const turns = [
      { role: 'user', content: 'turn one' },
      { role: 'assistant', content: 'done' },
      { role: 'user', content: 'turn two' },
    ];
    writeText(rows, JSON.stringify({ images: 'a.png', conversations: turns }));
    const input = testInput({
      runId: 'grant-multi',
      inputPath: rows,
      outputDir: 's3://grant/out',
      backend: 'diffusers',
      model: '/models/tiny-pix2pix',
      gpu: { modelType: 'instruct-pix2pix', taskQueue: 'gpu-tiny-pix2pix', seed: 7, params: {} },
    });
    const planned = (await new MockActivityEnvironment().run(createOrchestrationActivities().planRun, input)) as {
      input: DatasetWorkflowInput;
    };
    const full = planned.input;
    const task: RowTask = {
      runId: full.runId,
      outputDir: full.outputDir,
      position: 0,
      index: 0,
      backend: full.backend,
      model: full.model,
      params: full.params,
      numImages: full.numImages,
      encoding: full.encoding,
      imageCacheDir: full.imageCacheDir!,
      gpu: full.gpu!,
    };
    const env = new MockActivityEnvironment();
    const gpu = createGpuRowActivities();
    const plan = (await env.run(gpu.prepareGpuRow, task)) as GpuRowPlan;
    expect(plan.chained).toBe(true);
    const prepared = /^staged:out_0\.([0-9a-f]{12})\.png$/.exec(plan.requests[0]!.output_path)![1]!;
    expect(plan.requests.map((r) => [r.input_images, r.output_path])).toEqual([
      [['staged:in_0.png'], `staged:out_0.${prepared}.png`],
      [[`staged:out_0.${prepared}.png`], `staged:out_1.${prepared}.png`],
    ]);
    expect(JSON.stringify(plan)).not.toMatch(/X-Amz-Signature|https?:/);

    // Turn 0 made by attempt 2 (its own name), then committed: the checked bytes are what turn 1 reads.
    const storage = openStorage('s3://grant/out');
    const made = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#00ff00' } })
      .png()
      .toBuffer();
    await storage.write(`.atelier/staging/000000/out_0.${prepared}.a2.png`, made);
    const result = {
      output_path: `http://s3.test/grant/out/.atelier/staging/000000/out_0.${prepared}.a2.png`,
      width: 32,
      height: 32,
      seed: 1,
      num_inference_steps: 1,
      latency_ms: 1,
      batch_size: 1,
      attempt: 2,
      sha256: createHash('sha256').update(made).digest('hex'),
      size: made.length,
    };
    await env.run(gpu.commitGpuOutput, { task, output: 0, result, last: false, chained: true, attempts: 1 });
    expect(await storage.read(`.atelier/staging/000000/out_0.${prepared}.png`)).toEqual(made);
    expect(await storage.stat(plan.outputImages[0]!)).toBeDefined();
  }, 120_000);
});
