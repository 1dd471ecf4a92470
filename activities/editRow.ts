import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import sharp from 'sharp';
import { writeFileAtomic } from '../lib/atomicFile';
import { outputNameForIndex } from '../lib/constants';
import { ClassifiedError } from '../lib/errors';
import { loadInputImage, toPng } from '../lib/images';
import { completedEntry, writeLedgerEntry } from '../lib/ledger';
import { readPlanRow } from '../lib/plan';
import { redactSecrets } from '../lib/redact';
import type { RowOutcome, RowTask } from '../lib/types';
import type { ImageEditProvider } from './providers/provider';

/** Turns a classified error into the ApplicationFailure the retry policy acts on. */
export function toApplicationFailure(err: ClassifiedError, secrets: readonly string[]): ApplicationFailure {
  const retryable = err.kind === 'retryable';
  return ApplicationFailure.create({
    type: err.errorType,
    message: redactSecrets(err.message, secrets),
    nonRetryable: !retryable,
    ...(retryable && err.details.retryAfterMs !== undefined ? { nextRetryDelay: err.details.retryAfterMs } : {}),
    details: [{ status: err.details.status ?? null, requestId: err.details.requestId ?? null }],
  });
}

/**
 * The model activity: one call per row attempt, served on the provider's task queue.
 * It is idempotent in effect: a row the ledger already holds as ok returns at once (this covers a
 * retry after a crash between writing the ledger and reporting completion), and the output image and
 * ledger entry are written atomically, image first, so a crash never leaves a half-written image
 * counted as done.
 */
export function createModelActivities(provider: ImageEditProvider) {
  return {
    async editRow(task: RowTask): Promise<RowOutcome> {
      const done = await completedEntry(task.outputDir, task.index);
      if (done) {
        return { position: task.position, index: task.index, status: 'ok', outputImage: done.outputImage!, fromLedger: true };
      }
      const context = Context.current();
      const started = Date.now();
      try {
        const row = await readPlanRow(task.outputDir, task.position);
        if (row.instruction === '') {
          throw new ClassifiedError('inputError', `row ${row.index} (line ${row.line}) has an empty instruction`);
        }
        if (row.images.length === 0) {
          throw new ClassifiedError(
            'inputError',
            `row ${row.index} (line ${row.line}) has no input image; text-to-image rows are not supported yet`,
          );
        }
        const inputs = [];
        for (const ref of row.images) inputs.push(await loadInputImage(ref, context.cancellationSignal));
        const result = await provider.edit({
          model: task.model,
          prompt: row.instruction,
          images: inputs.map((img) => ({ data: img.png, mimeType: 'image/png' })),
          params: task.params,
          signal: context.cancellationSignal,
        });
        const first = result.images[0]!;
        let png: Buffer;
        try {
          png = await toPng(first.data);
          await sharp(png).metadata();
        } catch (err) {
          throw new ClassifiedError('retryable', `the provider returned an undecodable image: ${(err as Error).message}`);
        }
        const outputImage = outputNameForIndex(task.index);
        await writeFileAtomic(join(task.outputDir, outputImage), png);
        const latencyMs = Date.now() - started;
        await writeLedgerEntry(task.outputDir, {
          index: task.index,
          position: task.position,
          status: 'ok',
          runId: task.runId,
          model: task.model,
          outputImage,
          attempts: context.info.attempt,
          ...(result.requestId ? { requestId: result.requestId } : {}),
          latencyMs,
          finishedAt: new Date().toISOString(),
        });
        return { position: task.position, index: task.index, status: 'ok', outputImage };
      } catch (err) {
        if (err instanceof ClassifiedError) throw toApplicationFailure(err, provider.secrets);
        throw ApplicationFailure.create({
          type: 'Retryable',
          message: redactSecrets((err as Error)?.message ?? String(err), provider.secrets),
        });
      }
    },
  };
}

export type ModelActivities = ReturnType<typeof createModelActivities>;
