import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { parseFilterRows } from './filterRows';
import { validateRetrySelection } from './retrySelection';
import { validateRunId } from './runId';
import type { DatasetWorkflowInput } from './types';

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

export const datasetWorkflowInputSchema = z
  .object({
    runId: z.string().superRefine((id, ctx) => {
      const problem = validateRunId(id);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
    inputPath: location('inputPath'),
    outputDir: location('outputDir'),
    backend: z.enum(['openai', 'gemini', 'openrouter', 'modelscope', 'azure', 'vertex', 'fal', 'diffusers']),
    model: z.string().min(1),
    params: z
      .object({
        size: z.string().optional(),
        quality: z.string().optional(),
        background: z.string().optional(),
        outputFormat: z.string().optional(),
        outputCompression: z.number().int().min(0).max(100).optional(),
        inputFidelity: z.string().optional(),
        moderation: z.string().optional(),
        aspectRatio: z.string().optional(),
        imageSize: z.string().optional(),
        seed: z.number().int().min(0).optional(),
        numInferenceSteps: z.number().int().min(1).optional(),
        guidanceScale: z.number().min(0).optional(),
        trueCfgScale: z.number().min(0).optional(),
        negativePrompt: z.string().optional(),
      })
      .strict()
      .default({}),
    instructionKey: z.string().min(1).default('instruction'),
    imageKey: z.string().min(1).optional(),
    conversationKey: z.string().min(1).optional(),
    outputNameColumn: z.string().min(1).optional(),
    numImages: z.number().int().min(1).max(10).default(1),
    encoding: z
      .object({ jpegQuality: z.number().int().min(1).max(100).default(95), webpQuality: z.number().int().min(1).max(100).default(95) })
      .strict()
      .default({ jpegQuality: 95, webpQuality: 95 }),
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
    outputCsv: location('outputCsv').optional(),
    imageCacheDir: location('imageCacheDir').optional(),
    download: z
      .object({
        maxBytes: z.number().int().min(1).max(4 * 1024 ** 3),
        timeoutMs: z.number().int().min(100).max(3_600_000),
      })
      .strict()
      .optional(),
    window: z.number().int().min(1).max(1000).default(16),
    retry: z
      .object({
        maxAttempts: z.number().int().min(1).max(100).default(5),
        initialIntervalMs: z.number().int().min(10).default(2000),
        maximumIntervalMs: z.number().int().min(10).default(120_000),
        heartbeatTimeoutMs: z.number().int().min(1000).optional(),
      })
      .strict()
      .default({ maxAttempts: 5, initialIntervalMs: 2000, maximumIntervalMs: 120_000 }),
    gpu: z
      .object({
        modelType: z.string().min(1),
        taskQueue: z.string().regex(/^gpu-[a-z0-9-]{1,60}$/),
        seed: z.number().int().min(0).max(4294967295).default(0),
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
      .strict()
      .optional(),
    maskKey: z.string().min(1).optional(),
    promptEnhance: z.object({ model: z.string().min(1), withImages: z.boolean().default(false) }).strict().optional(),
    rateLimitPerSecond: z.number().positive().max(10_000).optional(),
    maxCostUsd: z.number().positive().optional(),
    searchAttributes: z.boolean().optional(),
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
      .optional(),
    maxHistoryEvents: z.number().int().min(200).max(50_000).optional(),
    // Written by the workflow itself when it continues as new; never by hand.
    carried: z.unknown().optional(),
  })
  .strict();

export function parseDatasetWorkflowInput(raw: unknown): DatasetWorkflowInput {
  const result = datasetWorkflowInputSchema
    .refine((input) => input.backend !== 'diffusers' || input.gpu !== undefined, { message: 'backend diffusers needs gpu settings (modelType, taskQueue)', path: ['gpu'] })
    .safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`);
    throw new Error(`invalid dataset workflow input: ${problems.join('; ')}`);
  }
  return result.data as DatasetWorkflowInput;
}
