import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import sharp from 'sharp';
import { StoreFault, type Storage } from '../storage';
import { AttemptFence } from './attemptFence';
import { rowSeed } from '../lib/gpuContract';
import { batchCallsBefore } from '../lib/shared/batch';
import { boundedMessage, ClassifiedError } from '../lib/shared/errors';
import { ErrorTypes } from '../lib/shared/errorTypes';
import { encodeOutput, loadInputImage } from '../lib/images';
import { turnsDone, type LedgerEntry } from '../lib/run/ledger';
import type { TaskPlanRow } from '../lib/run/plan';
import { redactSecrets } from '../lib/redact';
import { generationSeed } from '../lib/run/redo';
import { afterPaid, commitRow, ledgerEntry, RunStore, type RowOutput, type StoredAnswer, type TaggedEntry } from '../lib/run/runStore';
import type { RowOutcome, RowTask } from '../lib/shared/types';
import { capabilities, rowCostUsd } from './providers/models';
import type { PromptEnhancer } from './providers/promptEnhance';
import type { ImageEditProvider, ImageResult, JsonValue, ProviderImage } from './providers/provider';

/** Turns a classified error into the ApplicationFailure the retry policy acts on. */
export function toApplicationFailure(err: ClassifiedError, secrets: readonly string[], attempt?: number): ApplicationFailure {
  const retryable = err.kind === 'retryable';
  return ApplicationFailure.create({
    // The store down (not the row): retried like any passing fault, but the row's last failure is
    // a StorageError, which defers the row and pauses the run instead of failing it.
    type: err instanceof StoreFault ? ErrorTypes.storageError : err.errorType,
    message: boundedMessage(redactSecrets(err.message, secrets)),
    nonRetryable: !retryable,
    ...(retryable && err.details.retryAfterMs !== undefined ? { nextRetryDelay: err.details.retryAfterMs } : {}),
    // The attempt reaches the ledger with the row's final failure (the workflow records it).
    details: [
      {
        status: err.details.status ?? null,
        requestId: err.details.requestId ?? null,
        quotaResetAt: err.details.quotaResetAt ?? null,
        attempt: attempt ?? null,
      },
    ],
  });
}

function withQuotaReset(err: ClassifiedError, deps: ModelActivityDeps): ClassifiedError {
  if (err.kind !== 'quotaExhausted' || !deps.quotaResetAt) return err;
  const quotaResetAt = deps.quotaResetAt(err.details.quotaResetAt);
  const { quotaResetAt: _reported, ...details } = err.details;
  return new ClassifiedError(err.kind, err.message, { ...details, ...(quotaResetAt ? { quotaResetAt } : {}) });
}

/** Row problems that need no provider call to find. */
export function checkRow(row: TaskPlanRow, task: Pick<RowTask, 'numImages'>): void {
  const at = `row ${row.index} (${row.where})`;
  if (row.plannedError) throw new ClassifiedError('inputError', `${at}: ${row.plannedError}`);
  row.turns.forEach((turn, k) => {
    if (turn === '') {
      throw new ClassifiedError(
        'inputError',
        row.turns.length === 1 ? `${at} has an empty instruction` : `${at}: turn ${k + 1} has an empty instruction`,
      );
    }
  });
  if (row.turns.length > 1 && task.numImages > 1) {
    throw new ClassifiedError('inputError', `${at} is a multi-turn row; multi-turn rows take --num-images 1`);
  }
}

/**
 * Every output of the row can be written where it is named (no symlink on the way, no file where a
 * folder must be): checked before any paid call, so a bad name fails the row, not the answer.
 */
export async function checkOutputsWritable(storage: Storage, row: TaskPlanRow): Promise<void> {
  for (const output of row.outputs) {
    try {
      await storage.checkWritable(output.path);
    } catch (err) {
      if (err instanceof ClassifiedError && err.kind === 'inputError') {
        throw new ClassifiedError('inputError', `row ${row.index} (${row.where}): output ${output.path} cannot be written: ${err.message}`);
      }
      throw err;
    }
  }
}

function addUsage(total: Record<string, number>, usage: Record<string, number> | undefined): void {
  for (const [k, v] of Object.entries(usage ?? {})) total[k] = (total[k] ?? 0) + v;
}

export interface ModelActivityDeps {
  /** Builds the prompt enhancer for `--prompt-enhance <model>` (keys from the worker environment). */
  enhancer?: (model: string) => PromptEnhancer;
  /**
   * When an exhausted quota resets, given what the provider's answer implies (a daily quota: the
   * next midnight in the provider's zone). Default: that. Tests put the reset seconds away.
   */
  quotaResetAt?: (reported: string | undefined) => string | undefined;
}

