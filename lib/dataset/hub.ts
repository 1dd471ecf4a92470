import { datasetInfo, HubApiError, listFiles } from '@huggingface/hub';
import { asyncBufferFromUrl, cachedAsyncBuffer, type AsyncBuffer } from 'hyparquet';
import { DatasetError } from '../shared/errors';
import type { DatasetHeader, DatasetReadOptions, DatasetRow } from './common';
import { readParquetSources, type ParquetSource } from './parquet';

// `--input hf://datasets/<org>/<name>[@<revision>][/<path>]`: a dataset repo on the Hugging Face
// Hub (or a mirror: HF_ENDPOINT; a private repo: HF_TOKEN, read from the worker's environment and
// never put in the run). @huggingface/hub resolves the revision to its commit and lists the
// Parquet files at that commit; hyparquet reads each one with HTTP Range requests (the footer, then
// only the row groups' column chunks), so planning never downloads the whole repo. Without a path
// the `train` split is read (files named train-* / train.parquet, as `datasets` lays out
// `data/train-00000-of-00002.parquet`); a path picks a folder (a config) or one file.

export interface HubLocation {
  repo: string;
  revision: string;
  path: string;
}

export const isHubLocation = (input: string): boolean => input.startsWith('hf://');

export function parseHubLocation(input: string): HubLocation {
  const m = /^hf:\/\/datasets\/([\w.-]+\/[\w.-]+?)(?:@([^/]+))?(?:\/(.*))?$/.exec(input);
  if (!m) throw new DatasetError(`${input}: expected hf://datasets/<org>/<name>[@<revision>][/<path>] (only dataset repos are read)`);
  return { repo: m[1]!, revision: m[2] ? decodeURIComponent(m[2]) : 'main', path: (m[3] ?? '').replace(/\/+$/, '') };
}

/** Where the Hub is, and the token, as the Python ecosystem reads them. */
export function hubAccess(env: NodeJS.ProcessEnv = process.env): { hubUrl: string; accessToken: string | undefined } {
  return {
    hubUrl: (env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    accessToken: env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || undefined,
  };
}

/** A Hub error as a message that names the repo and what to do. */
function hubFailure(input: string, location: HubLocation, err: unknown, accessToken: string | undefined): DatasetError {
  if (err instanceof HubApiError) {
    const code = (err.data as { error?: unknown } | undefined)?.error;
    if (err.statusCode === 401 || err.statusCode === 403) {
      return new DatasetError(
        `${input}: the Hub answered ${err.statusCode} for dataset ${location.repo}: it does not exist, or it is private or gated and ${
          accessToken ? 'the token in HF_TOKEN has no access to it' : 'needs a token with read access in HF_TOKEN (none is set)'
        }`,
      );
    }
    // The Hub's body says which is missing ("Invalid rev id: v9" / "Repository not found"); the URL would mislead.
    if (err.statusCode === 404 && /rev id|revision/i.test(String(code)))
      return new DatasetError(`${input}: dataset ${location.repo} has no revision "${location.revision}"`);
    if (err.statusCode === 404) return new DatasetError(`${input}: no dataset repo ${location.repo} on ${hubAccess().hubUrl}`);
    return new DatasetError(`${input}: the Hub answered ${err.statusCode}: ${err.message}`);
  }
  return new DatasetError(`${input}: the Hub at ${hubAccess().hubUrl} cannot be reached (${(err as Error).message})`);
}

/** The Parquet files to read at a commit: a file, the files under a folder, or the train split. */
function pickFiles(all: string[], location: HubLocation, input: string): string[] {
  const parquet = all.filter((p) => p.toLowerCase().endsWith('.parquet')).sort();
  if (location.path) {
    if (parquet.includes(location.path)) return [location.path];
    const under = parquet.filter((p) => p.startsWith(`${location.path}/`));
    if (under.length === 0) throw new DatasetError(`${input}: no Parquet files at "${location.path}" in ${location.repo}`);
    return under;
  }
  if (parquet.length === 0) throw new DatasetError(`${input}: dataset ${location.repo} holds no Parquet files`);
  const train = parquet.filter((p) => /^train([-_.]|$)/.test(p.slice(p.lastIndexOf('/') + 1)));
  return train.length > 0 ? train : parquet;
}

/** Counts what the reads cost, for the planning figures. */
export interface HubReadStats {
  commit?: string;
  repoBytes: number;
  bytesRead: number;
  requests: number;
}

export async function* readHubDataset(
  input: string,
  options: DatasetReadOptions,
  onHeader?: (header: DatasetHeader) => void,
  stats: HubReadStats = { repoBytes: 0, bytesRead: 0, requests: 0 },
): AsyncGenerator<DatasetRow> {
  const location = parseHubLocation(input);
  const { hubUrl, accessToken } = hubAccess();
  const credentials = accessToken ? { accessToken } : {};
  let commit: string;
  const sizes = new Map<string, number>();
  try {
    const info = await datasetInfo<'sha'>({
      name: location.repo,
      revision: location.revision,
      hubUrl,
      additionalFields: ['sha'],
      ...credentials,
    });
    commit = info.sha;
    for await (const entry of listFiles({
      repo: { type: 'dataset', name: location.repo },
      revision: commit,
      recursive: true,
      hubUrl,
      ...credentials,
    }))
      if (entry.type === 'file') sizes.set(entry.path, entry.size);
  } catch (err) {
    throw hubFailure(input, location, err, accessToken);
  }
  stats.commit = commit;
  const files = pickFiles([...sizes.keys()], location, input);
  stats.repoBytes = [...sizes.values()].reduce((a, b) => a + b, 0);
  const headers: Record<string, string> = accessToken ? { Authorization: `Bearer ${accessToken}` } : {};
  const sources: ParquetSource[] = files.map((path) => {
    const url = `${hubUrl}/datasets/${location.repo}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`;
    return {
      // Messages and relative image paths name the file at its pinned commit.
      name: `hf://datasets/${location.repo}@${commit}/${path}`,
      shard: path,
      origin: url,
      open: async () => {
        let remote: AsyncBuffer;
        try {
          remote = await asyncBufferFromUrl({ url, byteLength: sizes.get(path)!, requestInit: { headers } });
        } catch (err) {
          throw new DatasetError(`${input}: ${path} cannot be read (${(err as Error).message})`);
        }
        const counted: AsyncBuffer = {
          byteLength: remote.byteLength,
          async slice(start, end) {
            const chunk = await remote.slice(start, end);
            stats.bytesRead += chunk.byteLength;
            stats.requests += 1;
            return chunk;
          },
        };
        return { buffer: cachedAsyncBuffer(counted), close: async () => undefined };
      },
    };
  });
  yield* readParquetSources(sources, options, onHeader, input);
}
