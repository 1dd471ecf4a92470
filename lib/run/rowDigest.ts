import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type { OutputTarget } from './outputNames';
import type { ImageRef } from './plan';
import type { InputIdentity } from './records';
import type { DatasetWorkflowInput } from '../shared/types';

// A row's identity: what it asks the model for. The ledger records the digest a row's outputs were
// made for; when the dataset is edited in place (a new instruction, another image, a row inserted
// above it so indexes shift) the digest no longer matches and the row is done again instead of
// leaving a stale output paired with the new request.

/** The run settings that shape every row's request. */
export type DigestSettings = Pick<DatasetWorkflowInput, 'backend' | 'model' | 'params' | 'numImages' | 'promptEnhance' | 'gpu'>;

/** Where planning learns what an S3 input is now (lib/dataset/inputIdentity.ts: one listing per folder). */
export interface InputIdentities {
  identity(location: string): Promise<InputIdentity | undefined>;
}

/**
 * Local input files stand for their bytes by size and modification time (a stat, not a read, so
 * planning 100k rows stays fast); S3 objects, given their identities, by ETag and size; other
 * references (URLs, data:, and s3:// without identities, as earlier releases digested them) by the
 * reference itself.
 */
async function refIdentity(ref: ImageRef, s3?: Map<string, InputIdentity | undefined>): Promise<unknown> {
  if (ref.kind === 's3' && s3) {
    const found = s3.get(ref.source);
    return found ? [ref.kind, ref.source, found.size, found.etag] : [ref.kind, ref.source, 'missing'];
  }
  if (ref.kind !== 'file') return [ref.kind, ref.source];
  try {
    const info = await stat(ref.source);
    return [ref.kind, ref.source, info.size, Math.round(info.mtimeMs)];
  } catch {
    return [ref.kind, ref.source, 'missing'];
  }
}

type DigestRow = { turns: string[]; images: ImageRef[]; mask?: ImageRef | undefined; outputs: OutputTarget[] };

async function digestOf(row: DigestRow, settings: DigestSettings, s3?: Map<string, InputIdentity | undefined>): Promise<string> {
  const identity = {
    backend: settings.backend,
    model: settings.model,
    params: settings.params,
    numImages: settings.numImages,
    promptEnhance: settings.promptEnhance ?? null,
    gpu: settings.gpu ? { modelType: settings.gpu.modelType, seed: settings.gpu.seed, params: settings.gpu.params } : null,
    turns: row.turns,
    images: await Promise.all(row.images.map((ref) => refIdentity(ref, s3))),
    mask: row.mask ? await refIdentity(row.mask, s3) : null,
    outputs: row.outputs,
  };
  return createHash('sha256').update(JSON.stringify(identity)).digest('hex');
}

/** The row's digest, its S3 inputs taken by reference alone (as earlier releases did). */
export function rowDigest(row: DigestRow, settings: DigestSettings): Promise<string> {
  return digestOf(row, settings);
}

/** A row's digest with its S3 inputs' identities, and what an earlier release recorded for the row. */
export interface RowDigests {
  digest: string;
  /** Each S3 input's ETag and size (absent when the row has none, or one is missing). */
  inputs?: Record<string, InputIdentity>;
  /** The digest an earlier release gave the row (S3 inputs by reference): an entry with it is adopted. */
  legacyDigest?: string;
}

/**
 * The row's digest as planning records it: an S3 input by its ETag and size (a replaced object
 * changes the digest, as a replaced local file does), plus the digest earlier releases gave it.
 */
export async function rowDigests(row: DigestRow, settings: DigestSettings, identities?: InputIdentities): Promise<RowDigests> {
  const refs = [...row.images, ...(row.mask ? [row.mask] : [])].filter((ref) => ref.kind === 's3');
  if (!identities || refs.length === 0) return { digest: await digestOf(row, settings) };
  const s3 = new Map<string, InputIdentity | undefined>();
  for (const ref of refs) s3.set(ref.source, await identities.identity(ref.source));
  const inputs: Record<string, InputIdentity> = {};
  for (const [source, found] of s3) if (found) inputs[source] = found;
  return {
    digest: await digestOf(row, settings, s3),
    ...(Object.keys(inputs).length === s3.size ? { inputs } : {}),
    legacyDigest: await digestOf(row, settings),
  };
}
