import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { BACKEND_NAMES } from '../../activities/providers/registry';
import { parseFilterRows } from '../shared/filterRows';
import { validateRetrySelection } from '../shared/retrySelection';
import { batchBackends, isBatchBackend } from '../../activities/providers/registry';
import { validateRunId } from './runId';
import type { RetrySelection } from '../shared/retrySelection';

// The dataset workflow can be started by hand (`temporal workflow start --input '<json>'`), so its
// input is validated where it is first used, with messages that name the offending field.

/** Where data lives: an absolute local path, or `s3://bucket/prefix` (read with each worker's AWS_* settings). */
const location = (what: string) =>
  z
    .string()
    .min(1)
    .refine((p) => isAbsolute(p) || /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/.test(p), {
      message: `${what} must be an absolute path or an s3://bucket/prefix location`,
    });

/** An input may also be a dataset repo on the Hugging Face Hub (hf://datasets/org/name[@rev][/path]). */
const inputLocation = (what: string) =>
  z
    .string()
    .min(1)
    .refine(
      (p) => isAbsolute(p) || /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/.test(p) || /^hf:\/\/datasets\/[\w.-]+\/[\w.-]+/.test(p),
      {
        message: `${what} must be an absolute path, an s3://bucket/prefix location or hf://datasets/<org>/<name>`,
      },
    );

/**
 * Parameters forwarded to the model; each adapter uses the ones its API has. Part of the run id:
 * changing one is a different run.
 */
const modelParamsSchema = z
  .object({
    /** OpenAI: 1024x1024, 1536x1024, auto, ... */
    size: z.string().optional(),
    /** OpenAI: low, medium, high, auto (dall-e-2: standard). */
    quality: z.string().optional(),
    /** OpenAI: transparent, opaque, auto. */
    background: z.string().optional(),
    /** OpenAI: png, jpeg, webp (what the API returns; outputs are re-encoded to their names' format). */
    outputFormat: z.string().optional(),
    /** OpenAI: 0-100 for jpeg/webp API output. */
    outputCompression: z.number().int().min(0).max(100).optional(),
    /** OpenAI: high or low. */
    inputFidelity: z.string().optional(),
    /** OpenAI: auto or low. */
    moderation: z.string().optional(),
    /** gpt-image-2.6: low, medium or high (how much work the model puts in; OpenAI's default is high). */
    complexity: z.string().optional(),
    /** Gemini / OpenRouter: 1:1, 16:9, ... */
    aspectRatio: z.string().optional(),
    /** Gemini: 1K, 2K, 4K; OpenRouter: 0.5K ... 4K. */
    imageSize: z.string().optional(),
    /**
     * ModelScope and OpenAI-compatible diffusion servers (--base-url): the base seed; each row is sent
     * its own seed derived from it and the row index, as the GPU backend derives it (lib/gpuContract).
     */
    seed: z.number().int().min(0).optional(),
    /** OpenAI-compatible diffusion servers (vLLM-Omni, SGLang): sent as num_inference_steps. */
    numInferenceSteps: z.number().int().min(1).optional(),
    /** ... guidance_scale. */
    guidanceScale: z.number().min(0).optional(),
    /** ... true_cfg_scale (Qwen-Image). */
    trueCfgScale: z.number().min(0).optional(),
    /** ... negative_prompt. */
    negativePrompt: z.string().optional(),
  })
  .strict();

/** How outputs are encoded (JPEG/WebP quality, 1-100). */
const encodingSchema = z
  .object({ jpegQuality: z.number().int().min(1).max(100).default(95), webpQuality: z.number().int().min(1).max(100).default(95) })
  .strict();

/** Bounds on downloading one input image. */
const downloadSchema = z
  .object({
    maxBytes: z
      .number()
      .int()
      .min(1)
      .max(4 * 1024 ** 3),
    /** The whole transfer, headers and body. */
    timeoutMs: z.number().int().min(100).max(3_600_000),
  })
  .strict();

/** Activity retry settings for model calls (the child workflow turns them into a RetryPolicy). */
const retrySchema = z
  .object({
    /** Total attempts per row, first included. */
    maxAttempts: z.number().int().min(1).max(100).default(5),
    initialIntervalMs: z.number().int().min(10).default(2000),
    maximumIntervalMs: z.number().int().min(10).default(120_000),
    /** A model call that stops heartbeating for this long (its worker died) is retried elsewhere. Default 60 s. */
    heartbeatTimeoutMs: z.number().int().min(1000).optional(),
  })
  .strict();

