import { ApplicationFailure } from '@temporalio/common';
import sharp from 'sharp';
import { openStorage } from '../storage';
import { runMetaKey } from '../lib/shared/constants';
import { ClassifiedError } from '../lib/shared/errors';
import { validateGpuRequest, validateGpuResult, rowSeed, type GpuEditRequest, type GpuModelType } from '../lib/gpuContract';
import { encodeOutput, loadInputImage } from '../lib/images';
import { commitLedgerEntry, completedEntry, readLedgerEntry, turnsDone, writeLedgerEntry } from '../lib/run/ledger';
import { readPlanRow } from '../lib/run/plan';
import { carriedHistory, generationSeed } from '../lib/run/redo';
import type { RowTask } from '../lib/shared/types';
import { checkOutputsWritable, checkRow, toApplicationFailure } from './editRow';

// `--backend diffusers` rows: the model runs in a Python GPU worker (gpu-workers/), which reads
// staged PNG inputs and writes one PNG per request. These activities run on the orchestrator queue
// around it: `prepareGpuRow` checks the ledger, stages the inputs in the run's storage and builds
// the requests; `commitGpuOutput` encodes each result into its output name and writes the ledger,
// exactly as the API path does, so resume, naming and results behave the same for every backend.
//
// The GPU worker needs neither the dataset's filesystem nor storage credentials: on a local disk a
// request names plain paths; in object storage it carries presigned GET URLs for its inputs and a
// presigned create-only PUT URL (If-None-Match: *) for its output, valid for the activity's time.

/** As long as the GPU activity may run (its start-to-close timeout), plus queueing slack. */
const URL_LIFETIME_S = 3 * 60 * 60;

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

function stagingKey(index: number, name?: string): string {
  return runMetaKey(`staging/${String(index).padStart(6, '0')}${name ? `/${name}` : ''}`);
}

function fail(err: unknown): never {
  if (err instanceof ClassifiedError) throw toApplicationFailure(err, []);
  throw err;
}

export function createGpuRowActivities() {
  return {
    async prepareGpuRow(task: RowTask): Promise<GpuRowPlan> {
      const gpu = task.gpu;
      if (!gpu) throw ApplicationFailure.nonRetryable('a diffusers row needs gpu settings', 'InvalidRequest');
      try {
        const storage = openStorage(task.outputDir);
        const row = await readPlanRow(task.outputDir, task.position);
        const done = await completedEntry(task.outputDir, task.index, row.digest);
        if (done) return { done: true, outputImages: done.outputImages!, requests: [], chained: false, firstOutput: 0 };
        checkRow(row, task);
        if (row.images.length === 0) {
          throw new ClassifiedError(
            'inputError',
            `row ${row.index} (${row.where}) has no input image; the diffusers backend edits images (text-to-image rows need an API backend)`,
          );
        }
        await checkOutputsWritable(storage, row);
        const outputPaths = row.outputs.map((o) => o.path);
        const chained = row.turns.length > 1;
        const prior = await readLedgerEntry(task.outputDir, task.index);
        const firstOutput = chained ? await turnsDone(task.outputDir, prior, row.digest, outputPaths) : 0;
        // A fresh staging folder: GPU outputs are create-only, so one left by an earlier request
        // must not be taken for this one's.
        await storage.removeAll(stagingKey(task.index));
        const stage = async (name: string, png: Buffer): Promise<string> => {
          await storage.write(stagingKey(task.index, name), png);
          return storage.readUrl(stagingKey(task.index, name), URL_LIFETIME_S);
        };
        let inputs: string[];
        if (firstOutput > 0) {
          // Resume a multi-turn row from its last finished turn's output.
          const previous = await storage.read(outputPaths[firstOutput - 1]!);
          if (!previous) throw new ClassifiedError('retryable', `turn ${firstOutput}'s output ${outputPaths[firstOutput - 1]} disappeared`);
          inputs = [await stage(`resume_${firstOutput - 1}.png`, await sharp(previous).png().toBuffer())];
        } else {
          inputs = [];
          for (const [k, ref] of row.images.entries()) {
            const image = await loadInputImage(ref, {
              cacheDir: task.imageCacheDir,
              runDir: task.outputDir,
              ...(task.download ? { download: task.download } : {}),
            });
            inputs.push(await stage(`in_${k}.png`, image.png));
          }
        }
        const requests: GpuEditRequest[] = [];
        for (let k = firstOutput; k < row.outputs.length; k++) {
          requests.push(
            validateGpuRequest({
              run_id: task.runId,
              row_index: task.index,
              model: task.model,
              model_type: gpu.modelType as GpuModelType,
              prompt: chained ? row.turns[k]! : row.turns[0]!,
              input_images:
                chained && k > firstOutput ? [await storage.readUrl(stagingKey(task.index, `out_${k - 1}.png`), URL_LIFETIME_S)] : inputs,
              output_path: await storage.createUrl(stagingKey(task.index, `out_${k}.png`), URL_LIFETIME_S),
              seed: rowSeed(generationSeed(gpu.seed, prior), task.index, k),
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
    async commitGpuOutput(args: {
      task: RowTask;
      output: number;
      result: unknown;
      last: boolean;
      chained: boolean;
      attempts: number;
    }): Promise<void> {
      const { task } = args;
      try {
        const storage = openStorage(task.outputDir);
        const result = validateGpuResult(args.result);
        const row = await readPlanRow(task.outputDir, task.position);
        const target = row.outputs[args.output]!;
        const produced = await storage.read(stagingKey(task.index, `out_${args.output}.png`));
        if (!produced)
          throw new ClassifiedError(
            'retryable',
            `the GPU worker reported output ${args.output} of row ${task.index}, but it is not in ${storage.describe(stagingKey(task.index))}`,
          );
        await storage.write(target.path, await encodeOutput(produced, target.format, task.encoding));
        const outputImages = row.outputs.map((o) => o.path);
        const prior = await readLedgerEntry(task.outputDir, task.index);
        const base = {
          index: task.index,
          position: task.position,
          runId: task.runId,
          model: task.model,
          ...(row.digest ? { digest: row.digest } : {}),
          ...carriedHistory(prior),
        };
        if (args.last) {
          await commitLedgerEntry(
            task.outputDir,
            {
              ...base,
              status: 'ok',
              outputImages,
              ...(args.chained ? { turnsDone: outputImages.length } : {}),
              // The Python worker says which attempt produced the output (older workers: the workflow's 1).
              attempts: result.attempt ?? args.attempts,
              latencyMs: Math.round(result.latency_ms),
              finishedAt: new Date().toISOString(),
            },
            prior?.status === 'ok' ? prior : undefined,
          );
          await storage.removeAll(stagingKey(task.index));
        } else if (args.chained) {
          await writeLedgerEntry(task.outputDir, {
            ...base,
            status: 'partial',
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
