import type { Backend } from '../../lib/shared/backends';
import { UsageError } from '../../lib/shared/errors';
import { azureSpec } from './azure/spec';
import type { CatalogOptions, ListedModel } from './catalog';
import { falSpec } from './fal/spec';
import { geminiSpec } from './gemini/spec';
import { modelscopeSpec } from './modelscope/spec';
import { openaiSpec } from './openai/spec';
import { openrouterSpec } from './openrouter/spec';
import type { ImageEditProvider } from './provider';
import type { BackendEnv, BatchCapability, ProviderSpec } from './spec';
import { vertexSpec } from './vertex/spec';

/**
 * The provider registry: one line per provider, its name and its spec
 * (activities/providers/<name>/spec.ts). This is the one place outside its folder that names a
 * provider: the backend type, `--backend`'s choices, the workflow input's enum, the workers' key
 * lookup and queues all derive from it (the workflow code reads only the types, through
 * lib/shared/backends.ts). Everything else about a provider (the environment variables of its key,
 * adapter, listing, batch client, table rows, stand-in) lives in its folder and is reached through
 * its spec (test/unit/providerModules.test.ts holds to it).
 */
export const PROVIDERS = {
  openai: openaiSpec,
  gemini: geminiSpec,
  openrouter: openrouterSpec,
  modelscope: modelscopeSpec,
  azure: azureSpec,
  vertex: vertexSpec,
  fal: falSpec,
} satisfies Record<string, ProviderSpec>;

/** Cloud APIs, served by TypeScript provider adapters on `api-<backend>` queues. */
export type ApiBackend = keyof typeof PROVIDERS;

/** The cloud backends, in the registry's order. */
export const API_BACKEND_NAMES = Object.keys(PROVIDERS) as ApiBackend[];

/** Every `--backend` choice: the cloud backends, and `diffusers` (local models on the Python GPU workers). */
// A non-empty tuple, as zod's enum wants one.
export const BACKEND_NAMES = [...API_BACKEND_NAMES, 'diffusers'] as unknown as readonly [Backend, ...Backend[]];

export function isApiBackend(name: string): name is ApiBackend {
  return Object.hasOwn(PROVIDERS, name);
}

/** Each backend's worker environment variables (names only), from its spec. */
export const API_BACKENDS: Readonly<Record<ApiBackend, BackendEnv>> = (() => {
  const envs = {} as Record<ApiBackend, BackendEnv>;
  for (const b of API_BACKEND_NAMES) envs[b] = PROVIDERS[b].env;
  return envs;
})();

/** Backends whose batch APIs Atelier drives (`atelier edit --batch`): those whose spec has `batch`. */
export type BatchBackend = { [B in ApiBackend]: (typeof PROVIDERS)[B] extends { batch: BatchCapability } ? B : never }[ApiBackend];

/** The batch backends, in registry order. */
export function batchBackends(): BatchBackend[] {
  return (Object.keys(PROVIDERS) as ApiBackend[]).filter((b): b is BatchBackend => (PROVIDERS[b] as ProviderSpec).batch !== undefined);
}

export function isBatchBackend(backend: string): backend is BatchBackend {
  return (batchBackends() as string[]).includes(backend);
}

export function batchCapability(backend: BatchBackend): BatchCapability {
  return PROVIDERS[backend].batch;
}

/** Builds the provider adapter for a backend from the worker environment (keys never leave it). */
export async function providerFromEnv(backend: ApiBackend, env: NodeJS.ProcessEnv): Promise<ImageEditProvider> {
  const names: BackendEnv = PROVIDERS[backend].env;
  const apiKey = names.keys.map((k) => env[k]).find((v) => v);
  if (!apiKey) {
    throw new UsageError(
      `${names.keys.join(' or ')} is not set in the worker environment; export it (and ${names.baseUrl} to reach another server) before starting the worker` +
        (names.withoutKey ? `, ${names.withoutKey}` : ''),
    );
  }
  return (PROVIDERS[backend] as ProviderSpec).create({ apiKey, baseURL: env[names.baseUrl] || undefined, env });
}

/**
 * What the backend's list endpoint says, or undefined where it has none (its spec says why it is
 * table only).
 */
export async function listProviderModels(backend: ApiBackend, options: CatalogOptions): Promise<ListedModel[] | undefined> {
  return (PROVIDERS[backend] as ProviderSpec).listing.list?.(options);
}
