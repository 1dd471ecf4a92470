import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ApiBackend } from '../../lib/shared/backends';
import { writeFileAtomic } from '../../storage/atomicFile';
import type { ListedModel } from './catalog';
import { listProviderModels, PROVIDERS } from './registry';
import type { ProviderSpec } from './spec';
import { capabilities, modelStatus } from './models';

// The catalogue the providers feed: before a run sends anything, the provider's own model list
// (OpenAI `GET /v1/models` with `shutdown_date`, Gemini `models.list`, OpenRouter `/api/v1/models`)
// says whether it serves the model. The static table (models.ts) stays the place for prices and
// parameter rules, and the fallback where a backend has no list (ModelScope, Azure, Vertex, fal) or
// the list cannot be read. It runs as an activity on the provider's own queue, because only the
// provider's workers hold its key (a cluster's CLI has none).
//
// Lists are cached per backend, base URL and key for a few hours, in memory and (when the worker has
// one) under its state dir; the cache file is named by a hash of the key, never the key itself.

export interface ModelCheckInput {
  backend: ApiBackend;
  model: string;
  /** The CLI's date (ISO), so ATELIER_NOW reaches the shutdown comparison. */
  now: string;
  /** The run's endpoint tag (`--base-url`): the list is asked of that endpoint's workers. */
  endpoint?: string;
}

export interface ModelCheckResult {
  /**
   * listed: the provider serves it; refused: it does not (reason says why, with a replacement);
   * no-list: the backend has no list for this key (the table decides); unreadable: the list could not be read.
   */
  verdict: 'listed' | 'refused' | 'no-list' | 'unreadable';
  /** Which list answered, e.g. "OpenAI GET /v1/models". */
  source: string;
  /** When that list was read (ISO); older than now when it came from the cache. */
  listedAt?: string;
  cached?: boolean;
  /** refused: the provider's own words and a replacement, one sentence. */
  reason?: string;
  replacement?: string;
  /** A shutdown the provider announces for a model it still serves. */
  warning?: string;
}

export interface ModelCheckOptions {
  backend: ApiBackend;
  apiKey: string;
  baseURL: string | undefined;
  /** Where lists are cached on disk (the worker's state dir); memory only when absent. */
  cacheDir?: string;
  /** How long a list is trusted (default 3 hours). */
  ttlMs?: number;
  /** Tests: replaces the clock used to age the cache. */
  clock?: () => number;
}

export interface ModelCheckActivities {
  checkModelServed(input: ModelCheckInput): Promise<ModelCheckResult>;
}

const DEFAULT_TTL_MS = 3 * 3600_000;

interface CachedList {
  at: number;
  models: ListedModel[];
}

/** Image models of a list, for suggestions (OpenAI's and Gemini's lists hold every model). */
function imageIds(backend: ApiBackend, listed: ListedModel[]): string[] {
  const listing = (PROVIDERS[backend] as ProviderSpec).listing;
  return (listing.imageModels?.(listed, false) ?? listed).map((m) => m.id);
}

/** Edit distance, for "did you mean" on a typo like gpt-imag-2. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/**
 * A replacement for a model the provider does not serve: the table's replacement when the table knows
 * its lifecycle, else the closest image model the provider lists (a typo), else the newest-looking one.
 */
export function suggestReplacement(backend: ApiBackend, model: string, listed: ListedModel[], now: Date): string | undefined {
  const status = modelStatus(backend, model, now);
  if (status.replacement) return status.replacement;
  const candidates = imageIds(backend, listed).filter((id) => modelStatus(backend, id, now).status === 'current');
  if (candidates.length === 0) return undefined;
  const scored = candidates.map((id) => ({ id, d: distance(model.toLowerCase(), id.toLowerCase()) }));
  scored.sort((x, y) => x.d - y.d || x.id.localeCompare(y.id));
  return scored[0]!.id;
}

function day(date: Date): string {
  return date.toISOString().slice(0, 10);
}

/** The message inside a provider's error (OpenAI's `error.message`, a google.rpc body's `message`). */
function providerMessage(err: unknown): string {
  const e = err as { error?: { message?: unknown }; message?: unknown };
  if (typeof e.error?.message === 'string') return e.error.message;
  const text = typeof e.message === 'string' ? e.message : String(err);
  const inner = /"message"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(text);
  return inner ? (JSON.parse(`"${inner[1]}"`) as string) : text;
}