/**
 * The model activity: one call per row attempt, served on the provider's task queue.
 * It is idempotent in effect: a row the ledger already holds as ok (for what the row asks now)
 * returns at once; a paid answer is stored whenever a local step can still fail after it (each turn
 * of a multi-turn row; a single-call row's only once a step after its call has failed, its outputs
 * and entry being written from memory with retries), so a retry after a local failure finishes
 * from it without calling again; output images and the ledger entry are
 * written whole, images first, and the entry is committed exclusively, so a crash never leaves a
 * half-written image counted as done and two attempts never both finish the row; a multi-turn row
 * records each finished turn (and its chat history, for providers that edit in a conversation), so
 * a retry resumes at the next turn; an enhanced prompt is kept for the same reason.
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
      const context = Context.current();
      const signal = context.cancellationSignal;
      // Heartbeats while the row works: a worker that dies is noticed within the heartbeat timeout,
      // and cancellation reaches the provider call. The latest details (a submitted task's id) are
      // kept in every beat so a retry can pick them up.
      let details: JsonValue | undefined;
      let fence: AttemptFence | undefined;
      const beat = () => {
        fence?.beat();
        context.heartbeat(details);
      };
      const timer = setInterval(beat, Math.max(1000, (context.info.heartbeatTimeoutMs ?? 60_000) / 3));
      try {
        const store = RunStore.open(task.outputDir);
        fence = new AttemptFence(context, task.index);
        // The plan line the page read travels with the task (rows of older histories: read here).
        const row = task.row ?? (await store.planRow(task.position));
        // The row's entry is read once: it says whether the row is done, and is what this attempt
        // starts from. A first attempt of a row the page found fresh (no entry, no stored answer)
        // reads neither: nothing but this row's own attempts writes them.
        const fresh = task.fresh === true && context.info.attempt === 1;
        const started = fresh ? undefined : await store.readEntryTagged(task.index);
        if (await store.isDone(started?.entry, row.digest)) {
          return { position: task.position, index: task.index, status: 'ok', outputImages: started!.entry.outputImages! };
        }
        const work = new RowAttempt(task, row, store, started ?? null, provider, {
          signal,
          fence,
          attempt: context.info.attempt,
          previousHeartbeat: context.info.heartbeatDetails as JsonValue | undefined,
          heartbeat: (d) => {
            details = d;
            beat();
          },
          enhancerFor,
          fresh,
        });
        return await work.run();
      } catch (err) {
        if (err instanceof ClassifiedError) throw toApplicationFailure(withQuotaReset(err, deps), secrets(), context.info.attempt);
        if (signal.aborted) throw err; // cancelled: let the SDK report the cancellation
        throw ApplicationFailure.create({
          type: 'Retryable',
          message: boundedMessage(redactSecrets((err as Error)?.message ?? String(err), secrets())),
          details: [{ attempt: context.info.attempt }],
        });
      } finally {
        clearInterval(timer);
      }
    },
  };
}

interface AttemptContext {
  signal: AbortSignal;
  /** Checked before every paid call: a stale attempt stops without calling. */
  fence: AttemptFence;
  attempt: number;
  previousHeartbeat: JsonValue | undefined;
  heartbeat: (details: JsonValue) => void;
  enhancerFor: (model: string) => PromptEnhancer;
  /** A first attempt at a row with no state: no stored answer to look for. */
  fresh: boolean;
}

/** One attempt at one row, in named steps: inputs, prompts, calls (answers stored), outputs, commit. */
class RowAttempt {
  private readonly storage: Storage;
  /** Keys of the answers this attempt stored or read: cleared once the row is committed. */
  private readonly answerKeys: string[] = [];
  /** A single-call row's paid answer, not stored yet (stored only if a later step fails). */
  private unstored: { call: number; answer: StoredAnswer } | undefined;
  /** Single-call rows: the encoded outputs, written by the commit. */
  private outputs: RowOutput[] = [];
  private readonly started = Date.now();
  private readonly requestIds: string[] = [];
  private readonly usage: Record<string, number> = {};
  /** The prompt enhancer's tokens, priced at the enhancer's rates (not the image model's). */
  private readonly enhanceUsage: Record<string, number> = {};
  private readonly info: Record<string, string | number> = {};
  private imagesReturned = 0;
  private inputs: ProviderImage[] = [];
  private mask: ProviderImage | undefined;
  /** The row's entry when the attempt began. */
  private readonly prior: LedgerEntry | undefined;
  /** The entry as this attempt last saw or wrote it: where its next conditional write starts from. */
  private base: TaggedEntry | null;

