import { concurrencyOf, pollInterval, portOption, type ProviderSpec } from '../spec';
import { falTable } from './models';

export const falSpec = {
  // FAL_KEY is the name fal's own clients read.
  env: { keys: ['FAL_KEY'], baseUrl: 'FAL_BASE_URL' },
  table: falTable,
  // FAL_CONCURRENCY: the account's concurrency limit (fal's default for a new account is 2).
  create: async ({ apiKey, baseURL, env }) =>
    (await import('./adapter')).createFalProvider({
      apiKey,
      baseURL,
      ...pollInterval(env.FAL_POLL_INTERVAL_MS),
      ...concurrencyOf('FAL_CONCURRENCY', env.FAL_CONCURRENCY),
    }),
  listing: { tableOnly: 'fal.ai has no model list endpoint for API keys: table only (any endpoint id can be used)' },
  standin: {
    start: async (port) => (await import('./standin')).startFalStandin(portOption(port)),
    env: (url) => ({ FAL_KEY: 'fal-standin', FAL_BASE_URL: url }),
    note: 'then: atelier edit --backend fal --model fal-ai/flux-pro/kontext ...',
  },
} satisfies ProviderSpec;
