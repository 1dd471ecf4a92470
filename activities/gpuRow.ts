import { createHash, randomBytes } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import sharp from 'sharp';
import { ClassifiedError } from '../lib/shared/errors';
import { ErrorTypes } from '../lib/shared/errorTypes';
import type { Storage } from '../storage';
import {
  validateGpuRequest,
  validateGpuResult,
  rowSeed,
  STAGED_PREFIX,
  type GpuEditRequest,
  type GpuEditResult,
  type GpuModelType,
  type GpuUrls,
  type GpuUrlsRequest,
} from '../lib/gpuContract';
import { encodeOutput, loadInputImage } from '../lib/images';
import { turnsDone, type LedgerEntry } from '../lib/run/ledger';
import { generationSeed } from '../lib/run/redo';
import type { PlanRow } from '../lib/run/plan';
import { commitRow, layout, ledgerEntry, RunStore, sameRequest, type RowIdentity } from '../lib/run/runStore';
import type { RowTask } from '../lib/shared/types';
import { checkOutputsWritable, checkRow, toApplicationFailure } from './editRow';

// `--backend diffusers` rows: the model runs in a Python GPU worker (gpu-workers/), which reads
// staged PNG inputs and writes one PNG per request. These activities run on the orchestrator queue
// around it: `prepareGpuRow` checks the ledger, stages the inputs in the run's storage and builds
// the requests; `commitGpuOutput` encodes each result into its output name and writes the ledger,
// exactly as the API path does, so resume, naming and results behave the same for every backend.
//
// The GPU worker needs neither the dataset's filesystem nor storage credentials: on a local disk a
// request names plain paths. In object storage it names `staged:<name>` objects, and no URL: the
// history (which whoever may read the run's workflows can read) would keep a URL valid for as long
// as the request may wait in its queue, hours. The worker asks the row workflow for URLs when it
// uses them (the update `gpuUrls`, answered by `mintGpuUrls`): GET URLs as the attempt starts, one
// create-only PUT URL (If-None-Match: *) right before it writes, for a staged name of that attempt
// alone. Each is valid for minutes and only for the attempt the server runs now; once the attempt
// ends nothing reads what its URL names, and the commit checks the bytes against the worker's
// digest in any case.

/** Paths handed to a worker on the run's own disk (not secrets: whoever can use them can read the disk). */
const URL_LIFETIME_S = 3 * 60 * 60;

/** How long a URL minted for an attempt is valid: it is used at once (inputs read, or the output written). */
export const URL_GRANT_LIFETIME_S = 10 * 60;

/** PendingActivityState.STARTED (temporal.api.enums.v1): the attempt a worker is running. */
const PENDING_ACTIVITY_STARTED = 2;

/** Staged names a worker may be given a GET URL for: inputs, a resumed turn, a previous turn's checked output. */
const READABLE_STAGED = /^(in_\d+|resume_\d+|out_\d+\.[0-9a-f]{12})\.png$/;
/** Staged names a worker may be given a create-only URL for: an output of this preparation. */
const CREATABLE_STAGED = /^out_\d+\.[0-9a-f]{12}\.png$/;

/** The name of output `name` (`out_<k>.<id>.png`) that attempt `attempt` alone may create. */
function attemptOutputName(name: string, attempt: number): string {
  return name.replace(/\.png$/, `.a${attempt}.png`);
}

export interface GpuRowPlan {
  /** Already done: nothing to run. */
  done: boolean;
  outputImages: string[];
  /** One request per output still to make; `chained`: each takes the previous one's output. */
  requests: GpuEditRequest[];
  chained: boolean;
  /** Output number of requests[0] (a multi-turn row resumes at its first unfinished turn). */
  firstOutput: number;
  /**
   * The output number of each request, where they are not firstOutput, firstOutput + 1, ...: a row
   * with independent outputs whose finished ones were kept from an earlier try.
   */
  outputs?: number[];
}

const stagingKey = layout.staging;

