// The backends Atelier can send rows to: one entry per cloud API, plus `diffusers` (local models on
// the Python GPU workers). The backend type, the CLI's choices, the workflow input schema's enum and
// the worker's key lookup all derive from this list; the provider registry
// (activities/providers/registry.ts) must then give the new entry its adapter, which the compiler
// checks. No Node imports: workflow code reads the types.

interface ApiBackendEntry {
  /** Worker environment variables that hold its credential, first match wins (never anywhere else). */
  keys: readonly string[];
  /** Worker environment variable that points it at another server (a stand-in, a proxy). */
  baseUrl: string;
}

export const API_BACKENDS = {
  openai: { keys: ['OPENAI_API_KEY'], baseUrl: 'OPENAI_BASE_URL' },
  gemini: { keys: ['GEMINI_API_KEY', 'GOOGLE_API_KEY'], baseUrl: 'GEMINI_BASE_URL' },
  openrouter: { keys: ['OPENROUTER_API_KEY'], baseUrl: 'OPENROUTER_BASE_URL' },
  modelscope: { keys: ['MODELSCOPE_API_KEY'], baseUrl: 'MODELSCOPE_BASE_URL' },
  // The "base URL" is the resource endpoint, which Azure needs (no default); OPENAI_API_VERSION too.
  azure: { keys: ['AZURE_OPENAI_API_KEY'], baseUrl: 'AZURE_OPENAI_ENDPOINT' },
  // Express mode (an API key) or a project with Application Default Credentials. Not GOOGLE_API_KEY:
  // that one already selects the Gemini API, and one key must not start two backends.
  vertex: { keys: ['VERTEX_API_KEY', 'GOOGLE_CLOUD_PROJECT'], baseUrl: 'VERTEX_BASE_URL' },
  // FAL_KEY is the name fal's own clients read.
  fal: { keys: ['FAL_KEY'], baseUrl: 'FAL_BASE_URL' },
} as const satisfies Record<string, ApiBackendEntry>;

/** Cloud APIs, served by TypeScript provider adapters on `api-<backend>` queues. */
export type ApiBackend = keyof typeof API_BACKENDS;
/** Which provider family serves the model activity; each has its own task queue. */
export type Backend = ApiBackend | 'diffusers';

/** The cloud backends, in the registry's order. */
export const API_BACKEND_NAMES = Object.keys(API_BACKENDS) as ApiBackend[];
/** Every `--backend` choice. */
// A non-empty tuple, as zod's enum wants one.
export const BACKEND_NAMES = [...API_BACKEND_NAMES, 'diffusers'] as unknown as readonly [Backend, ...Backend[]];

export function isApiBackend(name: string): name is ApiBackend {
  return Object.hasOwn(API_BACKENDS, name);
}
