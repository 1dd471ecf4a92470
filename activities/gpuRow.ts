import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import sharp from 'sharp';
import { writeFileAtomic } from '../lib/atomicFile';
import { ClassifiedError } from '../lib/errors';
import { validateGpuRequest, validateGpuResult, rowSeed, type GpuEditRequest, type GpuModelType } from '../lib/gpuContract';
import { encodeOutput, loadInputImage } from '../lib/images';
import { completedEntry, turnsDone, writeLedgerEntry } from '../lib/ledger';
import { readPlanRow, runMetaDir } from '../lib/plan';
import type { RowTask } from '../lib/types';
import { checkRow, toApplicationFailure } from './editRow';

// `--backend diffusers` rows: the model runs in a Python GPU worker (gpu-workers/), which reads
// staged PNG inputs and writes one PNG per request. These activities run on the orchestrator queue
// around it: `prepareGpuRow` checks the ledger, stages the inputs and builds the requests;
// `commitGpuOutput` encodes each result into its output name and writes the ledger, exactly as the
// API path does, so resume, naming and results behave the same for every backend.

export interface GpuRowPlan {
  /** Already done: nothing to run. */
  done: boolean;
  outputImages: string[];
  /** One request per output still to make; `chained`: each takes the previous one's output. */
  requests: GpuEditRequest[];
  chained: boolean;
  /** Output number of requests[0] (a multi-turn row resumes at its first unfinished turn). */
  firstOutput: number;
}

function stagingDir(outputDir: string, index: number): string {
  return join(runMetaDir(outputDir), 'staging', String(index).padStart(6, '0'));
}

function fail(err: unknown): never {
  if (err instanceof ClassifiedError) throw toApplicationFailure(err, []);
  throw err;
}

export function createGpuRowActivities() {
  return {
    async prepareGpuRow(task: RowTask): Promise<GpuRowPlan> {
      const done = await completedEntry(task.outputDir, task.index);
      if (done) return { done: true, outputImages: done.outputImages!, requests: [], chained: false, firstOutput: 0 };
      const gpu = task.gpu;
      if (!gpu) throw ApplicationFailure.nonRetryable('a diffusers row needs gpu settings', 'InvalidRequest');
      try {
        const row = await readPlanRow(task.outputDir, task.position);
        checkRow(row, task);
        if (row.images.length === 0) {
          throw new ClassifiedError('inputError', `row ${row.index} (${row.where}) has no input image; the diffusers backend edits images (text-to-image rows need an API backend)`);
        }
        const staging = stagingDir(task.outputDir, task.index);
        await mkdir(staging, { recursive: true });
        const outputPaths = row.outputs.map((o) => o.path);
        const chained = row.turns.length > 1;
        const firstOutput = chained ? await turnsDone(task.outputDir, task.index, outputPaths) : 0;
        let inputs: string[];
        if (firstOutput > 0) {
          // Resume a multi-turn row from its last finished turn's output.
          const previous = join(staging, `resume_${firstOutput - 1}.png`);
          await writeFileAtomic(previous, await sharp(join(task.outputDir, outputPaths[firstOutput - 1]!)).png().toBuffer());
          inputs = [previous];
        } else {
          inputs = [];
          for (const [k, ref] of row.images.entries()) {
            const image = await loadInputImage(ref, { cacheDir: task.imageCacheDir });
            const staged = join(staging, `in_${k}.png`);
            await writeFileAtomic(staged, image.png);
            inputs.push(staged);
          }
        }
        const requests: GpuEditRequest[] = [];
        for (let k = firstOutput; k < row.outputs.length; k++) {
          const output = join(staging, `out_${k}.png`);
          requests.push(
            validateGpuRequest({
              run_id: task.runId,
              row_index: task.index,
              model: task.model,
              model_type: gpu.modelType as GpuModelType,
              prompt: chained ? row.turns[k]! : row.turns[0]!,
              input_images: chained && k > firstOutput ? [join(staging, `out_${k - 1}.png`)] : inputs,
              output_path: output,
              seed: rowSeed(gpu.seed, task.index, k),
              params: gpu.params,
            }),
          );
        }
        return { done: false, outputImages: outputPaths, requests, chained, firstOutput };
      } catch (err) {
        return fail(err);
      }
    },

    /** Encodes one GPU output into its output name and records it; the last one marks the row ok. */
    async commitGpuOutput(args: { task: RowTask; output: number; result: unknown; last: boolean; chained: boolean; attempts: number }): Promise<void> {
      const { task } = args;
      try {
        const result = validateGpuResult(args.result);
        const row = await readPlanRow(task.outputDir, task.position);
        const target = row.outputs[args.output]!;
        const encoded = await encodeOutput(await sharp(result.output_path).png().toBuffer(), target.format, task.encoding);
        await writeFileAtomic(join(task.outputDir, target.path), encoded);
        const outputImages = row.outputs.map((o) => o.path);
        if (args.last) {
          await writeLedgerEntry(task.outputDir, {
            index: task.index,
            position: task.position,
            status: 'ok',
            runId: task.runId,
            model: task.model,
            outputImages,
            ...(args.chained ? { turnsDone: outputImages.length } : {}),
            attempts: args.attempts,
            latencyMs: Math.round(result.latency_ms),
            finishedAt: new Date().toISOString(),
          });
          await rm(stagingDir(task.outputDir, task.index), { recursive: true, force: true });
        } else if (args.chained) {
          await writeLedgerEntry(task.outputDir, {
            index: task.index,
            position: task.position,
            status: 'partial',
            runId: task.runId,
            model: task.model,
            turnsDone: args.output + 1,
            outputImages: outputImages.slice(0, args.output + 1),
            finishedAt: new Date().toISOString(),
          });
        }
      } catch (err) {
        return fail(err);
      }
    },
  };
}

export type GpuRowActivities = ReturnType<typeof createGpuRowActivities>;
