import { openAsBlob } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import {
  commitIter,
  createBranch,
  createRepo,
  datasetInfo,
  downloadFile,
  HubApiError,
  listFiles,
  type CommitOperation,
  type CommitOutput,
  type CommitProgressEvent,
} from '@huggingface/hub';
import { parseDocument, stringify } from 'yaml';
import { hubAccess } from '../dataset/hub';
import { UsageError } from '../shared/errors';
import { huggingfaceMetadata, type TableColumn } from './parquetTable';
import { HubPushError, type HubPushOptions, type HubPushResult } from './hubTypes';

export { HubPushError, type HubPushOptions, type HubPushResult } from './hubTypes';

// `atelier export --format hf --push-to-hub <org>/<name>`: the exported folder (data/train-*.parquet)
// goes to a dataset repo on the Hub (or HF_ENDPOINT's mirror) in ONE commit made with
// @huggingface/hub's commit API: the shards as large files (LFS, or Xet where the Hub offers it),
// the dataset card (README.md) whose YAML `configs` and `dataset_info` tell `datasets.load_dataset`
// the split and the Image features, and a delete of every file under data/ the new export does not
// hold, so a re-push leaves no stale shard behind. The commit names its parent: if the branch moved
// while the files went up, the Hub refuses it and nothing changes. The token (HF_TOKEN) goes to
// @huggingface/hub only; no message here carries it.

const REPO_ID = /^[\w.-]+\/[\w.-]+$/;
/** The folder of the exported shards, in the repo as in --out: `datasets` finds `data/train-*` by itself too. */
const DATA_DIR = 'data';

export function parseHubRepoId(value: string): string {
  const repo = value.replace(/^(?:hf:\/\/)?datasets\//, '');
  if (!REPO_ID.test(repo) || repo.includes('..'))
    throw new UsageError(`--push-to-hub ${value}: expected <org>/<name>, a dataset repo id such as acme/edits-out`);
  return repo;
}

/** The features of the Parquet shards' `huggingface` metadata as the card's YAML writes them (datasets' `_to_yaml_list`). */
export function cardFeatures(columns: readonly TableColumn[]): Array<Record<string, string>> {
  const { features } = (JSON.parse(huggingfaceMetadata(columns)) as { info: { features: Record<string, unknown> } }).info;
  const dtype = (feature: unknown): string => {
    const f = feature as { _type?: string; dtype?: string };
    if (f._type === 'Image') return 'image';
    if (f._type === 'Value' && f.dtype) return f.dtype;
    throw new Error(`no card form for feature ${JSON.stringify(feature)}`);
  };
  return Object.entries(features).map(([name, feature]): Record<string, string> =>
    Array.isArray(feature) ? { name, list: dtype(feature[0]) } : { name, dtype: dtype(feature) },
  );
}

/** The card's YAML keys `datasets` reads: one `default` config whose `train` split is data/train-*. */
export function cardMetadata(columns: readonly TableColumn[], rows: number, bytes: number): Record<string, unknown> {
  return {
    dataset_info: {
      features: cardFeatures(columns),
      splits: [{ name: 'train', num_bytes: bytes, num_examples: rows }],
      download_size: bytes,
      dataset_size: bytes,
    },
    configs: [{ config_name: 'default', data_files: [{ split: 'train', path: `${DATA_DIR}/train-*` }] }],
  };
}

/**
 * README.md with the card's metadata: an existing card keeps its text and its other YAML keys
 * (license, tags ...); only `dataset_info` and `configs` are replaced, as `datasets.push_to_hub` does.
 */
export function mergeCard(existing: string | undefined, metadata: Record<string, unknown>, body: string): string {
  const front = existing ? /^---\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)/.exec(existing) : null;
  if (existing && front) {
    const doc = parseDocument(front[1]!);
    if (doc.errors.length === 0 && doc.contents && typeof doc.toJS() === 'object') {
      for (const [key, value] of Object.entries(metadata)) doc.set(key, value);
      return `---\n${doc.toString()}---\n${existing.slice(front[0].length)}`;
    }
  }
  const text = existing && !front ? existing : body;
  return `---\n${stringify(metadata)}---\n${text.startsWith('\n') ? text : `\n${text}`}`;
}

function describeBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KB` : `${n} B`;
}

/** A Hub answer as a message naming the repo, and HF_TOKEN where the token is the problem. */
function pushFailure(repo: string, branch: string, err: unknown, hubUrl: string): HubPushError {
  const where = `--push-to-hub ${repo}`;
  if (err instanceof HubPushError || err instanceof UsageError) return err;
  if (err instanceof HubApiError) {
    // The Hub's message says what it refused; its URL names the route, never the token.
    const said = err.message.replace(/\.\s*URL: .*$/s, '');
    if (err.statusCode === 401 || err.statusCode === 403)
      return new HubPushError(
        `${where}: the Hub answered ${err.statusCode} (${said}): the token in HF_TOKEN cannot write to dataset ${repo}; give a token with write access to it (a fine-grained token needs "write" on the repo or its organisation)`,
      );
    if (err.statusCode === 412)
      return new HubPushError(
        `${where}: ${branch} of dataset ${repo} moved while the files went up (another commit came first); nothing was changed: push again`,
      );
    return new HubPushError(`${where}: the Hub answered ${err.statusCode}: ${said}`);
  }
  return new HubPushError(`${where}: the Hub at ${hubUrl} cannot be reached (${(err as Error).message})`);
}

/** Says what a commit's progress events mean, a line at a time, without repeating itself. */
class PushProgress {
  private readonly said = new Map<string, number>();
  private lastLine = 0;

  constructor(
    private readonly log: (line: string) => void,
    private readonly sizes: Map<string, number>,
  ) {}

  event(e: CommitProgressEvent): void {
    if (e.event === 'phase') {
      this.log(
        e.phase === 'preuploading'
          ? 'push: asking the Hub how to send each file'
          : e.phase === 'uploadingLargeFiles'
            ? 'push: hashing and uploading the shards'
            : 'push: committing',
      );
      return;
    }
    if (e.state !== 'uploading' || !this.sizes.has(e.path)) return;
    const size = this.sizes.get(e.path)!;
    const pct = Math.floor(e.progress * 100);
    const before = this.said.get(e.path);
    // The start and the end of each file, and a line at most every 5 s in between (slow links, big shards).
    if (pct === 100 ? before === 100 : before !== undefined && (pct === before || Date.now() - this.lastLine < 5000)) return;
    this.said.set(e.path, pct);
    this.lastLine = Date.now();
    this.log(
      pct === 100
        ? `push: ${e.path} uploaded (${describeBytes(size)})`
        : before === undefined && pct === 0
          ? `push: uploading ${e.path} (${describeBytes(size)})`
          : `push: ${e.path} ${pct}%`,
    );
  }
}

/**
 * Pushes an exported folder (`--format hf`) to a dataset repo: creates the repo (and the branch) if
 * missing, then one commit that adds the shards and the card and deletes stale files under data/.
 */
export async function pushToHub(options: HubPushOptions): Promise<HubPushResult> {
  const repo = parseHubRepoId(options.repo);
  const branch = options.revision ?? 'main';
  const { hubUrl, accessToken } = hubAccess(options.env);
  if (!accessToken)
    throw new HubPushError(
      `--push-to-hub ${repo}: set HF_TOKEN to a Hugging Face token with write access (none is set; ${hubUrl}/settings/tokens makes one)`,
    );
  const designation = { type: 'dataset' as const, name: repo };
  const common = { hubUrl, accessToken, ...(options.fetch ? { fetch: options.fetch } : {}) };
  const log = options.onProgress ?? (() => undefined);
  try {
    // The repo: created when missing (private with --private); an existing one keeps its visibility.
    let created = false;
    let info = await datasetInfo<'sha'>({ name: repo, additionalFields: ['sha'], ...common }).catch((err: unknown) => {
      // With a token the Hub answers 404 for a repo it cannot show (missing, or private to others).
      if (err instanceof HubApiError && err.statusCode === 404) return undefined;
      throw err;
    });
    if (!info) {
      try {
        await createRepo({ repo: designation, ...(options.private ? { visibility: 'private' as const } : {}), ...common });
      } catch (err) {
        if (err instanceof HubApiError && err.statusCode === 409)
          throw new HubPushError(
            `--push-to-hub ${repo}: the repo exists but the token in HF_TOKEN cannot see it (a private repo of another account); give a token with write access to it`,
          );
        throw err;
      }
      created = true;
      log(`push: created ${options.private ? 'private ' : ''}dataset repo ${repo}`);
      info = await datasetInfo<'sha'>({ name: repo, additionalFields: ['sha'], ...common });
    } else if (options.private && !info.private) {
      log(`push: note: ${repo} already exists and is public; --private applies to a repo being created, so it stays public`);
    }
    // The branch: made from main when missing, as huggingface_hub's push_to_hub(revision=...) does.
    let head: string;
    if (branch === 'main') {
      head = info.sha;
    } else {
      const onBranch = await datasetInfo<'sha'>({ name: repo, revision: branch, additionalFields: ['sha'], ...common }).catch(
        (err: unknown) => {
          if (err instanceof HubApiError && err.statusCode === 404) return undefined;
          throw err;
        },
      );
      if (!onBranch) {
        await createBranch({ repo: designation, branch, ...common });
        log(`push: created branch ${branch} of ${repo}`);
      }
      head = onBranch?.sha ?? (await datasetInfo<'sha'>({ name: repo, revision: branch, additionalFields: ['sha'], ...common })).sha;
    }

    // What the branch holds now: stale shards to delete, and the card to keep the text of.
    const existing = new Set<string>();
    for await (const entry of listFiles({ repo: designation, revision: head, recursive: true, ...common }))
      if (entry.type === 'file') existing.add(entry.path);
    let card: string | undefined;
    if (existing.has('README.md')) {
      const blob = await downloadFile({ repo: designation, path: 'README.md', revision: head, ...common });
      card = blob ? await blob.text() : undefined;
    }

    const sizes = new Map<string, number>();
    const operations: CommitOperation[] = [];
    for (const shard of options.shards) {
      const path = `${DATA_DIR}/${basename(shard)}`;
      sizes.set(path, (await stat(shard)).size);
      // A file-backed Blob: the shard is hashed and sent from disk, never held whole in memory.
      operations.push({ operation: 'addOrUpdate', path, content: await openAsBlob(shard) });
    }
    const bytes = [...sizes.values()].reduce((a, b) => a + b, 0);
    const readme = mergeCard(card, cardMetadata(options.columns, options.rows, bytes), options.cardBody);
    operations.push({ operation: 'addOrUpdate', path: 'README.md', content: new Blob([readme]) });
    const deleted = [...existing].filter((p) => p.startsWith(`${DATA_DIR}/`) && !sizes.has(p)).sort();
    for (const path of deleted) operations.push({ operation: 'delete', path });
    log(
      `push: ${options.shards.length} shard(s), ${describeBytes(bytes)}, to dataset ${repo}@${branch}${created ? '' : ` (on ${head.slice(0, 12)})`}${
        deleted.length ? `, removing ${deleted.length} file(s) of the previous push` : ''
      }`,
    );

    const progress = new PushProgress(log, sizes);
    const iterator = commitIter({
      repo: designation,
      operations,
      title: options.title,
      ...(options.description ? { description: options.description } : {}),
      branch,
      parentCommit: head,
      ...common,
    });
    let step = await iterator.next();
    while (!step.done) {
      progress.event(step.value);
      step = await iterator.next();
    }
    const output = step.value as CommitOutput | undefined;
    if (!output) throw new HubPushError(`--push-to-hub ${repo}: the Hub answered the commit without a commit id`);
    return {
      repo,
      branch,
      commit: output.commit.oid,
      url: `${hubUrl}/datasets/${repo}${branch === 'main' ? '' : `/tree/${encodeURIComponent(branch)}`}`,
      created,
      uploaded: [...sizes.keys(), 'README.md'],
      deleted,
      bytes,
    };
  } catch (err) {
    throw pushFailure(repo, branch, err, hubUrl);
  }
}
