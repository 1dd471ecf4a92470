import { describe, expect, it } from 'vitest';
import contract from '../../contracts/gpu-edit.schema.json';
import type { GpuActivities } from '../../workflows/row';

describe('the GPU activity name', () => {
  it('the row workflow calls the activity the contract names (the one the Python worker registers)', () => {
    const name: keyof GpuActivities = 'editImageGpu';
    expect(contract.activityName).toBe(name);
  });
});
