import { createHash } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { openStorage, type Storage } from '../storage';
import {
  BATCH_PRICE_FACTOR,
  parseBatchRequestKey,
  type BatchBackend,
  type BatchFallback,
  type BatchJobResult,
  type BatchJobSpec,
  type BatchPlan,
  type BatchStatus,
  type BatchSubmission,
} from '../lib/shared/batch';
import { boundedMessage, ClassifiedError } from '../lib/shared/errors';
import { rowSelector } from '../lib/shared/filterRows';
import { encodeOutput, loadInputImage } from '../lib/images';
import { completedEntry, ledgerReader, type LedgerEntry } from '../lib/run/ledger';
import { allPlanRows, readPlanRow, type PlanRow } from '../lib/run/plan';
import { commitRow as commitFinishedRow, layout, ledgerEntry, RunStore } from '../lib/run/runStore';
import { redactSecrets } from '../lib/redact';
import { ErrorTypes } from '../lib/shared/errorTypes';
import type { ImageRef as DatasetImageRef } from '../lib/dataset/common';
import { AttemptFence } from './attemptFence';
import { checkOutputsWritable, checkRow } from './editRow';
import type { BatchClient, ImageRef, LineOutcome } from './providers/batchClient';
import { capabilities, rowCostUsd } from './providers/models';
import { batchCapability } from './providers/registry';
import { endJobUploads, sharedUpload, uploadKeyScope } from './batchUploads';

// Provider batch jobs (`atelier edit --batch`): half price, answered within 24 hours. One job is one
// provider batch. Its rows are listed in a manifest in the run's storage; these activities build and
// upload the input, create the batch (tagged with the run and job ids), poll it, and commit each
// answered row through the same ledger and storage path as the direct path (editRow.ts).
//
// Exactly once: a job records its batch id in the run's storage the moment the provider answers,
// and, before creating anything, looks for a batch already tagged with the job id at the provider,
// so an attempt that died between creating the batch and recording it never makes a second one.
// The workflow then records the id in its history before it waits (workflows/batchJob.ts).

const HEARTBEAT_MS = 5_000;

function jobKey(spec: Pick<BatchJobSpec, 'jobId'>, kind: 'rows' | 'submitted'): string {
  return layout.batchJob(spec.jobId, kind);
}

/**
 * Where a job of an earlier release recorded its own uploaded input images (`<sha256>` -> file id);
 * a job of this release shares the run's (activities/batchUploads.ts). Read only to delete them,
 * when such a job, in flight across an upgrade, ends.
 */
async function legacyJobUploads(storage: Storage, spec: Pick<BatchJobSpec, 'jobId'>): Promise<string[]> {
  const prefix = layout.batchUploads(spec.jobId);
  const found: string[] = [];
  for (const hash of await storage.list(prefix)) {
    const id = (await storage.read(`${prefix}${hash}`))?.toString('utf8');
    if (id) found.push(id);
  }
  return found;
}

/** A record of the run (the job's manifest or submission): undefined when there is none; a failed read throws. */
async function readJson<T>(storage: Storage, key: string): Promise<T | undefined> {
  return RunStore.open(storage.location).readJson<T>(key);
}

/** A job's rows: plan positions and indexes, in order. */
interface JobManifest {
  rows: { position: number; index: number }[];
  /** When the job was planned: no batch of this job can be older, so a tag lookup stops there. */
  plannedAt?: string;
}

/** Clock skew allowed between this worker and the provider when comparing creation times. */
const CLOCK_SKEW_MS = 10 * 60_000;

interface SubmissionRecord extends BatchSubmission {
  /** Row indexes the batch holds a request for. */
  included: number[];
  createdAt: string;
  /** Input images an earlier release uploaded for the job's lines alone (file ids), deleted when the job ends. */
  imageFiles?: string[];
}

