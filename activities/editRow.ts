import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import sharp from 'sharp';
import { writeFileAtomic } from '../lib/atomicFile';
import { ClassifiedError } from '../lib/errors';
import { encodeOutput, loadInputImage } from '../lib/images';
import { completedEntry, readLedgerEntry, turnsDone, writeLedgerEntry, type LedgerEntry } from '../lib/ledger';
import { readPlanRow, runMetaDir, type PlanRow } from '../lib/plan';
import { rowSeed } from '../lib/gpuContract';
import { redactSecrets } from '../lib/redact';
import type { RowOutcome, RowTask } from '../lib/types';
import { rowCostUsd } from './providers/models';
import type { PromptEnhancer } from './providers/promptEnhance';
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

/** Per-row files that let a retry pick up where the last attempt stopped. */
function rowStateFile(task: RowTask, kind: 'chats' | 'enhanced'): string {
  return join(runMetaDir(task.outputDir), kind, `${String(task.index).padStart(6, '0')}.json`);
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export interface ModelActivityDeps {
  /** Builds the prompt enhancer for `--prompt-enhance <model>` (keys from the worker environment). */
  enhancer?: (model: string) => PromptEnhancer;
}

/**
 * The model activity: one call per row attempt, served on the provider's task queue.
 * It is idempotent in effect: a row the ledger already holds as ok returns at once (this covers a
 * retry after a crash between writing the ledger and reporting completion); output images and the
 * ledger entry are written atomically, images first, so a crash never leaves a half-written image
 * counted as done; a multi-turn row records each finished turn (and its chat history, for providers
 * that edit in a conversation), so a retry resumes at the next turn instead of paying for the
 * earlier ones again; an enhanced prompt is kept for the same reason.
 */
export function createModelActivities(provider: ImageEditProvider, deps: ModelActivityDeps = {}) {
  const enhancers = new Map<string, PromptEnhancer>();
  const enhancerFor = (model: string): PromptEnhancer => {
    let enhancer = enhancers.get(model);
    if (!enhancer) {
      if (!deps.enhancer) throw new ClassifiedError('configError', '--prompt-enhance is not available on this worker');
      enhancer = deps.enhancer(model);
      enhancers.set(model, enhancer);
    }
    return enhancer;
  };
  const secrets = () => [...provider.secrets, ...[...enhancers.values()].flatMap((e) => e.secrets)];

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
        if (row.images.length > provider.maxInputImages(task.model)) {
          throw new ClassifiedError('inputError', `row ${row.index} has ${row.images.length} input images; ${task.model} takes at most ${provider.maxInputImages(task.model)}`);
        }
        const inputs: ProviderImage[] = [];
        for (const ref of row.images) {
          const image = await loadInputImage(ref, { cacheDir: task.imageCacheDir, limits, signal });
          inputs.push({ data: image.png, mimeType: 'image/png' });
        }
        const mask = row.mask ? { data: (await loadInputImage(row.mask, { cacheDir: task.imageCacheDir, signal })).png, mimeType: 'image/png' } : undefined;
        const outputPaths = row.outputs.map((o) => o.path);
        // A multi-turn row resumed after a failure: what its finished turns cost counts too.
        const prior = row.turns.length > 1 ? await readLedgerEntry(task.outputDir, task.index) : undefined;
        const requestIds: string[] = [];
        const usage: Record<string, number> = {};
        // The prompt enhancer's tokens, priced at the enhancer's rates (not the image model's).
        const enhanceUsage: Record<string, number> = {};
        const info: Record<string, string | number> = {};
        let imagesReturned = 0;

        // --prompt-enhance: rewrite each instruction once; the rewrite is kept for retries.
        let prompts = row.turns;
        if (task.promptEnhance) {
          const file = rowStateFile(task, 'enhanced');
          const kept = await readJson<{ turns: string[] }>(file);
          if (kept?.turns.length === row.turns.length) prompts = kept.turns;
          else {
            const enhancer = enhancerFor(task.promptEnhance.model);
            prompts = [];
            for (const turn of row.turns) {
              const result = await enhancer.enhance({ instruction: turn, ...(task.promptEnhance.withImages ? { images: inputs } : {}), signal });
              addUsage(enhanceUsage, result.usage);
              prompts.push(result.text);
            }
            await writeFileAtomic(file, JSON.stringify({ turns: prompts }));
          }
        }

        // A seed is the run's base seed: each row gets its own, derived as the GPU backend derives it.
        const params = task.params.seed === undefined ? task.params : { ...task.params, seed: rowSeed(task.params.seed, task.index, 0) };
        const request = (prompt: string, numImages: number) => ({
          model: task.model,
          prompt,
          params,
          numImages,
          signal,
          heartbeat: (d: JsonValue) => {
            details = d;
            beat();
          },
          ...(context.info.heartbeatDetails !== undefined ? { previousHeartbeat: context.info.heartbeatDetails as JsonValue } : {}),
        });
        const record = (result: ImageResult): ImageResult => {
          if (result.requestId) requestIds.push(result.requestId);
          addUsage(usage, result.usage);
          Object.assign(info, result.info ?? {});
          imagesReturned += result.images.length;
          return result;
        };
        const call = async (prompt: string, images: ProviderImage[], numImages: number): Promise<ImageResult> =>
          record(
            images.length > 0
              ? await provider.edit({ ...request(prompt, numImages), images, ...(mask && images === inputs ? { mask } : {}) })
              : await provider.generate(request(prompt, numImages)),
          );
        const save = async (k: number, data: Buffer): Promise<void> => {
          const target = row.outputs[k]!;
          await writeFileAtomic(join(task.outputDir, target.path), await encodeOutput(data, target.format, task.encoding));
        };
        const base: Omit<LedgerEntry, 'status' | 'finishedAt'> = {
          index: task.index,
          position: task.position,
          runId: task.runId,
          model: task.model,
          attempts: context.info.attempt,
          ...(task.promptEnhance ? { instructionEnhanced: prompts.join(' → ') } : {}),
        };
        // Request ids, usage and cost over every attempt and turn of the row.
        const totals = (): Pick<LedgerEntry, 'requestIds' | 'usage' | 'costUsd' | 'info'> => {
          const totalUsage = { ...(prior?.usage ?? {}) };
          addUsage(totalUsage, usage);
          addUsage(totalUsage, enhanceUsage);
          const enhancer = task.promptEnhance ? { model: task.promptEnhance.model, usage: enhanceUsage } : undefined;
          const cost = rowCostUsd(provider.backend, task.model, task.params, usage, imagesReturned, enhancer);
          const costUsd = cost === undefined ? prior?.costUsd : (prior?.costUsd ?? 0) + cost;
          return {
            requestIds: [...(prior?.requestIds ?? []), ...requestIds],
            ...(Object.keys(totalUsage).length ? { usage: totalUsage } : {}),
            ...(costUsd !== undefined ? { costUsd } : {}),
            ...(Object.keys(info).length ? { info } : {}),
          };
        };

        if (row.turns.length === 1) {
          const result = await call(prompts[0]!, inputs, row.outputs.length);
          if (result.images.length < row.outputs.length) {
            throw new ClassifiedError('retryable', `asked for ${row.outputs.length} images, the provider returned ${result.images.length}`);
          }
          for (let k = 0; k < row.outputs.length; k++) await save(k, result.images[k]!.data);
        } else {
          // Multi-turn: each turn edits the previous turn's output, in one conversation where the
          // provider has one (Gemini keeps thought signatures in it); finished turns are kept.
          const resumeAt = await turnsDone(task.outputDir, task.index, outputPaths);
          const chatFile = rowStateFile(task, 'chats');
          let history = provider.chatTurn && resumeAt > 0 ? (await readJson<{ turnsDone: number; history: JsonValue[] }>(chatFile)) : undefined;
          if (history && history.turnsDone !== resumeAt) history = undefined;
          let current = inputs;
          if (resumeAt > 0) {
            const previous = await sharp(join(task.outputDir, outputPaths[resumeAt - 1]!)).png().toBuffer();
            current = [{ data: previous, mimeType: 'image/png' }];
          }
          let chat = history?.history;
          for (let k = resumeAt; k < row.turns.length; k++) {
            let image: Buffer;
            if (provider.chatTurn && (k === 0 || chat)) {
              const result = await provider.chatTurn({ ...request(prompts[k]!, 1), images: k === 0 ? inputs : [], ...(chat ? { history: chat } : {}) });
              record(result);
              chat = result.history;
              image = result.images[0]!.data;
            } else {
              image = (await call(prompts[k]!, current, 1)).images[0]!.data;
            }
            await save(k, image);
            current = [{ data: await sharp(image).png().toBuffer(), mimeType: 'image/png' }];
            if (chat) await writeFileAtomic(chatFile, JSON.stringify({ turnsDone: k + 1, history: chat }));
            if (k < row.turns.length - 1) {
              await writeLedgerEntry(task.outputDir, {
                ...base,
                ...totals(),
                status: 'partial',
                turnsDone: k + 1,
                outputImages: outputPaths.slice(0, k + 1),
                finishedAt: new Date().toISOString(),
              });
            }
          }
        }

        const final = totals();
        await writeLedgerEntry(task.outputDir, {
          ...base,
          ...final,
          status: 'ok',
          outputImages: outputPaths,
          ...(row.turns.length > 1 ? { turnsDone: row.turns.length } : {}),
          latencyMs: Date.now() - started,
          finishedAt: new Date().toISOString(),
        });
        return { position: task.position, index: task.index, status: 'ok', outputImages: outputPaths, ...(final.costUsd !== undefined ? { costUsd: final.costUsd } : {}) };
      } catch (err) {
        if (err instanceof ClassifiedError) throw toApplicationFailure(err, secrets());
        if (signal.aborted) throw err; // cancelled: let the SDK report the cancellation
        throw ApplicationFailure.create({
          type: 'Retryable',
          message: redactSecrets((err as Error)?.message ?? String(err), secrets()),
        });
      } finally {
        clearInterval(timer);
      }
    },
  };
}

export type ModelActivities = ReturnType<typeof createModelActivities>;
