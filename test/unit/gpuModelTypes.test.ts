import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import contract from '../../contracts/gpu-edit.schema.json';
import { gpuWorkerArgs, type EditOptions } from '../../cli/edit';
import { UsageError } from '../../lib/shared/errors';
import { detectGpuModelType, GPU_MODEL_TYPES, type GpuModelType } from '../../lib/gpuContract';
import type { DatasetWorkflowInput } from '../../lib/shared/types';

describe('GPU model types (contracts/gpu-edit.schema.json)', () => {
  it('the TypeScript union names exactly the contract enum', () => {
    // a type-level list: adding a type to the contract without the union (or the reverse) fails here
    const union: Record<GpuModelType, true> = {
      qwen: true,
      'qwen-plus': true,
      'flux-kontext': true,
      flux2: true,
      'flux2-klein': true,
      'flux2-klein-kv': true,
      longcat: true,
      'longcat-turbo': true,
      'glm-image': true,
      'instruct-pix2pix': true,
      'sdxl-instruct-pix2pix': true,
      'joyimage-edit': true,
      'joyimage-edit-plus': true,
      chronoedit: true,
      omnigen: true,
      'qwen-image-2.1': true,
      'z-image-omni': true,
      dreamlite: true,
      'dreamlite-mobile': true,
      'bria-fibo-edit': true,
      'bria-fibo-edit-turbo': true,
      'kandinsky5-i2i': true,
      plugin: true,
    };
    expect(Object.keys(union).sort()).toEqual([...GPU_MODEL_TYPES].sort());
  });

  it.each([
    ['jdopensource/JoyAI-Image-Edit-Diffusers', 'joyimage-edit'],
    ['jdopensource/JoyAI-Image-Edit-Plus-Diffusers', 'joyimage-edit-plus'],
    ['nvidia/ChronoEdit-14B-Diffusers', 'chronoedit'],
    ['Shitao/OmniGen-v1-diffusers', 'omnigen'],
    ['Qwen/Qwen-Image-2.1', 'qwen-image-2.1'],
    ['carlofkl/DreamLite-base', 'dreamlite'],
    ['briaai/Fibo-Edit-1.5-turbo', 'bria-fibo-edit-turbo'],
    ['Qwen/Qwen-Image-Edit-2511', 'qwen-plus'],
    ['diffusers/sdxl-instructpix2pix-768', 'sdxl-instruct-pix2pix'],
    ['timbrooks/instruct-pix2pix', 'instruct-pix2pix'],
    ['kandinskylab/Kandinsky-5.0-I2I-Lite-sft-Diffusers', 'kandinsky5-i2i'],
  ])('detects %s as %s from its name', (model, type) => {
    expect(detectGpuModelType(model)).toBe(type);
  });

  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it("detects every pipeline class from a folder's model_index.json, and nothing from an unknown class", () => {
    const dir = mkdtempSync(join(tmpdir(), 'atelier-model-'));
    dirs.push(dir);
    const model = join(dir, 'my-checkpoint');
    mkdirSync(model);
    for (const [className, type] of Object.entries(contract.modelTypeDetection.pipelineClasses)) {
      writeFileSync(join(model, 'model_index.json'), JSON.stringify({ _class_name: className }));
      expect(detectGpuModelType(model)).toBe(type);
    }
    writeFileSync(join(model, 'model_index.json'), JSON.stringify({ _class_name: 'Cosmos3OmniPipeline' }));
    expect(detectGpuModelType(model)).toBeUndefined();
  });

  it('detects a Hub repo id from the model_index.json in the Hub cache, as the worker does', () => {
    const cache = mkdtempSync(join(tmpdir(), 'atelier-hub-'));
    dirs.push(cache);
    const commit = '0123456789abcdef0123456789abcdef01234567';
    const repo = join(cache, 'models--acme--house-style-v3');
    mkdirSync(join(repo, 'refs'), { recursive: true });
    mkdirSync(join(repo, 'snapshots', commit), { recursive: true });
    writeFileSync(join(repo, 'refs', 'main'), commit);
    writeFileSync(join(repo, 'snapshots', commit, 'model_index.json'), JSON.stringify({ _class_name: 'Kandinsky5I2IPipeline' }));
    const saved = process.env.HF_HUB_CACHE;
    try {
      process.env.HF_HUB_CACHE = cache;
      expect(detectGpuModelType('acme/house-style-v3')).toBe('kandinsky5-i2i');
      expect(detectGpuModelType('acme/not-cached')).toBeUndefined();
    } finally {
      if (saved === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = saved;
    }
  });

  it('a plugin-served model needs --adapter in the worker arguments edit passes on', () => {
    const input = { model: 'acme/step1x', gpu: { modelType: 'plugin', taskQueue: 'gpu-acme-step1x' } } as unknown as DatasetWorkflowInput;
    const saved = process.env.ATELIER_GPU_WORKER_ARGS;
    try {
      delete process.env.ATELIER_GPU_WORKER_ARGS;
      expect(() => gpuWorkerArgs({} as EditOptions, input)).toThrow(UsageError);
      process.env.ATELIER_GPU_WORKER_ARGS = '--adapter step1x_plugin:Step1XEdit';
      expect(gpuWorkerArgs({} as EditOptions, input)).toEqual([
        '--model',
        'acme/step1x',
        '--model-type',
        'plugin',
        '--task-queue',
        'gpu-acme-step1x',
        '--adapter',
        'step1x_plugin:Step1XEdit',
      ]);
    } finally {
      if (saved === undefined) delete process.env.ATELIER_GPU_WORKER_ARGS;
      else process.env.ATELIER_GPU_WORKER_ARGS = saved;
    }
  });
});