/**
 * Runs `work` with a heartbeat every few seconds, so a dead worker's job is retried elsewhere. The
 * fence given to `work` sees every beat: a paid step (creating a batch) first proves the attempt is
 * still current (activities/attemptFence.ts), so a worker frozen mid-submit that wakes after the
 * server timed its attempt out submits nothing (issue 23).
 */
async function withHeartbeat<T>(label: string, work: (fence: AttemptFence) => Promise<T>): Promise<T> {
  const context = Context.current();
  const fence = new AttemptFence(context, label);
  const timer = setInterval(() => {
    fence.beat();
    context.heartbeat();
  }, HEARTBEAT_MS);
  try {
    return await work(fence);
  } finally {
    clearInterval(timer);
  }
}

function failure(err: unknown, secrets: readonly string[], classify: (err: unknown) => ClassifiedError): ApplicationFailure {
  if (err instanceof ApplicationFailure) return err;
  const classified = err instanceof ClassifiedError ? err : classify(err);
  return ApplicationFailure.create({
    type: classified.errorType,
    message: boundedMessage(redactSecrets(classified.message, secrets)),
    nonRetryable: classified.kind !== 'retryable',
  });
}

// ---- planning (orchestrator queue) ---------------------------------------------------------------

export interface PlanBatchJobsInput {
  runId: string;
  outputDir: string;
  filterRows?: string;
  backend: BatchBackend;
  phaseId: string;
  round: number;
  fallback: BatchFallback;
  maxRowsPerJob?: number;
  model?: string;
  numImages?: number;
}

export const MULTI_TURN_REFUSED =
  "a multi-turn row cannot go through a provider batch (each turn edits the previous turn's output); run it without --batch, or with --batch-fallback direct";

/**
 * Groups the selected rows that still need a call into jobs (one manifest each). Rows a batch of
 * this phase already failed are left to the fallback; multi-turn rows go to the direct path, or are
 * failed when the fallback is `fail`.
 */
export function createBatchPlanningActivities() {
  return {
    async planBatchJobs(input: PlanBatchJobsInput): Promise<BatchPlan> {
      const storage = openStorage(input.outputDir);
      const selected = rowSelector(input.filterRows);
      const stateOf = await ledgerReader(input.outputDir);
      // A provider that answers one image per request (Gemini) makes N requests per row for --num-images N.
      const batch = batchCapability(input.backend);
      const callsPerRow = batch.requestsPerRow(Math.max(1, input.numImages ?? 1));
      const limit = Math.floor(batch.limits.maxRequests / callsPerRow);
      const perJob = Math.max(1, Math.min(input.maxRowsPerJob ?? limit, limit));
      const plan: BatchPlan = { jobs: [], multiTurnDirect: 0, multiTurnRefused: 0, retried: {} };
      const retried = (state: Awaited<ReturnType<typeof stateOf>>) => {
        if (state.status === 'failed') plan.retried[state.errorType] = (plan.retried[state.errorType] ?? 0) + 1;
      };
      // A batch with one endpoint (OpenAI): edits and text-to-image rows go in separate jobs.
      const open = new Map<string, JobManifest['rows']>();
      const flush = async (kind: string) => {
        const rows = open.get(kind);
        open.delete(kind);
        if (!rows?.length) return;
        const jobId = `${input.runId}#${input.phaseId}-r${input.round}j${plan.jobs.length}`;
        await storage.write(jobKey({ jobId }, 'rows'), JSON.stringify({ rows, plannedAt: new Date().toISOString() } satisfies JobManifest));
        plan.jobs.push({ jobId, rows: rows.length });
      };
      for await (const row of allPlanRows(input.outputDir)) {
        if (!selected(row.position)) continue;
        const state = await stateOf(row);
        if (state.status === 'ok') continue;
        if (state.entry?.status === 'failed' && state.entry.info?.batchPhase === input.phaseId) continue;
        if (row.turns.length > 1) {
          if (input.round > 0) continue;
          if (input.fallback === 'direct') plan.multiTurnDirect += 1;
          else {
            plan.multiTurnRefused += 1;
            retried(state);
            const identity = { index: row.index, position: row.position, runId: input.runId, model: input.model ?? '', digest: row.digest };
            await RunStore.open(input.outputDir).writeEntry(
              ledgerEntry(identity, state.entry, {
                status: 'failed',
                errorType: ErrorTypes.inputError,
                error: `row ${row.index} (${row.where}): ${MULTI_TURN_REFUSED}`,
                info: { batchPhase: input.phaseId },
              }),
            );
          }
          continue;
        }
        retried(state);
        const kind = batch.oneEndpointPerBatch && row.images.length === 0 ? 'generate' : 'edit';
        const rows = open.get(kind) ?? [];
        rows.push({ position: row.position, index: row.index });
        open.set(kind, rows);
        if (rows.length >= perJob) await flush(kind);
      }
      for (const kind of [...open.keys()]) await flush(kind);
      return plan;
    },
  };
}

