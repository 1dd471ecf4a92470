import { UsageError } from '../../lib/shared/errors';
import type { BatchClient, BatchClientDeps, BatchLimits } from './batchClient';
import type { CatalogOptions, ListedModel } from './catalog';
import type { ImageEditProvider } from './provider';
import type { ProviderTable } from './table';

// One provider, one spec: each provider folder (activities/providers/<name>/) exports its spec from
// <name>/spec.ts, and registry.ts names it once (its name is its registry key). The spec holds what
// every provider has (where a worker finds its key, its table, its adapter, whether it lists its
// models) and the capabilities only some have (a batch API, a stand-in for `atelier standin`). A spec loads no SDK: adapters, listings and batch clients are
// imported when first called, so a process loads only the SDKs of the queues it serves
// (test/startup.e2e.test.ts, test/unit/providerModules.test.ts).

/** What a factory gets: the credential and base URL found in the worker environment, and the rest of it. */
export interface ProviderContext {
  apiKey: string;
  baseURL: string | undefined;
  env: NodeJS.ProcessEnv;
}

/**
 * A backend either lists its models (the catalogue at planning and `atelier models` ask it) or says
 * why it is table only: one of the two, so a new backend cannot leave the question open.
 */
export type Listing =
  | {
      list(options: CatalogOptions): Promise<ListedModel[]>;
      /** What the list is, for messages ("OpenAI GET /v1/models"). */
      source: string;
      /**
       * The image models of a list that holds every model (OpenAI's, Gemini's); the whole list when
       * absent. `compatible`: the list of a compatible server (`--base-url`), which lists its own models.
       */
      imageModels?(listed: ListedModel[], compatible: boolean): ListedModel[];
      /**
       * Asks the provider about one id its list lacks (its models.get): resolves when it serves it,
       * else throws the provider's error. Absent where the list is the only word.
       */
      ask?(options: CatalogOptions, model: string): Promise<void>;
      tableOnly?: never;
    }
  | {
      list?: never;
      source?: never;
      imageModels?: never;
      ask?: never;
      /** Why `atelier models` shows the table only for this backend (no list endpoint for its keys). */
      tableOnly: string;
    };

/** A provider batch API that `atelier edit --batch` drives (half price, answered within 24 hours). */
export interface BatchCapability {
  limits: BatchLimits;
  /** Requests one row makes for `numImages` outputs (Gemini answers one image per request). */
  requestsPerRow(numImages: number): number;
  /** A batch has one endpoint: edit and text-to-image rows go in separate jobs (OpenAI). */
  oneEndpointPerBatch: boolean;
  /** The provider's batch client; its module (and SDK) loads on the first call. */
  client(deps: BatchClientDeps): Promise<BatchClient>;
  /**
   * How long after its upload a file may still be named by a new job's lines, where the provider
   * deletes uploaded files by itself (Gemini: after 48 hours, and a batch may take 24 to run).
   * Absent: files stay until deleted (OpenAI).
   */
  uploadReuseMs?: number;
}

/** A stand-in of the provider's API on loopback (its contract tests use it; `atelier standin <name>` starts it). */
export interface StandinSpec {
  start(port: number | undefined): Promise<{ baseURL: string; close(): Promise<void> }>;
  /** Environment for `atelier edit` / `atelier worker` (the key: any value the stand-in accepts). */
  env(baseURL: string): Record<string, string>;
  note: string;
}

/** Worker environment variables of a provider: names only (their values never leave the worker). */
export interface BackendEnv {
  /** Variables that hold its credential, first match wins (never anywhere else). */
  readonly keys: readonly string[];
  /** The variable that points it at another server (a stand-in, a proxy). */
  readonly baseUrl: string;
  /** What else a user without a key can do, said when none is set. */
  readonly withoutKey?: string;
}

export interface ProviderSpec {
  readonly env: BackendEnv;
  /** The provider's rows of the model table (<name>/models.ts): limits, parameters, prices, lifecycles. */
  readonly table: ProviderTable;
  /** The adapter, built from the worker environment (keys never leave it). */
  create(context: ProviderContext): Promise<ImageEditProvider>;
  readonly listing: Listing;
  /** Present where Atelier drives the provider's batch API. */
  readonly batch?: BatchCapability;
  /** Present where `atelier standin` offers the provider's stand-in. */
  readonly standin?: StandinSpec;
}

/** `*_POLL_INTERVAL_MS`: how often a submitted task is polled, when set. */
export function pollInterval(value: string | undefined): { pollIntervalMs?: number } {
  const ms = Number(value);
  return ms > 0 ? { pollIntervalMs: ms } : {};
}

/** A whole number of at least 1 from the environment (`FAL_CONCURRENCY`), when set. */
export function concurrencyOf(name: string, value: string | undefined): { concurrency?: number } {
  if (value === undefined || value === '') return {};
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a whole number of at least 1, not ${JSON.stringify(value)}`);
  return { concurrency: n };
}

/** `{ port }` for a stand-in's options when one was asked for. */
export function portOption(port: number | undefined): { port?: number } {
  return port ? { port } : {};
}
