import type { ProviderSpec } from '../spec';
import { vertexTable } from './models';

// Vertex's stand-in (./standin.ts) is the Gemini stand-in in Vertex's URL shape and auth; tests
// start it, and `atelier standin` does not offer it (`atelier standin gemini` serves the same rules).

export const vertexSpec = {
  // Express mode (an API key) or a project with Application Default Credentials. Not GOOGLE_API_KEY:
  // that one already selects the Gemini API, and one key must not start two backends.
  env: { keys: ['VERTEX_API_KEY', 'GOOGLE_CLOUD_PROJECT'], baseUrl: 'VERTEX_BASE_URL' },
  table: vertexTable,
  // GOOGLE_CLOUD_PROJECT is not a key: it selects project mode (ADC) when VERTEX_API_KEY is absent.
  create: async ({ baseURL, env }) =>
    (await import('./adapter')).createVertexProvider({
      apiKey: env.VERTEX_API_KEY || undefined,
      project: env.GOOGLE_CLOUD_PROJECT,
      location: env.GOOGLE_CLOUD_LOCATION,
      baseURL,
    }),
  listing: { tableOnly: 'Vertex AI: the Gemini image models of the table (publisher models are not listed per project)' },
} satisfies ProviderSpec;