export interface BatchActivityDeps {
  backend: BatchBackend;
  apiKey: string;
  baseURL?: string | undefined;
}

interface RowAnswer {
  images: Buffer[];
  requestIds: string[];
  usage: Record<string, number>;
}

// ---- the job's activities (provider queue: they need the key) ------------------------------------

/** Ledger facts of a row a batch answered or failed: which batch, which phase. */
function batchInfo(spec: BatchJobSpec, batchId: string): Record<string, string> {
  return { batchId, batchPhase: spec.phaseId, batchJob: spec.jobId };
}

function identityOf(spec: BatchJobSpec, row: { position: number; index: number; digest?: string | undefined; inputs?: PlanRow['inputs'] }) {
  return { index: row.index, position: row.position, runId: spec.runId, model: spec.model, digest: row.digest, inputs: row.inputs };
}

export function createBatchActivities(deps: BatchActivityDeps) {
  // The provider's batch client (and its SDK) loads on the first activity that needs it.
  let loaded: BatchClient | undefined;
  let loading: Promise<BatchClient> | undefined;
  const batchClient = () =>
    (loading ??= batchCapability(deps.backend)
      .client({ apiKey: deps.apiKey, baseURL: deps.baseURL })
      .then((c) => (loaded = c)));
  const secrets = [deps.apiKey];
  const keyScope = uploadKeyScope(deps.backend, deps.apiKey, deps.baseURL);
  // Before the client is loaded, the only possible failure is its loading.
  const fail = (err: unknown) =>
    failure(err, secrets, (e) => (loaded ? loaded.classify(e) : new ClassifiedError('retryable', boundedMessage(String(e)))));

  async function recordFailure(
    spec: BatchJobSpec,
    row: { position: number; index: number; digest?: string | undefined },
    errorType: string,
    error: string,
    batchId: string | undefined,
    prior?: LedgerEntry,
  ): Promise<LedgerEntry> {
    const store = RunStore.open(spec.outputDir);
    const existing = prior ?? (await store.readEntry(row.index));
    // writeEntry keeps an entry that holds the row ok for this request.
    return store.writeEntry(
      ledgerEntry(identityOf(spec, row), existing, {
        status: 'failed',
        errorType,
        error: boundedMessage(redactSecrets(error, secrets)),
        // A row its batch ran was called once (the direct fallback adds its own attempts).
        ...(batchId ? { attempts: 1 } : {}),
        info: batchId ? batchInfo(spec, batchId) : { batchPhase: spec.phaseId, batchJob: spec.jobId },
      }),
    );
  }

  /**
   * The job no longer references the run's uploaded input images (its batch ended and its answers
   * are committed, or it has no batch): recorded, and the last job of the run deletes them
   * (activities/batchUploads.ts). A job of an earlier release deletes its own uploads here.
   */
  async function endJob(spec: BatchJobSpec, leftOver: number, legacyFiles: readonly string[] = []): Promise<void> {
    const client = await batchClient();
    const storage = openStorage(spec.outputDir);
    if (client.deleteFiles) {
      const legacy = new Set([...legacyFiles, ...(await legacyJobUploads(storage, spec))]);
      if (legacy.size) await client.deleteFiles([...legacy]);
      await storage.removeAll(layout.batchUploads(spec.jobId));
    }
    await endJobUploads({ storage, spec, leftOver, keyScope, deleteFiles: client.deleteFiles?.bind(client) });
  }

  /**
   * Commits a row the batch answered through the run store's one protocol (outputs, then the
   * exclusive entry, carrying the row's history), as editRow and the GPU path do. Returns the entry
   * that holds for the row.
   */
  async function commitRow(spec: BatchJobSpec, row: PlanRow, answer: RowAnswer, batchId: string, startedAt: number): Promise<LedgerEntry> {
    const store = RunStore.open(spec.outputDir);
    // Read once: whether the row is done, and the version the commit's one conditional write starts from.
    const started = (await store.readEntryTagged(row.index)) ?? null;
    const prior = started?.entry;
    if (await store.isDone(prior, row.digest)) return prior!;
    if (answer.images.length < row.outputs.length) {
      const error = `batch ${batchId}: asked for ${row.outputs.length} images, the provider returned ${answer.images.length}`;
      return recordFailure(spec, row, ErrorTypes.retryable, error, batchId, prior);
    }
    const outputs = [];
    for (const [k, target] of row.outputs.entries())
      outputs.push({ path: target.path, bytes: await encodeOutput(answer.images[k]!, target.format, spec.encoding) });
    const standard = rowCostUsd(spec.backend, spec.model, spec.params, answer.usage, answer.images.length);
    const costUsd = standard === undefined ? undefined : Math.round(standard * BATCH_PRICE_FACTOR * 1e6) / 1e6;
    const entry = ledgerEntry(identityOf(spec, row), prior, {
      status: 'ok',
      outputImages: row.outputs.map((o) => o.path),
      attempts: 1,
      requestIds: answer.requestIds,
      ...(Object.keys(answer.usage).length ? { usage: answer.usage } : {}),
      ...(costUsd !== undefined ? { costUsd } : {}),
      info: { ...batchInfo(spec, batchId), priced: 'batch' },
      latencyMs: Date.now() - startedAt,
    });
    return (await commitFinishedRow(store, { outputs, entry, startedFrom: started, paid: true })).entry;
  }

  return {
    /**
     * Builds the job's input from its rows (inputs loaded and normalised as on the direct path),
     * uploads it and creates the batch; or returns the batch this job already has.
     */
    async submitBatchJob(spec: BatchJobSpec): Promise<BatchSubmission> {
      return withHeartbeat(`batch job ${spec.jobId}`, async (fence) => {
        const storage = openStorage(spec.outputDir);
        try {
          const client = await batchClient();
          const recorded = await readJson<SubmissionRecord>(storage, jobKey(spec, 'submitted'));
          if (recorded) {
            // An attempt that recorded a job without a batch may have died before ending it.
            if (!recorded.batchId) await endJob(spec, recorded.leftOver, recorded.imageFiles);
            const { included: _i, createdAt: _c, imageFiles: _f, ...submission } = recorded;
            return submission;
          }
          const manifest = await readJson<JobManifest>(storage, jobKey(spec, 'rows'));
          if (!manifest)
            throw new ClassifiedError('configError', `batch job ${spec.jobId}: its manifest ${jobKey(spec, 'rows')} is missing`);
          const submission: SubmissionRecord = {
            requests: 0,
            rows: 0,
            alreadyDone: 0,
            inputErrors: 0,
            leftOver: 0,
            included: [],
            createdAt: new Date().toISOString(),
          };
          // Only a retry can find a batch an earlier attempt of this job created (a job id is new
          // with each run); the first attempt skips the lookup.
          const since = (Date.parse(manifest.plannedAt ?? '') || 0) - CLOCK_SKEW_MS;
          const attempt = Context.current().info.attempt;
          const retried = attempt > 1;
          const tagged = retried ? await client.findTagged(spec, since) : undefined;
          const requests: { key: string; body: unknown }[] = [];
          let bytes = 0;
          // Content-addressed uploads of the input images, shared by the run's jobs (sha256 of the
          // normalised PNG -> file id, recorded as soon as it is made): this job reuses what another
          // job or an earlier attempt of this one uploaded (activities/batchUploads.ts).
          const upload = client.uploadImage?.bind(client);
          const reuseMs = batchCapability(spec.backend).uploadReuseMs;
          const refOf = async (png: Buffer): Promise<ImageRef> =>
            upload ? { fileId: await sharedUpload({ storage, spec, attempt, keyScope, upload, png, reuseMs }) } : png;
          // Rows sharing a source image share its normalisation and its reference: each distinct
          // image is decoded, fitted and hashed once per job, not once per row (20,000 rows over a
          // few images would otherwise decode 20,000 1024² images to learn they are the same few).
          const byImage = new Map<string, Promise<ImageRef>>();
          const shared = (image: DatasetImageRef, role: 'input' | 'mask', load: () => Promise<{ png: Buffer }>): Promise<ImageRef> => {
            const source = image.source.length > 512 ? createHash('sha256').update(image.source).digest('hex') : image.source;
            const key = `${role}\0${image.kind}\0${source}`;
            let ref = byImage.get(key);
            if (!ref) {
              ref = load().then((loaded) => refOf(loaded.png));
              // A failed load is this row's input error, and every row's that shares the image.
              ref.catch(() => undefined);
              byImage.set(key, ref);
            }
            return ref;
          };
          const limits = batchCapability(spec.backend).limits;
          const caps = capabilities(spec.backend, spec.model);
          for (const ref of manifest.rows) {
            const row = await readPlanRow(spec.outputDir, ref.position);
            if (await completedEntry(spec.outputDir, row.index, row.digest)) {
              submission.alreadyDone += 1;
              continue;
            }
            if (tagged) {
              // The batch exists (an earlier attempt died before recording it): its rows are the
              // ones not done, in manifest order, as that attempt saw them.
              submission.included.push(row.index);
              continue;
            }
            let lines: { key: string; body: unknown }[];
            try {
              checkRow(row, { numImages: row.outputs.length });
              await checkOutputsWritable(storage, row);
              if (row.images.length > caps.maxInputImages) {
                throw new ClassifiedError(
                  'inputError',
                  `row ${row.index} has ${row.images.length} input images; ${spec.model} takes at most ${caps.maxInputImages}`,
                );
              }
              const sources = {
                cacheDir: spec.imageCacheDir,
                runDir: spec.outputDir,
                ...(spec.download ? { download: spec.download } : {}),
              };
              const inputs: ImageRef[] = [];
              for (const image of row.images)
                inputs.push(await shared(image, 'input', () => loadInputImage(image, { ...sources, limits: caps.inputLimits })));
              const mask = row.mask ? await shared(row.mask, 'mask', () => loadInputImage(row.mask!, sources)) : undefined;
              lines = client.requests(row, inputs, mask, spec);
            } catch (err) {
              if (err instanceof ClassifiedError && err.kind === 'inputError') {
                submission.inputErrors += 1;
                await recordFailure(spec, row, ErrorTypes.inputError, err.message, undefined);
                continue;
              }
              throw err;
            }
            const size = lines.reduce((n, l) => n + JSON.stringify(l.body).length + 1, 0);
            if (requests.length + lines.length > limits.maxRequests || bytes + size > limits.maxFileBytes) {
              // Over the provider's file limits: left for the next round's job.
              submission.leftOver += 1;
              continue;
            }
            requests.push(...lines);
            bytes += size;
            submission.included.push(row.index);
          }
          if (tagged) {
            submission.batchId = tagged;
            submission.found = true;
          } else if (requests.length) {
            // The paid step: only the attempt the server still waits for makes it.
            await fence.ensureCurrent('the batch submit');
            const created = await client.create(spec, requests, bytes);
            submission.batchId = created.batchId;
            if (created.inputFileId) submission.inputFileId = created.inputFileId;
          }
          submission.rows = submission.included.length;
          submission.requests = requests.length;
          await storage.write(jobKey(spec, 'submitted'), JSON.stringify(submission));
          // No batch (every row was done or refused): the job needs none of the run's uploads.
          if (!submission.batchId) await endJob(spec, submission.leftOver);
          const { included: _i, createdAt: _c, imageFiles: _f, ...result } = submission;
          return result;
        } catch (err) {
          throw fail(err);
        }
      });
    },

    async pollBatchJob(args: { backend: BatchBackend; batchId: string }): Promise<BatchStatus> {
      try {
        return await (await batchClient()).status(args.batchId);
      } catch (err) {
        throw fail(err);
      }
    },

    /**
     * Downloads the batch's answers and commits each row: outputs and a ledger entry priced at
     * batch rates, or a failure with the provider's reason. Rows already committed (an earlier
     * attempt of this activity) are skipped, so a retry finishes the job without double work.
     */
    async collectBatchJob(args: { spec: BatchJobSpec; batchId: string }): Promise<BatchJobResult> {
      const { spec, batchId } = args;
      return withHeartbeat(`batch job ${spec.jobId}`, async () => {
        try {
          const client = await batchClient();
          const storage = openStorage(spec.outputDir);
          const recorded = await readJson<SubmissionRecord>(storage, jobKey(spec, 'submitted'));
          const manifest = await readJson<JobManifest>(storage, jobKey(spec, 'rows'));
          const positions = new Map((manifest?.rows ?? []).map((r) => [r.index, r.position]));
          const included = new Set(recorded?.included ?? positions.keys());
          const startedAt = Date.parse(recorded?.createdAt ?? '') || Date.now();
          const status = await client.status(batchId);
          const result: BatchJobResult = {
            jobId: spec.jobId,
            batchId,
            providerStatus: status.providerStatus,
            ok: 0,
            failedByType: {},
            inputErrors: recorded?.inputErrors ?? 0,
            leftOver: recorded?.leftOver ?? 0,
          };
          const count = (type: string) => (result.failedByType[type] = (result.failedByType[type] ?? 0) + 1);
          const answered = new Set<number>();
          const partial = new Map<number, { parts: Map<number, LineOutcome> }>();
          const rowOf = async (index: number) => readPlanRow(spec.outputDir, positions.get(index)!);

          const finish = async (index: number, outcomes: LineOutcome[]) => {
            answered.add(index);
            const row = await rowOf(index);
            const failed = outcomes.find((o): o is Extract<LineOutcome, { ok: false }> => !o.ok);
            if (failed) {
              if (await completedEntry(spec.outputDir, row.index, row.digest)) return void (result.ok += 1);
              await recordFailure(spec, row, failed.errorType, `batch ${batchId}: ${failed.error}`, batchId);
              return void count(failed.errorType);
            }
            const answer: RowAnswer = { images: [], requestIds: [], usage: {} };
            for (const o of outcomes as Extract<LineOutcome, { ok: true }>[]) {
              answer.images.push(...(outcomes.length > 1 ? o.images.slice(0, 1) : o.images));
              if (o.requestId) answer.requestIds.push(o.requestId);
              for (const [k, v] of Object.entries(o.usage ?? {})) answer.usage[k] = (answer.usage[k] ?? 0) + v;
            }
            const entry = await commitRow(spec, row, answer, batchId, startedAt);
            if (entry.status === 'ok') {
              result.ok += 1;
              // A row another attempt committed is counted, its cost not again.
              if (entry.info?.batchJob === spec.jobId && entry.costUsd !== undefined)
                result.costUsd = Math.round(((result.costUsd ?? 0) + entry.costUsd) * 1e6) / 1e6;
            } else count(entry.errorType ?? ErrorTypes.retryable);
          };

          await client.results(batchId, async (key, outcome) => {
            const parsed = parseBatchRequestKey(key);
            if (!parsed || !positions.has(parsed.index) || answered.has(parsed.index)) return;
            if (parsed.call === undefined) return finish(parsed.index, [outcome]);
            const row = await rowOf(parsed.index);
            const slot = partial.get(parsed.index) ?? { parts: new Map<number, LineOutcome>() };
            slot.parts.set(parsed.call, outcome);
            partial.set(parsed.index, slot);
            if (slot.parts.size >= row.outputs.length) {
              partial.delete(parsed.index);
              await finish(
                parsed.index,
                [...slot.parts.entries()].sort((a, b) => a[0] - b[0]).map(([, o]) => o),
              );
            }
          });
          // Rows the batch never answered (it expired, was cancelled or failed as a whole).
          for (const index of included) {
            if (answered.has(index)) continue;
            const row = await rowOf(index);
            if (await completedEntry(spec.outputDir, row.index, row.digest)) {
              result.ok += 1;
              continue;
            }
            await recordFailure(
              spec,
              row,
              ErrorTypes.retryable,
              `batch ${batchId} ended ${status.providerStatus} without an answer for this row${status.error ? ` (${status.error})` : ''}`,
              batchId,
            );
            count(ErrorTypes.retryable);
          }
          // Every answer is committed: the job needs none of the run's uploads any more.
          await endJob(spec, result.leftOver, recorded?.imageFiles);
          return result;
        } catch (err) {
          throw fail(err);
        }
      });
    },

    /** The provider refused the job's batch: every row of the job not done is recorded with the reason. */
    async failBatchJob(args: { spec: BatchJobSpec; errorType: string; error: string }): Promise<BatchJobResult> {
      const { spec } = args;
      return withHeartbeat(`batch job ${spec.jobId}`, async () => {
        const manifest = await readJson<JobManifest>(openStorage(spec.outputDir), jobKey(spec, 'rows'));
        const result: BatchJobResult = { jobId: spec.jobId, ok: 0, failedByType: {}, inputErrors: 0, leftOver: 0 };
        for (const ref of manifest?.rows ?? []) {
          const row = await readPlanRow(spec.outputDir, ref.position);
          if (await completedEntry(spec.outputDir, row.index, row.digest)) {
            result.ok += 1;
            continue;
          }
          await recordFailure(spec, row, args.errorType, args.error, undefined);
          result.failedByType[args.errorType] = (result.failedByType[args.errorType] ?? 0) + 1;
        }
        // No batch of this job holds the run's uploads (its submit was refused or ran out of tries).
        try {
          await endJob(spec, result.leftOver);
        } catch (err) {
          throw fail(err);
        }
        return result;
      });
    },

    /** Cancels the job's batch at the provider (found by id, or by its tag when the id was never recorded). */
    async cancelBatchJob(args: { spec: BatchJobSpec; batchId?: string }): Promise<{ batchId?: string; providerStatus?: string }> {
      try {
        const client = await batchClient();
        const storage = openStorage(args.spec.outputDir);
        const manifest = await readJson<JobManifest>(storage, jobKey(args.spec, 'rows'));
        const since = (Date.parse(manifest?.plannedAt ?? '') || 0) - CLOCK_SKEW_MS;
        const batchId =
          args.batchId ??
          (await readJson<SubmissionRecord>(storage, jobKey(args.spec, 'submitted')))?.batchId ??
          (await client.findTagged(args.spec, since));
        if (!batchId) {
          // Cancelled before it had a batch: it will never name the run's uploads, so it ends here
          // (or the other jobs of its round, waiting for its `ended` record, would keep them forever).
          await endJob(args.spec, 0);
          return {};
        }
        const status = await client.status(batchId);
        if (!status.terminal) await client.cancel(batchId);
        return { batchId, providerStatus: (await client.status(batchId)).providerStatus };
      } catch (err) {
        throw fail(err);
      }
    },
  };
}

export type BatchActivities = ReturnType<typeof createBatchActivities>;
export type BatchPlanningActivities = ReturnType<typeof createBatchPlanningActivities>;