/** What a staged GPU output was made for: the row as asked, and the output's own request. */
interface StagedRequests {
  /** Per output number: a hash of its request without its URLs. */
  made: Record<number, string>;
  /** The preparation's id in its staged output names (absent: written before names had one). */
  prepared?: string;
}

/**
 * A staged output's name: one per preparation of the row (`out_<k>.<id>.png`), so an upload URL
 * handed out for an earlier preparation (still signed for hours) names no object a later one uses.
 */
function stagedOutputName(k: number, prepared: string | undefined): string {
  return prepared ? `out_${k}.${prepared}.png` : `out_${k}.png`;
}

/**
 * The staged name of output `k` that the GPU worker reports writing (the last part of its path or
 * URL): this preparation's form, or the older one without an id. Anything else is refused.
 */
function reportedOutputName(k: number, reported: string): string {
  const name = reported.split('?')[0]!.split('/').pop() ?? '';
  if (new RegExp(`^out_${k}(\\.[0-9a-f]{12}(\\.a\\d+)?)?\\.png$`).test(name)) return name;
  throw ApplicationFailure.create({
    type: ErrorTypes.invalidRequest,
    nonRetryable: true,
    message: `the GPU worker reported output ${k} at ${reported}, which is not a staged output name for it`,
  });
}

function requestIdentity(request: GpuEditRequest): string {
  const { input_images: _in, output_path: _out, ...what } = request;
  return createHash('sha256').update(JSON.stringify(what)).digest('hex');
}

/**
 * The staged object is what the GPU worker made: its sha256 and size are the ones the worker reported
 * for the bytes it wrote. Anything else (an object PUT through the upload URL by someone else, or an
 * earlier object the worker's create-only PUT found in place, 412) is removed and refused, so the row
 * fails with the reason and a retry makes it again: never published. A worker that reports no digest
 * (older than this check) is refused the same way.
 */
async function verifyStaged(storage: Storage, key: string, bytes: Buffer, result: GpuEditResult, what: string): Promise<void> {
  const digest = createHash('sha256').update(bytes).digest('hex');
  if (result.sha256 === digest && result.size === bytes.length) return;
  await storage.remove(key).catch(() => undefined);
  const reported = result.sha256
    ? `sha256 ${result.sha256.slice(0, 16)}…, ${result.size ?? '?'} bytes`
    : 'no digest (a GPU worker older than this check)';
  throw ApplicationFailure.create({
    type: ErrorTypes.retryable,
    // Not retried in place: the commit would find the same object; the row fails and `atelier retry` makes it again.
    nonRetryable: true,
    message: `${what} refused: the staged object (sha256 ${digest.slice(0, 16)}…, ${bytes.length} bytes) is not what the GPU worker made (${reported}); it was removed, not published`,
  });
}