export function createModelCheckActivities(options: ModelCheckOptions): ModelCheckActivities {
  const ttl = options.ttlMs ?? DEFAULT_TTL_MS;
  const clock = options.clock ?? Date.now;
  const keyHash = createHash('sha256')
    .update(`${options.backend}\0${options.baseURL ?? ''}\0${options.apiKey}`)
    .digest('hex')
    .slice(0, 24);
  const cacheFile = options.cacheDir ? join(options.cacheDir, `${options.backend}-${keyHash}.json`) : undefined;
  let memory: CachedList | undefined;

  async function readList(): Promise<{ list: CachedList; cached: boolean } | undefined> {
    const fresh = (c: CachedList | undefined) => c !== undefined && clock() - c.at < ttl && c.at <= clock();
    if (fresh(memory)) return { list: memory!, cached: true };
    if (cacheFile) {
      try {
        const onDisk = JSON.parse(await readFile(cacheFile, 'utf8')) as CachedList;
        if (fresh(onDisk) && Array.isArray(onDisk.models)) {
          memory = onDisk;
          return { list: onDisk, cached: true };
        }
      } catch {
        // No cache yet (or a damaged one): read the list.
      }
    }
    const models = await listProviderModels(options.backend, { apiKey: options.apiKey, baseURL: options.baseURL });
    if (!models) return undefined;
    memory = { at: clock(), models };
    if (cacheFile) await writeFileAtomic(cacheFile, JSON.stringify(memory)).catch(() => undefined);
    return { list: memory, cached: false };
  }

  /** Asks the provider about one id (its spec's `ask`: models.retrieve / models.get): undefined when it serves it, else its words. */
  async function askOne(model: string, source: string): Promise<string | undefined> {
    const ask = (PROVIDERS[options.backend] as ProviderSpec).listing.ask;
    if (!ask) return `${model} is not in ${source}`;
    try {
      // The SDK is imported by the listing on first use, not with this module.
      await ask({ apiKey: options.apiKey, baseURL: options.baseURL }, model);
      return undefined;
    } catch (err) {
      return providerMessage(err);
    }
  }

  return {
    async checkModelServed(input: ModelCheckInput): Promise<ModelCheckResult> {
      const source = (PROVIDERS[options.backend] as ProviderSpec).listing.source;
      if (!source) return { verdict: 'no-list', source: 'the table (this backend has no model list for its key)' };
      const now = new Date(input.now);
      let read: Awaited<ReturnType<typeof readList>>;
      try {
        read = await readList();
      } catch (err) {
        return {
          verdict: 'unreadable',
          source,
          warning: `${source} could not be read (${providerMessage(err).slice(0, 200)}): the table decides`,
        };
      }
      // An OpenAI-compatible server with an empty list says nothing about what it serves.
      if (!read || read.list.models.length === 0) return { verdict: 'no-list', source };
      const meta = { source, listedAt: new Date(read.list.at).toISOString(), cached: read.cached };
      const hit = read.list.models.find((m) => m.id === input.model);
      if (hit) {
        if (hit.shutdownDate && day(now) >= hit.shutdownDate) {
          const replacement = suggestReplacement(options.backend, input.model, read.list.models, now);
          return {
            verdict: 'refused',
            ...meta,
            reason: `${source} gives ${input.model} a shutdown date of ${hit.shutdownDate}${replacement ? `; use ${replacement} instead` : ''}`,
            ...(replacement ? { replacement } : {}),
          };
        }
        return {
          verdict: 'listed',
          ...meta,
          ...(hit.shutdownDate ? { warning: `${options.backend} lists ${input.model} with a shutdown date of ${hit.shutdownDate}` } : {}),
        };
      }
      // Not in the list: the provider's own answer for this id (it may still serve an unlisted alias).
      const words = await askOne(input.model, source);
      if (words === undefined) return { verdict: 'listed', ...meta };
      const replacement = suggestReplacement(options.backend, input.model, read.list.models, now);
      return {
        verdict: 'refused',
        ...meta,
        reason: `${options.backend} does not serve ${input.model} (${source} does not list it; the API answers: "${words}")${replacement ? `; use ${replacement} instead` : ''}`,
        ...(replacement ? { replacement } : {}),
      };
    },
  };
}

/** Whether the table can price this model (for the "price unknown" note). */
export function tableKnowsPrice(backend: ApiBackend, model: string): boolean {
  const { price } = capabilities(backend, model);
  return !!(price.free || price.fromUsage || price.tokens || price.perImage);
}