  constructor(
    private readonly task: RowTask,
    private readonly row: TaskPlanRow,
    private readonly store: RunStore,
    started: TaggedEntry | null,
    private readonly provider: ImageEditProvider,
    private readonly ctx: AttemptContext,
  ) {
    this.storage = store.storage;
    this.prior = started?.entry;
    this.base = started;
  }

  async run(): Promise<RowOutcome> {
    const { task, row } = this;
    checkRow(row, task);
    await checkOutputsWritable(this.storage, row);
    await this.loadInputs();
    const prompts = await this.prompts();
    if (row.turns.length > 1) {
      await this.turns(prompts);
      return this.commit(prompts);
    }
    try {
      await this.singleCall(prompts[0]!);
      return await this.commit(prompts);
    } catch (err) {
      // A step after the paid call failed (an output write refused, the store down past the retries
      // from memory): the answer is kept now, so the retry finishes from it without calling again.
      await this.keepUnstored();
      throw err;
    }
  }

  /** Stores the single call's answer if it was paid for and not stored (best effort: the store may be down). */
  private async keepUnstored(): Promise<void> {
    const unstored = this.unstored;
    if (!unstored) return;
    this.unstored = undefined;
    await afterPaid('storing the answer', () =>
      this.store.storeAnswer(this.task.index, unstored.call, this.row.digest, unstored.answer),
    ).catch(() => undefined);
  }

  private async loadInputs(): Promise<void> {
    const { task, row, provider } = this;
    const { inputLimits: limits, maxInputImages } = capabilities(provider.backend, task.model);
    if (row.images.length > maxInputImages) {
      throw new ClassifiedError(
        'inputError',
        `row ${row.index} has ${row.images.length} input images; ${task.model} takes at most ${maxInputImages}`,
      );
    }
    const sources = {
      cacheDir: task.imageCacheDir,
      runDir: task.outputDir,
      signal: this.ctx.signal,
      ...(task.download ? { download: task.download } : {}),
    };
    for (const ref of row.images)
      this.inputs.push({ data: (await loadInputImage(ref, { ...sources, limits })).png, mimeType: 'image/png' });
    if (row.mask) this.mask = { data: (await loadInputImage(row.mask, sources)).png, mimeType: 'image/png' };
  }

  /** --prompt-enhance: each instruction rewritten once; the rewrite is kept for retries of this request. */
  private async prompts(): Promise<string[]> {
    const { task, row } = this;
    if (!task.promptEnhance) return row.turns;
    // A read that fails throws: taken for "nothing kept", it would pay the enhancer again.
    const kept = await this.store.readRowState<{ turns: string[]; digest?: string }>('enhanced', task.index);
    if (kept?.turns.length === row.turns.length && kept.digest === row.digest) return kept.turns;
    const enhancer = this.ctx.enhancerFor(task.promptEnhance.model);
    const prompts: string[] = [];
    for (const turn of row.turns) {
      await this.ctx.fence.ensureCurrent('the prompt enhancer call');
      const result = await enhancer.enhance({
        instruction: turn,
        ...(task.promptEnhance.withImages ? { images: this.inputs } : {}),
        signal: this.ctx.signal,
      });
      addUsage(this.enhanceUsage, result.usage);
      prompts.push(result.text);
    }
    await afterPaid('keeping the enhanced prompt', () =>
      this.store.writeRowState('enhanced', task.index, { turns: prompts, ...(row.digest ? { digest: row.digest } : {}) }),
    );
    return prompts;
  }

  private request(prompt: string, numImages: number) {
    // A seed is the run's base seed: each row gets its own, derived as the GPU backend derives it.
    const { params, index } = this.task;
    return {
      model: this.task.model,
      prompt,
      // A redone row (its earlier outputs in the history) gets a seed of its own.
      params: params.seed === undefined ? params : { ...params, seed: rowSeed(generationSeed(params.seed, this.prior), index, 0) },
      numImages,
      signal: this.ctx.signal,
      heartbeat: this.ctx.heartbeat,
      ...(this.ctx.previousHeartbeat !== undefined ? { previousHeartbeat: this.ctx.previousHeartbeat } : {}),
    };
  }

  private record(result: StoredAnswer): StoredAnswer {
    if (result.requestId) this.requestIds.push(result.requestId);
    addUsage(this.usage, result.usage);
    Object.assign(this.info, result.info ?? {});
    this.imagesReturned += result.images.length;
    return result;
  }