/** What identifies the row's ledger entries (lib/run/runStore.ts RowIdentity). */
function rowIdentity(task: RowTask, row: PlanRow): RowIdentity {
  return { index: task.index, position: task.position, runId: task.runId, model: task.model, digest: row.digest, inputs: row.inputs };
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
        const store = RunStore.open(task.outputDir);
        const { storage } = store;
        const row = await store.planRow(task.position);
        // Read once: whether the row is done, and the version a commit here would start from.
        const started = (await store.readEntryTagged(task.index)) ?? null;
        const prior = started?.entry;
        if (await store.isDone(prior, row.digest))
          return { done: true, outputImages: prior!.outputImages!, requests: [], chained: false, firstOutput: 0 };
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
        const firstOutput = chained ? await turnsDone(task.outputDir, prior, row.digest, outputPaths) : 0;
        // Independent outputs (--num-images) the GPU made in an earlier try of the row, for exactly
        // the request this try would send: committed now, not made again when a sibling failed.
        // Only on a local disk: in object storage the staged object came through an upload URL and no
        // commit checked it against the worker's digest (the sibling's failure lost that result), so it
        // is made again rather than published unchecked.
        const keepStaged = !chained && storage.kind === 'local';
        const staged = keepStaged ? await store.readJson<StagedRequests>(stagingKey(task.index, 'requests.json')) : undefined;
        const kept = new Map<number, Buffer>();
        for (const k of Object.keys(staged?.made ?? {}).map(Number)) {
          const bytes = await storage.read(stagingKey(task.index, stagedOutputName(k, staged?.prepared)));
          if (bytes) kept.set(k, bytes);
        }
        // A fresh staging folder: GPU outputs are create-only, so one left by an earlier request
        // must not be taken for this one's.
        await storage.removeAll(stagingKey(task.index));
        const prepared = randomBytes(6).toString('hex');
        // In object storage the worker asks for its URLs when it uses them (mintGpuUrls): none in the history.
        const byName = storage.kind === 's3';
        const readRef = (name: string) =>
          byName ? Promise.resolve(`${STAGED_PREFIX}${name}`) : storage.readUrl(stagingKey(task.index, name), URL_LIFETIME_S);
        const stage = async (name: string, png: Buffer): Promise<string> => {
          await storage.write(stagingKey(task.index, name), png);
          return readRef(name);
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
        const numbers: number[] = [];
        const made: StagedRequests['made'] = {};
        for (let k = firstOutput; k < row.outputs.length; k++) {
          const request = validateGpuRequest({
            run_id: task.runId,
            row_index: task.index,
            model: task.model,
            model_type: gpu.modelType as GpuModelType,
            prompt: chained ? row.turns[k]! : row.turns[0]!,
            input_images: chained && k > firstOutput ? [await readRef(stagedOutputName(k - 1, prepared))] : inputs,
            output_path: byName
              ? `${STAGED_PREFIX}${stagedOutputName(k, prepared)}`
              : await storage.createUrl(stagingKey(task.index, stagedOutputName(k, prepared)), URL_LIFETIME_S),
            seed: rowSeed(generationSeed(gpu.seed, prior), task.index, k),
            params: gpu.params,
          });
          made[k] = requestIdentity(request);
          const earlier = staged?.made[k] === made[k] ? kept.get(k) : undefined;
          if (earlier) {
            const target = row.outputs[k]!;
            await storage.write(target.path, await encodeOutput(earlier, target.format, task.encoding));
            continue;
          }
          requests.push(request);
          numbers.push(k);
        }
        if (requests.length === 0) {
          // Every output was kept: the row is committed here.
          const { entry } = await commitRow(store, {
            outputs: [],
            entry: ledgerEntry(rowIdentity(task, row), prior, { status: 'ok', outputImages: outputPaths, attempts: 1 }),
            startedFrom: started,
          });
          return { done: true, outputImages: entry.outputImages ?? outputPaths, requests: [], chained, firstOutput };
        }
        if (!chained) await store.writeJson(stagingKey(task.index, 'requests.json'), { made, prepared } satisfies StagedRequests);
        const contiguous = numbers.every((n, i) => n === firstOutput + i);
        return { done: false, outputImages: outputPaths, requests, chained, firstOutput, ...(contiguous ? {} : { outputs: numbers }) };
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
        const store = RunStore.open(task.outputDir);
        const { storage } = store;
        const result = validateGpuResult(args.result);
        const row = await store.planRow(task.position);
        // The version the commit (or the partial entry) starts from: one conditional write from it.
        const started = (await store.readEntryTagged(task.index)) ?? null;
        // Another attempt already finished this row for the same request (this one is late: a worker
        // thought dead): its outputs and their digests stand; writing ours would replace its bytes.
        if (started?.entry.status === 'ok' && sameRequest(started.entry, row.digest)) return;
        const target = row.outputs[args.output]!;
        const stagedName = reportedOutputName(args.output, result.output_path);
        const staged = stagingKey(task.index, stagedName);
        const produced = await storage.read(staged);
        if (!produced)
          throw new ClassifiedError(
            'retryable',
            `the GPU worker reported output ${args.output} of row ${task.index}, but it is not in ${storage.describe(stagingKey(task.index))}`,
          );
        await verifyStaged(storage, staged, produced, result, `output ${args.output} of row ${task.index}`);
        // The next turn reads this output under the preparation's name, not the attempt's (its
        // request was built before any attempt ran): the checked bytes are put there.
        const perAttempt = /^(out_\d+\.[0-9a-f]{12})\.a\d+\.png$/.exec(stagedName);
        if (perAttempt && args.chained && !args.last) await storage.write(stagingKey(task.index, `${perAttempt[1]}.png`), produced);
        const output = { path: target.path, bytes: await encodeOutput(produced, target.format, task.encoding) };
        const outputImages = row.outputs.map((o) => o.path);
        const prior = started?.entry;
        const identity = rowIdentity(task, row);
        if (args.last) {
          await commitRow(store, {
            outputs: [output],
            entry: ledgerEntry(identity, prior, {
              status: 'ok',
              outputImages,
              ...(args.chained ? { turnsDone: outputImages.length } : {}),
              // The Python worker says which attempt produced the output (older workers: the workflow's 1).
              attempts: result.attempt ?? args.attempts,
              latencyMs: Math.round(result.latency_ms),
            }),
            startedFrom: started,
          });
          await storage.removeAll(stagingKey(task.index));
        } else {
          await storage.write(output.path, output.bytes);
          if (args.chained) {
            // Kept off a committed entry (a late attempt of a row another finished): see putEntry.
            await store.putEntry(
              ledgerEntry(identity, prior, {
                status: 'partial',
                turnsDone: args.output + 1,
                outputImages: outputImages.slice(0, args.output + 1),
              }) satisfies LedgerEntry,
              { over: started },
            );
          }
        }
      } catch (err) {
        return fail(err);
      }
    },

    /**
     * URLs for a GPU attempt's `staged:` references, asked for by the worker through the row
     * workflow's `gpuUrls` update as it uses them. Given only to the attempt the server runs now
     * (a stale one, or a request for another row's or an unstaged name, gets nothing), valid for
     * minutes; a create URL names an object of that attempt alone.
     */
    async mintGpuUrls(args: { task: RowTask; request: GpuUrlsRequest }): Promise<GpuUrls> {
      const { task, request } = args;
      const refuse = (why: string, retry = false) =>
        ApplicationFailure.create({
          type: retry ? ErrorTypes.retryable : ErrorTypes.invalidRequest,
          nonRetryable: !retry,
          message: `no URLs for attempt ${request.attempt} of row ${task.index}'s GPU activity ${request.activity_id}: ${why}`,
        });
      const names = request.names.map((n) => (n.startsWith(STAGED_PREFIX) ? n.slice(STAGED_PREFIX.length) : n));
      const allowed = request.create ? CREATABLE_STAGED : READABLE_STAGED;
      const odd = names.find((n) => !allowed.test(n));
      if (odd !== undefined || (request.create && names.length !== 1))
        throw refuse(
          `${odd !== undefined ? JSON.stringify(odd) : names.join(', ')} is not a staged name it may ${request.create ? 'create' : 'read'}`,
        );
      const context = Context.current();
      const execution = context.info.workflowExecution;
      if (!execution) throw refuse('no row workflow scheduled this activity');
      let pending;
      try {
        const described = await context.client.workflow.getHandle(execution.workflowId, execution.runId).describe();
        pending = described.raw.pendingActivities?.find((a) => a.activityId === request.activity_id);
      } catch (err) {
        throw refuse(`the server could not be asked (${(err as Error)?.message ?? String(err)})`, true);
      }
      if (!pending || pending.attempt !== request.attempt || Number(pending.state) !== PENDING_ACTIVITY_STARTED)
        throw refuse(
          pending ? `the server runs attempt ${pending.attempt} (state ${String(pending.state)})` : 'the activity is not pending',
        );
      const storage = RunStore.open(task.outputDir).storage;
      const urls = await Promise.all(
        names.map((name) =>
          request.create
            ? storage.createUrl(stagingKey(task.index, attemptOutputName(name, request.attempt)), URL_GRANT_LIFETIME_S)
            : storage.readUrl(stagingKey(task.index, name), URL_GRANT_LIFETIME_S),
        ),
      );
      return { urls };
    },
  };
}

export type GpuRowActivities = ReturnType<typeof createGpuRowActivities>;
