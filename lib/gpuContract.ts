import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type Ajv2020 from 'ajv/dist/2020';
import type { ValidateFunction } from 'ajv/dist/2020';
import { loadOnUse } from './loadOnUse';
import contract from '../contracts/gpu-edit.schema.json';

// The TypeScript half of the GPU wire contract. contracts/gpu-edit.schema.json is the single source
// of truth: the interfaces below mirror its $defs (a test checks they name the same keys), requests
// are validated against it before they are sent, results after they come back, and the task-queue
// and model-type rules are read from it, exactly as the Python worker does.

export type GpuModelType =
  | 'qwen'
  | 'qwen-plus'
  | 'flux-kontext'
  | 'flux2'
  | 'flux2-klein'
  | 'flux2-klein-kv'
  | 'longcat'
  | 'longcat-turbo'
  | 'glm-image'
  | 'instruct-pix2pix'
  | 'sdxl-instruct-pix2pix'
  | 'joyimage-edit'
  | 'joyimage-edit-plus'
  | 'chronoedit'
  | 'omnigen'
  | 'qwen-image-2.1'
  | 'z-image-omni'
  | 'dreamlite'
  | 'dreamlite-mobile'
  | 'bria-fibo-edit'
  | 'bria-fibo-edit-turbo'
  | 'kandinsky5-i2i'
  /** A worker started with a plugin adapter (`--adapter module:Class`); never detected from a name. */
  | 'plugin';

export interface GpuGenerationParams {
  num_inference_steps?: number;
  guidance_scale?: number;
  true_cfg_scale?: number;
  negative_prompt?: string;
  height?: number;
  width?: number;
}

export interface GpuEditRequest {
  run_id: string;
  row_index: number;
  model: string;
  model_type: GpuModelType;
  prompt: string;
  input_images: string[];
  output_path: string;
  seed: number;
  params: GpuGenerationParams;
}

export interface GpuEditResult {
  output_path: string;
  width: number;
  height: number;
  seed: number;
  num_inference_steps: number;
  latency_ms: number;
  batch_size: number;
  worker?: string;
  /** The activity attempt that produced this output. */
  attempt?: number;
  /** sha256 (hex) and size of the PNG the worker wrote: the commit refuses a stored output with other bytes. */
  sha256?: string;
  size?: number;
}

/** A worker's request for the URLs of its `staged:` references (the row workflow's update, contract's urlsUpdateName). */
export interface GpuUrlsRequest {
  activity_id: string;
  attempt: number;
  names: string[];
  create: boolean;
}

export interface GpuUrls {
  urls: string[];
}

/** The prefix of a request's staged references: the worker asks the row workflow for their URLs at call time. */
export const STAGED_PREFIX = 'staged:';

export const GPU_URLS_UPDATE: string = (contract as { urlsUpdateName: string }).urlsUpdateName;

export const GPU_MODEL_TYPES = contract.$defs.ModelType.enum as GpuModelType[];

// ajv and the compiled contract are made on the first validation (a GPU row), not with the CLI,
// which reads only the model types and queue names from here.
const ajvModule = loadOnUse<{ default: typeof Ajv2020 }>('ajv/dist/2020');
let validators: { request: ValidateFunction; result: ValidateFunction } | undefined;
function contractValidators(): { request: ValidateFunction; result: ValidateFunction } {
  if (!validators) {
    const ajv = new (ajvModule().default)({ allErrors: true, strict: false });
    ajv.addSchema(contract, 'gpu');
    validators = { request: ajv.getSchema('gpu#/$defs/GpuEditRequest')!, result: ajv.getSchema('gpu#/$defs/GpuEditResult')! };
  }
  return validators;
}

function check(validate: ValidateFunction, payload: unknown, what: string): void {
  if (!validate(payload)) {
    const problems = (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message ?? ''}`.trim());
    throw new Error(`${what} does not match contracts/gpu-edit.schema.json: ${problems.join('; ')}`);
  }
}

export function validateGpuRequest(request: GpuEditRequest): GpuEditRequest {
  check(contractValidators().request, request, 'GpuEditRequest');
  return request;
}

export function validateGpuResult(result: unknown): GpuEditResult {
  check(contractValidators().result, result, 'GpuEditResult');
  return result as GpuEditResult;
}

/** `gpu-<model key>`, by the contract's rule. */
export function gpuTaskQueue(model: string): string {
  const key = model
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 60);
  if (!key) throw new Error(`model "${model}" gives an empty task-queue key`);
  return `gpu-${key}`;
}

/** The Hugging Face Hub cache folder, as huggingface_hub finds it (HF_HUB_CACHE, HF_HOME/hub, XDG, ~/.cache). */
function hubCacheDir(): string {
  const env = process.env;
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, 'hub');
  return join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface', 'hub');
}

/**
 * The model_index.json of a model: a local folder's, or, for a Hub repo id, the one in the Hub cache at `main`
 * (the CLI does not download; the worker does, so a repo not yet cached needs --model-type here).
 */
function modelIndexPath(model: string): string | undefined {
  const local = join(model, 'model_index.json');
  if (existsSync(local)) return local;
  if (!/^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/.test(model) || existsSync(model)) return undefined;
  const repo = join(hubCacheDir(), `models--${model.replace('/', '--')}`);
  try {
    const commit = readFileSync(join(repo, 'refs', 'main'), 'utf8').trim();
    const cached = join(repo, 'snapshots', commit, 'model_index.json');
    return existsSync(cached) ? cached : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The model type of a hub id or local folder, by the contract's detection rules (name rules, then the
 * model_index.json's _class_name: a local folder's or a cached Hub repo's); undefined if unknown.
 */
export function detectGpuModelType(model: string): GpuModelType | undefined {
  const name = model.toLowerCase();
  for (const [pattern, type] of contract.modelTypeDetection.nameRules as [string, GpuModelType][]) {
    if (new RegExp(pattern).test(name)) return type;
  }
  const index = modelIndexPath(model);
  if (index) {
    try {
      const className = (JSON.parse(readFileSync(index, 'utf8')) as { _class_name?: string })._class_name ?? '';
      return (contract.modelTypeDetection.pipelineClasses as Record<string, GpuModelType>)[className];
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** The seed of one row's output: from --seed and the row index, so a re-run reproduces it. */
export function rowSeed(baseSeed: number, index: number, output: number): number {
  // A multiplicative hash keeps neighbouring rows' seeds far apart; 32 bits, as the contract allows.
  return Number((BigInt(baseSeed) * 2654435761n + BigInt(index) * 40503n + BigInt(output)) % 4294967296n);
}
