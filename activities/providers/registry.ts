import { API_BACKENDS, type ApiBackend } from '../../lib/shared/backends';
import { UsageError } from '../../lib/shared/errors';
import { azureSpec } from './azure/spec';
import type { CatalogOptions, ListedModel } from './catalog';
import { falSpec } from './fal/spec';
import { geminiSpec } from './gemini/spec';
import { modelscopeSpec } from './modelscope/spec';
import { openaiSpec } from './openai/spec';
import { openrouterSpec } from './openrouter/spec';
import type { ImageEditProvider } from './provider';
import type { BatchCapability, ProviderSpec } from './spec';
import { vertexSpec } from './vertex/spec';

/**
 * The provider registry: one line per provider, its spec (activities/providers/<name>/spec.ts). A
 * backend of lib/shared/backends.ts without a line here does not compile; everything else about a
 * provider (adapter, listing, batch client, table rows, stand-in) lives in its folder and is reached
 * through its spec (test/unit/providerModules.test.ts holds to it).
 */
export const PROVIDERS = {
  openai: openaiSpec,
  gemini: geminiSpec,
  openrouter: openrouterSpec,
  modelscope: modelscopeSpec,
  azure: azureSpec,
  vertex: vertexSpec,
  fal: falSpec,
} satisfies { [B in ApiBackend]: ProviderSpec & { backend: B } };

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
  const names = API_BACKENDS[backend];
  const apiKey = names.keys.map((k) => env[k]).find((v) => v);
  if (!apiKey) {
    throw new UsageError(
      `${names.keys.join(' or ')} is not set in the worker environment; export it (and ${names.baseUrl} to reach another server) before starting the worker` +
        (backend === 'openai' ? ', or run `npx atelier demo` to try the bundled stand-in' : ''),
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