/** `--backend diffusers`: a local model served by Python GPU workers (gpu-workers/). */
const gpuSchema = z
  .object({
    /** One of the contract's model types (contracts/gpu-edit.schema.json). */
    modelType: z.string().min(1),
    /** `gpu-<model key>`, by the contract's rule. */
    taskQueue: z.string().regex(/^gpu-[a-z0-9-]{1,60}$/),
    /** Base seed; each row's seed derives from it and the row index. */
    seed: z.number().int().min(0).max(4294967295).default(0),
    /** Overrides of the model type's defaults, in the contract's snake_case. */
    params: z
      .object({
        num_inference_steps: z.number().int().min(1).max(1000).optional(),
        guidance_scale: z.number().min(0).optional(),
        true_cfg_scale: z.number().min(0).optional(),
        negative_prompt: z.string().optional(),
        height: z.number().int().min(16).max(8192).optional(),
        width: z.number().int().min(16).max(8192).optional(),
      })
      .strict()
      .default({}),
  })
  .strict();

/** `--prompt-enhance <model>`: an OpenAI-compatible chat model rewrites each instruction first. */
const promptEnhanceSchema = z
  .object({
    model: z.string().min(1),
    /** Show it the row's input images too. */
    withImages: z.boolean().default(false),
  })
  .strict();

