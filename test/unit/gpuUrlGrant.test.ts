import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import contract from '../../contracts/gpu-edit.schema.json';
import { createGpuRowActivities } from '../../activities/gpuRow';
import { GPU_URLS_UPDATE, validateGpuRequest, type GpuUrlsRequest } from '../../lib/gpuContract';
import type { RowTask } from '../../lib/shared/types';
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
