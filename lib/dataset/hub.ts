import type { HubApiError } from '@huggingface/hub';
import type { AsyncBuffer } from 'hyparquet';
import type * as Yaml from 'yaml';
import { loadOnUse } from '../loadOnUse';
import { DatasetError } from '../shared/errors';
import type { DatasetHeader, DatasetReadOptions, DatasetRow } from './common';
import { readParquetSources, type ParquetSource } from './parquet';

// `--input hf://datasets/<org>/<name>[@<revision>][/<path>]`: a dataset repo on the Hugging Face
// Hub (or a mirror: HF_ENDPOINT; a private repo: HF_TOKEN, read from the worker's environment and
// never put in the run). @huggingface/hub resolves the revision to its commit and lists the
// Parquet files at that commit; hyparquet reads each one with HTTP Range requests (the footer, then
// only the row groups' column chunks), so planning never downloads the whole repo.
//
// What is read follows `datasets`' rules: the repo card's (README.md) YAML `configs` name each
// config's splits and their data files; without them a file's split is in its name or folder
// (`data/train-00000-of-00002.parquet`, `test/part-0.parquet`). Without a path the default config's
// `train` split (or its only split) is read; a path names a config, `<config>/<split>`, a split of
// the default config, a folder or one Parquet file, tried in that order.
//
// A run pins the commit its first plan read (PlanMeta.inputCommit): planning again (a re-run, a
// resume) reads that commit although the branch has moved, so the rows stay the rows already paid for.

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
function hubFailure(
  input: string,
  location: HubLocation,
  err: unknown,
  accessToken: string | undefined,
  apiError: typeof HubApiError,
): DatasetError {
  if (err instanceof apiError) {
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

/** A config of the card: its name and each split's file patterns (relative to the repo root). */
interface CardConfig {
  name: string;
  isDefault: boolean;
  splits: Map<string, string[]>;
}

/** The splits `datasets` recognises by file or folder name when the card names none. */
const CONVENTIONAL_SPLITS = ['train', 'validation', 'test'];

/** A repo path pattern (fsspec glob: `*` within a folder, `**` across folders) as a RegExp. */
function globRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      // `**/` matches no folder too.
      re += pattern[i + 2] === '/' ? '(?:.*/)?' : '.*';
      i += pattern[i + 2] === '/' ? 2 : 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

// The Hub's client, hyparquet and yaml load when an hf:// input is read, not with the CLI.
const yamlModule = loadOnUse<typeof Yaml>('yaml');

/** The `configs` of a card's YAML header, as `datasets` reads them (data_files: a pattern, a list, or per split). */
export function cardConfigs(card: string, where: string): CardConfig[] {
  const front = /^---\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)/.exec(card);
  if (!front) return [];
  let yaml: unknown;
  try {
    yaml = yamlModule().parse(front[1]!);
  } catch (err) {
    throw new DatasetError(`${where}: the YAML header of README.md cannot be read (${(err as Error).message})`);
  }
  const configs = (yaml as { configs?: unknown } | null)?.configs;
  if (!Array.isArray(configs)) return [];
  const strings = (v: unknown): string[] =>
    typeof v === 'string' ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  return configs.map((raw, i) => {
    const c = (raw ?? {}) as { config_name?: unknown; default?: unknown; data_files?: unknown; data_dir?: unknown };
    const name = typeof c.config_name === 'string' ? c.config_name : 'default';
    const dir = typeof c.data_dir === 'string' ? `${c.data_dir.replace(/\/+$/, '')}/` : '';
    const splits = new Map<string, string[]>();
    const files = c.data_files ?? (dir ? `${dir}**` : undefined);
    if (Array.isArray(files) && files.some((f) => f && typeof f === 'object')) {
      for (const entry of files as Array<{ split?: unknown; path?: unknown }>) {
        const split = typeof entry?.split === 'string' ? entry.split : 'train';
        splits.set(split, [...(splits.get(split) ?? []), ...strings(entry?.path).map((p) => (p.startsWith(dir) ? p : dir + p))]);
      }
    } else if (files !== undefined) {
      splits.set(
        'train',
        strings(files).map((p) => (p.startsWith(dir) ? p : dir + p)),
      );
    } else {
      throw new DatasetError(`${where}: config ${i} ("${name}") of the card's configs has no data_files or data_dir`);
    }
    return { name, isDefault: c.default === true || name === 'default', splits };
  });
}

/** Files of the repo by split, by `datasets`' naming conventions (a card without configs). */
function conventionalSplits(parquet: string[]): Map<string, string[]> {
  const splits = new Map<string, string[]>();
  for (const split of CONVENTIONAL_SPLITS) {
    const named = new RegExp(`(^|[/\\-._ 0-9])${split}([\\-._ 0-9/]|$)`);
    const files = parquet.filter(
      (p) => p.split('/').includes(split) || named.test(p.slice(p.lastIndexOf('/') + 1)) || p.startsWith(`${split}/`),
    );
    if (files.length) splits.set(split, files);
  }
  return splits;
}

/** The Parquet files to read at a commit, and what they are (for messages): a split, a folder or a file. */
export function pickHubFiles(
  all: string[],
  configs: CardConfig[],
  location: HubLocation,
  input: string,
  at: string,
): { files: string[]; what: string } {
  const parquet = all.filter((p) => p.toLowerCase().endsWith('.parquet')).sort();
  const matching = (patterns: string[]) => {
    const res = patterns.map(globRegExp);
    return all.filter((p) => res.some((re) => re.test(p))).sort();
  };
  const onlyParquet = (files: string[], what: string) => {
    const other = files.filter((f) => !f.toLowerCase().endsWith('.parquet'));
    if (other.length)
      throw new DatasetError(`${input}: ${what} of dataset ${at} holds ${other[0]}; only Parquet data files are read from the Hub`);
    if (files.length === 0) throw new DatasetError(`${input}: ${what} of dataset ${at} matches no file`);
    return { files, what };
  };
  const defaultConfig = configs.find((c) => c.isDefault) ?? (configs.length === 1 ? configs[0] : undefined);
  const splitsOf = (config: CardConfig | undefined) =>
    config ? new Map([...config.splits].map(([s, patterns]) => [s, matching(patterns)])) : conventionalSplits(parquet);
  const pickSplit = (splits: Map<string, string[]>, split: string | undefined, what: string) => {
    const name = split ?? (splits.has('train') ? 'train' : splits.size === 1 ? [...splits.keys()][0]! : undefined);
    if (name === undefined)
      throw new DatasetError(`${input}: ${what} of dataset ${at} has no train split; name one: ${[...splits.keys()].join(', ')}`);
    return onlyParquet(splits.get(name)!, `split "${name}"${what === 'the repo' ? '' : ` of ${what}`}`);
  };
  const path = location.path;
  if (!path) {
    if (!defaultConfig && configs.length > 0)
      throw new DatasetError(
        `${input}: dataset ${at} has several configs and none is the default; name one: ${configs.map((c) => c.name).join(', ')}`,
      );
    const splits = splitsOf(defaultConfig);
    if (splits.size > 0) return pickSplit(splits, undefined, defaultConfig ? `config "${defaultConfig.name}"` : 'the repo');
    if (parquet.length === 0) throw new DatasetError(`${input}: dataset ${at} holds no Parquet files`);
    return { files: parquet, what: 'every Parquet file' };
  }
  if (parquet.includes(path)) return { files: [path], what: path };
  const [first, second, ...rest] = path.split('/');
  const config = configs.find((c) => c.name === first);
  if (config && rest.length === 0) {
    const splits = splitsOf(config);
    if (second !== undefined && !splits.has(second))
      throw new DatasetError(
        `${input}: config "${config.name}" of dataset ${at} has no split "${second}"; its splits: ${[...splits.keys()].join(', ')}`,
      );
    return pickSplit(splits, second, `config "${config.name}"`);
  }
  const defaultSplits = splitsOf(defaultConfig);
  if (second === undefined && defaultSplits.has(path))
    return pickSplit(defaultSplits, path, defaultConfig ? `config "${defaultConfig.name}"` : 'the repo');
  const under = parquet.filter((p) => p.startsWith(`${path}/`));
  if (under.length > 0) return { files: under, what: `${path}/` };
  const known = [
    configs.length ? `configs: ${configs.map((c) => c.name).join(', ')}` : '',
    defaultSplits.size ? `splits: ${[...defaultSplits.keys()].join(', ')}` : '',
  ].filter(Boolean);
  throw new DatasetError(
    `${input}: dataset ${at} has no config, split, folder or Parquet file "${path}"${known.length ? ` (${known.join('; ')})` : ''}`,
  );
}

/** Counts what the reads cost, for the planning figures; says which commit was read and why. */
export interface HubReadStats {
  /** The commit read. */
  commit?: string;
  /** Where the revision points now (differs from `commit` when a pinned commit was read). */
  head?: string;
  /** A commit to read instead of resolving the revision again: the run's first plan read it. */
  pinned?: string;
  repoBytes: number;
  bytesRead: number;
  requests: number;
}

const FULL_SHA = /^[0-9a-f]{40}$/;

export async function* readHubDataset(
  input: string,
  options: DatasetReadOptions,
  onHeader?: (header: DatasetHeader) => void,
  stats: HubReadStats = { repoBytes: 0, bytesRead: 0, requests: 0 },
): AsyncGenerator<DatasetRow> {
  const location = parseHubLocation(input);
  const { datasetInfo, HubApiError, listFiles } = await import('@huggingface/hub');
  const { asyncBufferFromUrl, cachedAsyncBuffer } = await import('hyparquet');
  const { hubUrl, accessToken } = hubAccess();
  const credentials = accessToken ? { accessToken } : {};
  const headers: Record<string, string> = accessToken ? { Authorization: `Bearer ${accessToken}` } : {};
  let commit: string;
  const sizes = new Map<string, number>();
  let configs: CardConfig[] = [];
  try {
    const info = await datasetInfo<'sha'>({
      name: location.repo,
      revision: location.revision,
      hubUrl,
      additionalFields: ['sha'],
      ...credentials,
    });
    stats.head = info.sha;
    commit = stats.pinned && !FULL_SHA.test(location.revision) ? stats.pinned : info.sha;
    try {
      for await (const entry of listFiles({
        repo: { type: 'dataset', name: location.repo },
        revision: commit,
        recursive: true,
        hubUrl,
        ...credentials,
      }))
        if (entry.type === 'file') sizes.set(entry.path, entry.size);
    } catch (err) {
      if (commit !== info.sha && err instanceof HubApiError && err.statusCode === 404)
        throw new DatasetError(
          `${input}: this run read dataset ${location.repo} at commit ${commit}, which the repo no longer has (its history was rewritten); plan into a new --out to read "${location.revision}" as it is now`,
        );
      throw err;
    }
    if (sizes.has('README.md')) {
      const res = await fetch(`${hubUrl}/datasets/${location.repo}/resolve/${commit}/README.md`, { headers });
      if (!res.ok) throw new DatasetError(`${input}: README.md of dataset ${location.repo} cannot be read (HTTP ${res.status})`);
      configs = cardConfigs(await res.text(), `${input}: README.md`);
    }
  } catch (err) {
    if (err instanceof DatasetError) throw err;
    throw hubFailure(input, location, err, accessToken, HubApiError);
  }
  stats.commit = commit;
  const at = `${location.repo}@${location.revision === commit ? commit : `${location.revision} (commit ${commit})`}`;
  const { files } = pickHubFiles([...sizes.keys()], configs, location, input, at);
  stats.repoBytes = [...sizes.values()].reduce((a, b) => a + b, 0);
  const sources: ParquetSource[] = files.map((path) => {
    const url = `${hubUrl}/datasets/${location.repo}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`;
    return {
      // Messages and relative image paths name the file at its pinned commit.
      name: `hf://datasets/${location.repo}@${commit}/${path}`,
      shard: path,
      origin: url,
      // A footer is a few KB to some hundreds: hyparquet reads the rest of a larger one by itself.
      footerFetchBytes: 64 * 1024,
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
