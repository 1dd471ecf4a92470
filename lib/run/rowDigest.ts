import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import type { OutputTarget } from './outputNames';
import type { ImageRef } from './plan';
import type { DatasetWorkflowInput } from '../shared/types';

// A row's identity: what it asks the model for. The ledger records the digest a row's outputs were
// made for; when the dataset is edited in place (a new instruction, another image, a row inserted
// above it so indexes shift) the digest no longer matches and the row is done again instead of
// leaving a stale output paired with the new request.

/** The run settings that shape every row's request. */
export type DigestSettings = Pick<DatasetWorkflowInput, 'backend' | 'model' | 'params' | 'numImages' | 'promptEnhance' | 'gpu'>;

/**
 * Local input files stand for their bytes by size and modification time (a stat, not a read, so
 * planning 100k rows stays fast); other references (URLs, s3://, data:) by the reference itself.
 */
async function refIdentity(ref: ImageRef): Promise<unknown> {
  if (ref.kind !== 'file') return [ref.kind, ref.source];
  try {
    const info = await stat(ref.source);
    return [ref.kind, ref.source, info.size, Math.round(info.mtimeMs)];
  } catch {
    return [ref.kind, ref.source, 'missing'];
  }
}

export async function rowDigest(
  row: { turns: string[]; images: ImageRef[]; mask?: ImageRef | undefined; outputs: OutputTarget[] },
  settings: DigestSettings,
): Promise<string> {
  const identity = {
    backend: settings.backend,
    model: settings.model,
    params: settings.params,
    numImages: settings.numImages,
    promptEnhance: settings.promptEnhance ?? null,
    gpu: settings.gpu ? { modelType: settings.gpu.modelType, seed: settings.gpu.seed, params: settings.gpu.params } : null,
    turns: row.turns,
    images: await Promise.all(row.images.map(refIdentity)),
    mask: row.mask ? await refIdentity(row.mask) : null,
    outputs: row.outputs,
  };
  return createHash('sha256').update(JSON.stringify(identity)).digest('hex');
}
