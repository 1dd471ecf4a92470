import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Storage } from '../storage';
import type { BatchJobSpec } from '../lib/shared/batch';
import { layout } from '../lib/run/runStore';
import type { BatchClient } from './providers/batchClient';

// The input images a run's batch jobs upload to the provider (activities/batch.ts), shared by every
// job of the run's batch phase: each distinct image (sha256 of its normalised PNG) is uploaded once
// per run, not once per job, and deleted at the provider once no job of the run can need it.
//
// Records, in the run's storage under `layout.batchUploads(<runId>#<phase>)/<scope>/`:
// - `claims/<sha256>`: who uploads the image, then its file id. Created exclusively (of two jobs
//   needing the image at once, one uploads it and the other waits for the id), overwritten with the
//   file id once the provider answers.
// - `files/<sha256>.<uuid>`: every upload made, written the moment the provider answers and before
//   the id is published in the claim: whatever happens to a claim (an attempt taking over from one
//   that died, two racing), every upload is recorded, and the cleanup deletes them all.
// The scope is the provider's key and endpoint (a hash: no key is stored): a file another key
// uploaded is not this key's to use. (A batch is polled and collected on whichever worker of the
// provider's queue is free, so the workers of one queue share a key in practice.)
//
// When the uploads are deleted, without a race: each job, once it can no longer reference them (its
// batch ended and its answers are committed, or it was refused, or it needed no batch), writes its
// `ended` record, then reads the `ended` records of every job of its round (the jobs one planning
// created; they run in parallel). The jobs of a round are all known before any starts (their
// manifests are written by planning), and the next round is planned only after every job of this
// one returned (workflows/batchJob.ts), so a job that finds every job of its round ended knows no
// job of the run is submitting or running a batch: it deletes every upload. Of jobs ending at once,
// at least the last to write its record sees all of them (two may both see it and both delete: a
// delete of a file already gone is no error). When a job of the round left rows over for the next
// round, the uploads are kept for it, and its last job deletes them.

/** How often a job waiting for an image another job is uploading looks again. */
const CLAIM_POLL_MS = 250;
/**
 * A claim unchanged this long (on this worker's clock) is taken over: its uploader died (an upload
 * times out after 5 minutes) and no retry of its job took it over.
 */
const CLAIM_STALE_MS = 10 * 60_000;
/** Deletes at the provider in flight at once, when a run's uploads are deleted. */
const DELETE_CONCURRENCY = 8;

interface Claim {
  /** The job and attempt that uploads the image: `<jobId>\n<attempt>`. */
  by: string;
  fileId?: string;
  /** When the provider answered the upload (epoch ms, the uploading worker's clock). */
  uploadedAt?: number;
}

/** The run's batch phase, which the uploads of all its jobs belong to. */
export function uploadLabel(spec: Pick<BatchJobSpec, 'runId' | 'phaseId'>): string {
  return `${spec.runId}#${spec.phaseId}`;
}

/** The records of the uploads this key made for the run's batch phase. */
function scopePrefix(spec: Pick<BatchJobSpec, 'runId' | 'phaseId'>, keyScope: string): string {
  return `${layout.batchUploads(uploadLabel(spec))}${keyScope}/`;
}

/** The key scope of a provider's uploads: its key and endpoint, hashed (the key itself is never stored). */
export function uploadKeyScope(backend: string, apiKey: string, baseURL: string | undefined): string {
  return createHash('sha256')
    .update(`atelier batch uploads\0${backend}\0${baseURL ?? ''}\0${apiKey}`)
    .digest('hex')
    .slice(0, 16);
}

/**
 * The file id of an image for a job's lines: recorded by this run already (another job, or an
 * earlier attempt of this one), being uploaded by another job (waited for), or uploaded now.
 */
