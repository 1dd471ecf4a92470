import { UsageError } from '../shared/errors';
import type { TableColumn } from './parquetTable';

/** A push the Hub refused or could not take (no token, no access, a branch that moved): the message names the repo. */
export class HubPushError extends UsageError {
  override name = 'HubPushError';
}

export interface HubPushOptions {
  /** `<org>/<name>` of the dataset repo. */
  repo: string;
  /** The branch to commit to (default main); made from main when missing. */
  revision?: string;
  /** Create the repo private (an existing repo keeps its visibility). */
  private?: boolean;
  /** The exported Parquet shards, `train-<i>-of-<n>.parquet`, in order. */
  shards: string[];
  columns: readonly TableColumn[];
  rows: number;
  title: string;
  description?: string;
  /** The card's text below its YAML, for a repo without a README.md. */
  cardBody: string;
  /** Where HF_TOKEN and HF_ENDPOINT are read (default process.env). */
  env?: NodeJS.ProcessEnv;
  onProgress?: (line: string) => void;
  fetch?: typeof fetch;
}

export interface HubPushResult {
  repo: string;
  branch: string;
  commit: string;
  url: string;
  /** The repo did not exist and the push created it. */
  created: boolean;
  uploaded: string[];
  /** Files under data/ of the previous push that the commit removed. */
  deleted: string[];
  /** Bytes of Parquet shards pushed. */
  bytes: number;
}
