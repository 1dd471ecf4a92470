import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import sharp from 'sharp';
import { writeFileAtomic } from '../lib/atomicFile';
import { ClassifiedError } from '../lib/errors';
import { encodeOutput, loadInputImage } from '../lib/images';
import { completedEntry, turnsDone, writeLedgerEntry, type LedgerEntry } from '../lib/ledger';
import { readPlanRow, type PlanRow } from '../lib/plan';
import { redactSecrets } from '../lib/redact';
import type { RowOutcome, RowTask } from '../lib/types';
import type { ImageEditProvider, ImageResult, JsonValue, ProviderImage } from './providers/provider';

/** Turns a classified error into the ApplicationFailure the retry policy acts on. */
export function toApplicationFailure(err: ClassifiedError, secrets: readonly string[]): ApplicationFailure {
  const retryable = err.kind === 'retryable';
  return ApplicationFailure.create({
    type: err.errorType,
    message: redactSecrets(err.message, secrets),
    nonRetryable: !retryable,
    ...(retryable && err.details.retryAfterMs !== undefined ? { nextRetryDelay: err.details.retryAfterMs } : {}),
    details: [{ status: err.details.status ?? null, requestId: err.details.requestId ?? null, quotaResetAt: err.details.quotaResetAt ?? null }],
  });
}

/** Row problems that need no provider call to find. */
export function checkRow(row: PlanRow, task: Pick<RowTask, 'numImages'>): void {
  const at = `row ${row.index} (${row.where})`;
  if (row.plannedError) throw new ClassifiedError('inputError', `${at}: ${row.plannedError}`);
  row.turns.forEach((turn, k) => {
    if (turn === '') {
      throw new ClassifiedError('inputError', row.turns.length === 1 ? `${at} has an empty instruction` : `${at}: turn ${k + 1} has an empty instruction`);
    }
  });
  if (row.turns.length > 1 && task.numImages > 1) {
    throw new ClassifiedError('inputError', `${at} is a multi-turn row; multi-turn rows take --num-images 1`);
  }
}

function addUsage(total: Record<string, number>, usage: Record<string, number> | undefined): void {
  for (const [k, v] of Object.entries(usage ?? {})) total[k] = (total[k] ?? 0) + v;
}

/**
 * The model activity: one call per row attempt, served on the provider's task queue.
 * It is idempotent in effect: a row the ledger already holds as ok returns at once (this covers a
 * retry after a crash between writing the ledger and reporting completion); output images and the
 * ledger entry are written atomically, images first, so a crash never leaves a half-written image
 * counted as done; a multi-turn row records each finished turn, so a retry resumes at the next turn
 * instead of paying for the earlier ones again.
 */
export function createModelActivities(provider: ImageEditProvider) {
  return {
    async editRow(task: RowTask): Promise<RowOutcome> {
      const done = await completedEntry(task.outputDir, task.index);
      if (done) {
        return { position: task.position, index: task.index, status: 'ok', outputImages: done.outputImages!, fromLedger: true };
      }
      const context = Context.current();
      const signal = context.cancellationSignal;
      const started = Date.now();
      // Heartbeats while the row works: a worker that dies is noticed within the heartbeat timeout,
      // and cancellation reaches the provider call. The latest details (a submitted task's id) are
      // kept in every beat so a retry can pick them up.
      let details: JsonValue | undefined;
      const beat = () => context.heartbeat(details);
      const timer = setInterval(beat, Math.max(1000, (context.info.heartbeatTimeoutMs ?? 60_000) / 3));
      try {
        const row = await readPlanRow(task.outputDir, task.position);
        checkRow(row, task);
        const limits = provider.inputLimits(task.model);
        const inputs: ProviderImage[] = [];
        for (const ref of row.images) {
          const image = await loadInputImage(ref, { cacheDir: task.imageCacheDir, limits, signal });
          inputs.push({ data: image.png, mimeType: 'image/png' });
        }
        const outputPaths = row.outputs.map((o) => o.path);
        const base: Omit<LedgerEntry, 'status' | 'finishedAt'> = {
          index: task.index,
          position: task.position,
          runId: task.runId,
          model: task.model,
          attempts: context.info.attempt,
        };
        const requestIds: string[] = [];
        const usage: Record<string, number> = {};
        const call = async (prompt: string, images: ProviderImage[], numImages: number): Promise<ImageResult> => {
          const request = {
            model: task.model,
            prompt,
            params: task.params,
            numImages,
            signal,
            heartbeat: (d: JsonValue) => {
              details = d;
              beat();
            },
            ...(context.info.heartbeatDetails !== undefined ? { previousHeartbeat: context.info.heartbeatDetails as JsonValue } : {}),
          };
          const result = images.length > 0 ? await provider.edit({ ...request, images }) : await provider.generate(request);
          if (result.requestId) requestIds.push(result.requestId);
          addUsage(usage, result.usage);
          return result;
        };
        const save = async (k: number, data: Buffer): Promise<Buffer> => {
          const target = row.outputs[k]!;
          const encoded = await encodeOutput(data, target.format, task.encoding);
          await writeFileAtomic(join(task.outputDir, target.path), encoded);
          return encoded;
        };

        if (row.turns.length === 1) {
          const result = await call(row.turns[0]!, inputs, row.outputs.length);
          if (result.images.length < row.outputs.length) {
            throw new ClassifiedError('retryable', `asked for ${row.outputs.length} images, the provider returned ${result.images.length}`);
          }
          for (let k = 0; k < row.outputs.length; k++) await save(k, result.images[k]!.data);
        } else {
          // Multi-turn: each turn edits the previous turn's output; finished turns are kept.
          const resumeAt = await turnsDone(task.outputDir, task.index, outputPaths);
          let current = inputs;
          if (resumeAt > 0) {
            const previous = await sharp(join(task.outputDir, outputPaths[resumeAt - 1]!)).png().toBuffer();
            current = [{ data: previous, mimeType: 'image/png' }];
          }
          for (let k = resumeAt; k < row.turns.length; k++) {
            const result = await call(row.turns[k]!, current, 1);
            await save(k, result.images[0]!.data);
            current = [{ data: await sharp(result.images[0]!.data).png().toBuffer(), mimeType: 'image/png' }];
            if (k < row.turns.length - 1) {
              await writeLedgerEntry(task.outputDir, {
                ...base,
                status: 'partial',
                turnsDone: k + 1,
                outputImages: outputPaths.slice(0, k + 1),
                finishedAt: new Date().toISOString(),
              });
            }
          }
        }

        await writeLedgerEntry(task.outputDir, {
          ...base,
          status: 'ok',
          outputImages: outputPaths,
          ...(row.turns.length > 1 ? { turnsDone: row.turns.length } : {}),
          ...(requestIds.length ? { requestIds } : {}),
          ...(Object.keys(usage).length ? { usage } : {}),
          latencyMs: Date.now() - started,
          finishedAt: new Date().toISOString(),
        });
        return { position: task.position, index: task.index, status: 'ok', outputImages: outputPaths };
      } catch (err) {
        if (err instanceof ClassifiedError) throw toApplicationFailure(err, provider.secrets);
        if (signal.aborted) throw err; // cancelled: let the SDK report the cancellation
        throw ApplicationFailure.create({
          type: 'Retryable',
          message: redactSecrets((err as Error)?.message ?? String(err), provider.secrets),
        });
      } finally {
        clearInterval(timer);
      }
    },
  };
}

export type ModelActivities = ReturnType<typeof createModelActivities>;