export async function sharedUpload(args: {
  storage: Storage;
  spec: BatchJobSpec;
  attempt: number;
  keyScope: string;
  upload: NonNullable<BatchClient['uploadImage']>;
  png: Buffer;
  /** Where the provider deletes uploads by itself: how long after its upload a file may be reused. */
  reuseMs?: number;
}): Promise<string> {
  const { storage, spec, attempt, png } = args;
  const hash = createHash('sha256').update(png).digest('hex');
  const prefix = scopePrefix(spec, args.keyScope);
  const claimKey = `${prefix}claims/${hash}`;
  const me: Claim = { by: `${spec.jobId}\n${attempt}` };
  let seen: { text: string; since: number } | undefined;
  for (;;) {
    const text = (await storage.read(claimKey))?.toString('utf8');
    const claim = text === undefined ? undefined : (JSON.parse(text) as Claim);
    // A file the provider may delete before this job's batch runs is uploaded again (the old one
    // stays recorded under files/, and the cleanup deletes it with the rest).
    const fresh = args.reuseMs === undefined || (claim?.uploadedAt !== undefined && Date.now() - claim.uploadedAt < args.reuseMs);
    if (claim?.fileId && fresh) return claim.fileId;
    if (claim?.fileId) {
      await storage.write(claimKey, JSON.stringify(me));
    } else if (!claim) {
      if (!(await storage.create(claimKey, JSON.stringify(me)))) continue;
    } else {
      const [job, tried] = claim.by.split('\n');
      // An earlier attempt of this job claimed it and died before the upload was recorded (a new
      // attempt starts only once the last one failed or timed out): this attempt uploads it.
      const ownEarlier = job === spec.jobId && Number(tried) < attempt;
      // Stale: unchanged for a while, as this worker saw it (no clocks compared).
      const since = seen && seen.text === text ? seen.since : Date.now();
      seen = { text: text!, since };
      const stale = Date.now() - since >= CLAIM_STALE_MS;
      if (!ownEarlier && !stale) {
        await sleep(CLAIM_POLL_MS);
        continue;
      }
      await storage.write(claimKey, JSON.stringify(me));
    }
    const fileId = await args.upload(png, uploadLabel(spec));
    await storage.write(`${prefix}files/${hash}.${randomUUID()}`, fileId);
    await storage.write(claimKey, JSON.stringify({ ...me, fileId, uploadedAt: Date.now() } satisfies Claim));
    return fileId;
  }
}

/** `<runId>#<phase>-r<round>j` of a job id `…j<n>` (planBatchJobs numbers a round's jobs from 0). */
function roundOf(jobId: string): string | undefined {
  return /^(.*-r\d+j)\d+$/.exec(jobId)?.[1];
}

/** What a job records when it ends: rows it left for the next round (which then reuses the uploads). */
interface JobEnded {
  leftOver: number;
}

/**
 * Records that the job no longer needs the run's uploads and, when every job of its round has
 * ended and none left rows for a next round, deletes them all (see the top of this file).
 */
export async function endJobUploads(args: {
  storage: Storage;
  spec: BatchJobSpec;
  leftOver: number;
  keyScope: string;
  deleteFiles: BatchClient['deleteFiles'];
}): Promise<void> {
  const { storage, spec } = args;
  await storage.write(layout.batchJob(spec.jobId, 'ended'), JSON.stringify({ leftOver: args.leftOver } satisfies JobEnded));
  const round = roundOf(spec.jobId);
  if (round) {
    for (let n = 0; ; n++) {
      const jobId = `${round}${n}`;
      if (!(await storage.stat(layout.batchJob(jobId, 'rows')))) break;
      const text = (await storage.read(layout.batchJob(jobId, 'ended')))?.toString('utf8');
      // A job of the round may still reference the uploads: the last one to end deletes them.
      if (text === undefined) return;
      if ((JSON.parse(text) as JobEnded).leftOver > 0) return;
    }
  } else if (args.leftOver > 0) return;
  if (!args.deleteFiles) return;
  const deleteFiles = args.deleteFiles;
  const prefix = scopePrefix(spec, args.keyScope);
  const files = (await storage.list(`${prefix}files/`)).map((name) => `${prefix}files/${name}`);
  // Each record goes with its file, so a retry after a partial cleanup resumes where it stopped.
  const next = files.values();
  const worker = async () => {
    for (let key = next.next(); !key.done; key = next.next()) {
      const fileId = (await storage.read(key.value))?.toString('utf8');
      if (fileId) await deleteFiles([fileId]);
      await storage.remove(key.value);
    }
  };
  await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, files.length) }, worker));
  await storage.removeAll(prefix);
}