  /**
   * Call number `call` of the row: the stored answer when an earlier attempt was paid for it,
   * else the provider, whose answer is stored before anything else happens to it.
   */
  private async answer(
    call: number,
    ask: () => Promise<ImageResult & { history?: JsonValue[] }>,
    store: 'now' | 'on failure' = 'now',
  ): Promise<StoredAnswer> {
    const kept = this.ctx.fresh ? undefined : await this.store.storedAnswer(this.task.index, call, this.row.digest);
    if (kept) {
      this.answerKeys.push(...kept.keys);
      return this.record(kept.answer);
    }
    await this.ctx.fence.ensureCurrent(`the provider call (call ${call})`);
    const result = await ask();
    const answer: StoredAnswer = {
      images: result.images,
      ...(result.requestId ? { requestId: result.requestId } : {}),
      ...(result.usage ? { usage: result.usage } : {}),
      ...(result.info ? { info: result.info } : {}),
      ...(result.history ? { history: result.history } : {}),
    };
    // A single-call row's answer is stored only if a step after it fails (run): its outputs and
    // entry are written from memory, with the same retries, and then hold all it held.
    if (store === 'on failure') {
      this.unstored = { call, answer };
      return this.record(answer);
    }
    // Paid: a passing storage fault is retried from memory here, never by an activity retry that would
    // call the provider again. If the store stays down, the attempt goes on from memory; its output
    // and commit writes are guarded the same way and pause the run if they fail.
    try {
      const keys = await afterPaid(
        'storing the answer',
        () => this.store.storeAnswer(this.task.index, call, this.row.digest, answer),
        this.ctx.signal,
      );
      this.answerKeys.push(...keys);
    } catch (err) {
      if (!(err instanceof ClassifiedError) || err.kind !== 'storageError') throw err;
    }
    return this.record(answer);
  }

  private async edit(prompt: string, images: ProviderImage[], numImages: number): Promise<ImageResult> {
    const request = this.request(prompt, numImages);
    if (images.length === 0) return this.provider.generate(request);
    return this.provider.edit({ ...request, images, ...(this.mask && images === this.inputs ? { mask: this.mask } : {}) });
  }

  private async encode(k: number, data: Buffer): Promise<RowOutput> {
    const target = this.row.outputs[k]!;
    return { path: target.path, bytes: await encodeOutput(data, target.format, this.task.encoding) };
  }

  /** A finished turn's output, written at once (the next turn may fail). */
  private async save(k: number, data: Buffer): Promise<void> {
    const output = await this.encode(k, data);
    await afterPaid(`writing ${this.storage.describe(output.path)}`, () => this.storage.write(output.path, output.bytes));
  }

  private async singleCall(prompt: string): Promise<void> {
    const { row } = this;
    const result = await this.answer(0, () => this.edit(prompt, this.inputs, row.outputs.length), 'on failure');
    if (result.images.length < row.outputs.length) {
      throw new ClassifiedError('retryable', `asked for ${row.outputs.length} images, the provider returned ${result.images.length}`);
    }
    for (let k = 0; k < row.outputs.length; k++) this.outputs.push(await this.encode(k, result.images[k]!.data));
  }

