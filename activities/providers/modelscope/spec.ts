import { pollInterval, portOption, type ProviderSpec } from '../spec';
import { modelscopeTable } from './models';

export const modelscopeSpec = {
  env: { keys: ['MODELSCOPE_API_KEY'], baseUrl: 'MODELSCOPE_BASE_URL' },
  table: modelscopeTable,
  // How often a submitted task is polled (ModelScope suggests a few seconds).
  create: async ({ apiKey, baseURL, env }) =>
    (await import('./adapter')).createModelScopeProvider({ apiKey, baseURL, ...pollInterval(env.MODELSCOPE_POLL_INTERVAL_MS) }),
  listing: { tableOnly: 'ModelScope has no model list endpoint: table only' },
  standin: {
    start: async (port) => (await import('./standin')).startModelScopeStandin(portOption(port)),
    env: (url) => ({ MODELSCOPE_API_KEY: 'ms-standin', MODELSCOPE_BASE_URL: url }),
    note: 'then: atelier edit --backend modelscope --model <a modelscope model of `atelier models`> ...',
  },
} satisfies ProviderSpec;
