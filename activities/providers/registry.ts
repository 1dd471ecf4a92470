import { API_BACKENDS, type ApiBackend } from '../../lib/shared/backends';
import { UsageError } from '../../lib/shared/errors';
import type { CatalogOptions, ListedModel } from './catalog';
import type { ImageEditProvider } from './provider';

/** What a factory gets: the credential and base URL found in the worker environment, and the rest of it. */
interface ProviderContext {
  apiKey: string;
  baseURL: string | undefined;
  env: NodeJS.ProcessEnv;
}

interface AdapterEntry {
  /**
   * The adapter. Each imports its module (and with it its SDK: openai, @google/genai) when first
   * called, so a process loads only the SDKs of the queues it serves (see test/startup.e2e.test.ts).
   */
  create(context: ProviderContext): Promise<ImageEditProvider>;
}

/**
 * A backend either lists its models (the catalogue at planning and `atelier models` ask it) or says
 * why it is table only: one of the two, so a new backend cannot leave the question open.
 */
type ProviderEntry = AdapterEntry &
  (
    | { list(options: CatalogOptions): Promise<ListedModel[]>; tableOnly?: never }
    | { list?: never; /** Why `atelier models` shows the table only for this backend (no list endpoint for its keys). */ tableOnly: string }
  );

function pollInterval(value: string | undefined): { pollIntervalMs?: number } {
  const ms = Number(value);
  return ms > 0 ? { pollIntervalMs: ms } : {};
}

function concurrencyOf(value: string | undefined): { concurrency?: number } {
  if (value === undefined || value === '') return {};
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`FAL_CONCURRENCY must be a whole number of at least 1, not ${JSON.stringify(value)}`);
  return { concurrency: n };
}

/**
 * The provider registry: each backend of lib/backends.ts with its adapter. A backend added there
 * without an entry here does not compile.
 */
export const PROVIDERS: Record<ApiBackend, ProviderEntry> = {
  openai: {
    create: async ({ apiKey, baseURL }) => (await import('./openai')).createOpenAIProvider({ apiKey, baseURL }),
    list: async (options) => (await import('./catalog')).listOpenAIModels(options),
  },
  gemini: {
    create: async ({ apiKey, baseURL }) => (await import('./gemini')).createGeminiProvider({ apiKey, baseURL }),
    list: async (options) => (await import('./catalog')).listGeminiModels(options),
  },
  openrouter: {
    create: async ({ apiKey, baseURL }) => (await import('./openrouter')).createOpenRouterProvider({ apiKey, baseURL }),
    // Image-output models only (`output_modalities=image`: the list holds text models by default).
    list: async (options) => (await import('./catalog')).listOpenRouterImageModels(options),
  },
  modelscope: {
    // How often a submitted task is polled (ModelScope suggests a few seconds).
    create: async ({ apiKey, baseURL, env }) =>
      (await import('./modelscope')).createModelScopeProvider({ apiKey, baseURL, ...pollInterval(env.MODELSCOPE_POLL_INTERVAL_MS) }),
    tableOnly: 'ModelScope has no model list endpoint: table only',
  },
  azure: {
    create: async ({ apiKey, baseURL, env }) => {
      // Without OPENAI_API_VERSION: Azure's v1 API, which takes none.
      const apiVersion = env.OPENAI_API_VERSION || undefined;
      if (!baseURL) {
        throw new UsageError(
          'Azure OpenAI needs AZURE_OPENAI_ENDPOINT (https://<resource>.openai.azure.com) in the worker environment, besides AZURE_OPENAI_API_KEY (and OPENAI_API_VERSION only for a dated api-version instead of the v1 API)',
        );
      }
      return (await import('./azure')).createAzureOpenAIProvider({ apiKey, endpoint: baseURL, apiVersion });
    },
    tableOnly:
      'Azure deployments are listed by the management API, not the data-plane key: models by ATELIER_AZURE_DEPLOYMENTS, from the OpenAI table',
  },
  vertex: {
    // GOOGLE_CLOUD_PROJECT is not a key: it selects project mode (ADC) when VERTEX_API_KEY is absent.
    create: async ({ baseURL, env }) =>
      (await import('./vertex')).createVertexProvider({
        apiKey: env.VERTEX_API_KEY || undefined,
        project: env.GOOGLE_CLOUD_PROJECT,
        location: env.GOOGLE_CLOUD_LOCATION,
        baseURL,
      }),
    tableOnly: 'Vertex AI: the Gemini image models of the table (publisher models are not listed per project)',
  },
  fal: {
    // FAL_CONCURRENCY: the account's concurrency limit (fal's default for a new account is 2).
    create: async ({ apiKey, baseURL, env }) =>
      (await import('./fal')).createFalProvider({
        apiKey,
        baseURL,
        ...pollInterval(env.FAL_POLL_INTERVAL_MS),
        ...concurrencyOf(env.FAL_CONCURRENCY),
      }),
    tableOnly: 'fal.ai has no model list endpoint for API keys: table only (any endpoint id can be used)',
  },
};

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
  return PROVIDERS[backend].create({ apiKey, baseURL: env[names.baseUrl] || undefined, env });
}

/**
 * What the backend's list endpoint says, or undefined where it has none (its entry says why it is
 * table only).
 */
export async function listProviderModels(backend: ApiBackend, options: CatalogOptions): Promise<ListedModel[] | undefined> {
  return PROVIDERS[backend].list?.(options);
}