/** Input of the dataset workflow: one per run. Safe to write by hand for `temporal workflow start`. */
export const datasetWorkflowInputSchema = z
  .object({
    runId: z.string().superRefine((id, ctx) => {
      const problem = validateRunId(id);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
    /** Absolute path or s3:// location of the dataset: a .csv, .jsonl or .parquet file, or a folder of .parquet shards. */
    inputPath: inputLocation('inputPath'),
    /** Absolute path or s3:// location of the output directory (shared by every worker that serves this run). */
    outputDir: location('outputDir'),
    backend: z.enum(BACKEND_NAMES),
    model: z.string().min(1),
    params: modelParamsSchema.default({}),
    instructionKey: z.string().min(1).default('instruction'),
    /** Image column; when absent the first present of input_images, image_url, image. */
    imageKey: z.string().min(1).optional(),
    /** JSONL conversation key (default `conversations`). */
    conversationKey: z.string().min(1).optional(),
    /** Column giving each row's output path, relative to the output dir. */
    outputNameColumn: z.string().min(1).optional(),
    /** Images per row (several are named `_00`, `_01`, ...). */
    numImages: z.number().int().min(1).max(10).default(1),
    encoding: encodingSchema.default({ jpegQuality: 95, webpQuality: 95 }),
    /** Row positions to attempt (`0:100,200:`); others stay pending. Not part of the run id. */
    filterRows: z
      .string()
      .superRefine((spec, ctx) => {
        try {
          parseFilterRows(spec);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
        }
      })
      .optional(),
    /** Results table; results.jsonl goes beside it. Default `<outputDir>/results.csv`. */
    outputCsv: location('outputCsv').optional(),
    /** Content-addressed cache of downloaded images. Default `<outputDir>/.atelier/image-cache`. */
    imageCacheDir: location('imageCacheDir').optional(),
    /** Bounds on downloading a URL input image (--max-download-mb, --download-timeout). */
    download: downloadSchema.optional(),
    /** Row children in flight at once. */
    window: z.number().int().min(1).max(1000).default(16),
    retry: retrySchema.default({ maxAttempts: 5, initialIntervalMs: 2000, maximumIntervalMs: 120_000 }),
    /** Required with backend diffusers. */
    gpu: gpuSchema.optional(),
    /** Edit-mask column (a PNG whose transparent pixels mark the area to edit). */
    maskKey: z.string().min(1).optional(),
    /**
     * --allow-outside-paths: image cells may name local files and s3:// objects outside the dataset's
     * own folder / prefix / repo (refused otherwise, lib/dataset/confine.ts). Not part of the run id.
     */
    allowOutsidePaths: z.boolean().optional(),
    promptEnhance: promptEnhanceSchema.optional(),
    /**
     * `--base-url`: the provider endpoint the run asks for, as its tag (lib/temporal/endpoint.ts, never
     * the URL). Its rows go to the provider queue of that endpoint, which only workers whose own base
     * URL has this tag poll. Absent: the provider's shared queue, served by any worker of it.
     */
    endpoint: z
      .string()
      .regex(/^[0-9a-f]{12}$/)
      .optional(),
    /** `--batch`: rows go through the provider's batch API first (half price, within 24 h); openai and gemini. */
    batch: z
      .object({
        /** Rows the batch did not answer go down the direct path, or stay failed with the provider's reason. */
        fallback: z.enum(['direct', 'fail']).default('direct'),
        /** First wait between two polls of a provider batch (default 30 s); doubles up to pollMaxMs. */
        pollInitialMs: z.number().int().min(100).max(3_600_000).optional(),
        /** Longest wait between two polls (default 10 min). */
        pollMaxMs: z.number().int().min(100).max(86_400_000).optional(),
        /** Rows per job (default and cap: the provider's request limit, 50,000). */
        maxRowsPerJob: z.number().int().min(1).max(50_000).optional(),
      })
      .strict()
      .optional(),
    /** Model calls per second for this provider's whole task queue, shared by every worker (--rpm / 60). */
    rateLimitPerSecond: z.number().positive().max(10_000).optional(),
    /**
     * --max-cost: the run pauses when the estimated spend of the rows it finished reaches this (USD);
     * `atelier resume --max-cost` raises it. Not part of the run id.
     */
    maxCostUsd: z.number().positive().optional(),
    /** Upsert the project's search attributes (they must be registered on the server). */
    searchAttributes: z.boolean().optional(),
    /** Run only a retry pass over these failed rows (a retry of a closed run). */
    retryOnly: z
      .object({ errorTypes: z.array(z.string()).optional(), rows: z.string().optional() })
      .strict()
      .superRefine((selection, ctx) => {
        try {
          validateRetrySelection(selection);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
        }
      })
      .optional() satisfies z.ZodType<RetrySelection | undefined>,
    /** Cap on parent history events before continuing as new (default 8,000). */
    maxHistoryEvents: z.number().int().min(200).max(50_000).optional(),
    // Written by the workflow itself when it continues as new; never by hand. Typed in lib/types.ts.
    carried: z.unknown().optional(),
  })
  .strict();

// The payload types, derived from the schemas above (lib/types.ts re-exports them).
export type ModelParams = z.output<typeof modelParamsSchema>;
export type OutputEncoding = z.output<typeof encodingSchema>;
export type DownloadLimits = z.output<typeof downloadSchema>;
export type RowRetrySettings = z.output<typeof retrySchema>;
export type GpuRunSettings = z.output<typeof gpuSchema>;
export type PromptEnhanceSettings = z.output<typeof promptEnhanceSchema>;
/** The workflow input as validated, but for `carried` (lib/types.ts: DatasetWorkflowInput). */
export type WorkflowInputFields = Omit<z.output<typeof datasetWorkflowInputSchema>, 'carried'>;

/** Validates a first execution's input (a continued run's is the workflow's own, `carried` included). */
export function parseDatasetWorkflowInput(raw: unknown): WorkflowInputFields {
  const result = datasetWorkflowInputSchema
    .refine((input) => input.backend !== 'diffusers' || input.gpu !== undefined, {
      message: 'backend diffusers needs gpu settings (modelType, taskQueue)',
      path: ['gpu'],
    })
    .refine((input) => !input.batch || isBatchBackend(input.backend), {
      message: `batch mode is available for the ${batchBackends().join(' and ')} backends only`,
      path: ['batch'],
    })
    .refine((input) => !input.batch || !input.promptEnhance, {
      message: 'batch mode does not run --prompt-enhance (a batch line cannot wait for a rewrite); drop one of them',
      path: ['batch'],
    })
    .refine((input) => !input.batch || input.endpoint === undefined, {
      message:
        'batch mode does not follow --base-url (its jobs use the provider queue shared by every worker): drop --base-url and set the base URL in the worker environment',
      path: ['batch'],
    })
    .refine((input) => input.backend !== 'diffusers' || input.endpoint === undefined, {
      message: '--base-url is for API backends',
      path: ['endpoint'],
    })
    .refine((input) => !input.batch || input.maxCostUsd === undefined, {
      message: 'batch mode has no --max-cost budget (a batch is paid for as a whole once submitted); drop one of them',
      path: ['batch'],
    })
    .safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`);
    throw new Error(`invalid dataset workflow input: ${problems.join('; ')}`);
  }
  const { carried: _carried, ...fields } = result.data;
  return fields;
}