  /**
   * Multi-turn: each turn edits the previous turn's output, in one conversation where the provider
   * has one (Gemini keeps thought signatures in it); finished turns are kept.
   */
  private async turns(prompts: string[]): Promise<void> {
    const { task, row, provider } = this;
    const outputPaths = row.outputs.map((o) => o.path);
    const resumeAt = await turnsDone(task.outputDir, this.prior, row.digest, outputPaths);
    let history =
      provider.chatTurn && resumeAt > 0
        ? await this.store.readRowState<{ turnsDone: number; history: JsonValue[] }>('chats', task.index)
        : undefined;
    if (history && history.turnsDone !== resumeAt) history = undefined;
    let current = this.inputs;
    if (resumeAt > 0) {
      const previous = await this.storage.read(outputPaths[resumeAt - 1]!);
      if (!previous) throw new ClassifiedError('retryable', `turn ${resumeAt}'s output ${outputPaths[resumeAt - 1]} disappeared`);
      current = [{ data: await sharp(previous).png().toBuffer(), mimeType: 'image/png' }];
    }
    let chat = history?.history;
    for (let k = resumeAt; k < row.turns.length; k++) {
      let image: Buffer;
      if (provider.chatTurn && (k === 0 || chat)) {
        const turnHistory = chat;
        const result = await this.answer(k, () =>
          provider.chatTurn!({
            ...this.request(prompts[k]!, 1),
            images: k === 0 ? this.inputs : [],
            ...(turnHistory ? { history: turnHistory } : {}),
          }),
        );
        chat = result.history as JsonValue[] | undefined;
        image = result.images[0]!.data;
      } else {
        const source = current;
        image = (await this.answer(k, () => this.edit(prompts[k]!, source, 1))).images[0]!.data;
      }
      await this.save(k, image);
      current = [{ data: await sharp(image).png().toBuffer(), mimeType: 'image/png' }];
      if (chat) {
        const kept = { turnsDone: k + 1, history: chat };
        await afterPaid('keeping the chat', () => this.store.writeRowState('chats', task.index, kept));
      }
      if (k < row.turns.length - 1) {
        // Never over a committed entry: one conditional write from the version this attempt last saw,
        // so a late attempt of a row another attempt finished (even a moment ago) stops here.
        const partial = this.entry(prompts, {
          ...this.totals(),
          status: 'partial',
          turnsDone: k + 1,
          outputImages: outputPaths.slice(0, k + 1),
        });
        const held = await afterPaid('recording the finished turn', () => this.store.putEntry(partial, { over: this.base }));
        if (held.entry !== partial) throw new ClassifiedError('retryable', `row ${row.index} was finished by another attempt`);
        this.base = held;
      }
    }
  }

  /** This attempt's entry for the row (built by the run store's one builder, carrying the history). */
  private entry(prompts: string[], fields: Parameters<typeof ledgerEntry>[2]): LedgerEntry {
    const { task, row } = this;
    return ledgerEntry(
      { index: task.index, position: task.position, runId: task.runId, model: task.model, digest: row.digest, inputs: row.inputs },
      this.prior,
      {
        // A row its batch called before (--batch-fallback direct) counts that call too.
        attempts: this.ctx.attempt + batchCallsBefore(this.prior, row.digest),
        ...(task.promptEnhance ? { instructionEnhanced: prompts.join(' → ') } : {}),
        ...fields,
      },
    );
  }

  /** Request ids, usage and cost over every attempt and turn of the row. */
  private totals(): Pick<LedgerEntry, 'requestIds' | 'usage' | 'costUsd' | 'info'> {
    // A multi-turn row resumed after a failure: what its finished turns cost counts too.
    const prior = this.row.turns.length > 1 && this.prior && this.prior.digest === this.row.digest ? this.prior : undefined;
    const totalUsage = { ...(prior?.usage ?? {}) };
    addUsage(totalUsage, this.usage);
    addUsage(totalUsage, this.enhanceUsage);
    const enhancer = this.task.promptEnhance ? { model: this.task.promptEnhance.model, usage: this.enhanceUsage } : undefined;
    const cost = rowCostUsd(this.provider.backend, this.task.model, this.task.params, this.usage, this.imagesReturned, enhancer);
    const costUsd = cost === undefined ? prior?.costUsd : (prior?.costUsd ?? 0) + cost;
    return {
      requestIds: [...(prior?.requestIds ?? []), ...this.requestIds],
      ...(Object.keys(totalUsage).length ? { usage: totalUsage } : {}),
      ...(costUsd !== undefined ? { costUsd } : {}),
      ...(Object.keys(this.info).length ? { info: this.info } : {}),
    };
  }

  private async commit(prompts: string[]): Promise<RowOutcome> {
    const { task, row } = this;
    const outputPaths = row.outputs.map((o) => o.path);
    const { entry } = await commitRow(this.store, {
      outputs: this.outputs,
      entry: this.entry(prompts, {
        ...this.totals(),
        status: 'ok',
        outputImages: outputPaths,
        ...(row.turns.length > 1 ? { turnsDone: row.turns.length } : {}),
        latencyMs: Date.now() - this.started,
      }),
      // One conditional write from the entry as this attempt began or last wrote it (a create if none).
      startedFrom: this.base,
      paid: true,
    });
    this.unstored = undefined;
    // The outputs and the ledger now hold what the stored answers held.
    await this.store.clearAnswers(this.answerKeys).catch(() => undefined);
    return {
      position: task.position,
      index: task.index,
      status: 'ok',
      outputImages: entry.outputImages ?? outputPaths,
      ...(entry.costUsd !== undefined ? { costUsd: entry.costUsd } : {}),
      ...(entry.latencyMs !== undefined ? { latencyMs: entry.latencyMs } : {}),
    };
  }
}

export type ModelActivities = ReturnType<typeof createModelActivities>;
