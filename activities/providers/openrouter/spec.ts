import { portOption, type ProviderSpec } from '../spec';
import { openrouterTable } from './models';

export const openrouterSpec = {
  env: { keys: ['OPENROUTER_API_KEY'], baseUrl: 'OPENROUTER_BASE_URL' },
  table: openrouterTable,
  create: async ({ apiKey, baseURL }) => (await import('./adapter')).createOpenRouterProvider({ apiKey, baseURL }),
  // Image-output models only (`output_modalities=image`: the list holds text models by default).
  listing: {
    list: async (options) => (await import('./list')).listOpenRouterImageModels(options),
    source: 'OpenRouter GET /api/v1/models?output_modalities=image',
  },
  standin: {
    start: async (port) => (await import('./standin')).startOpenRouterStandin(portOption(port)),
    env: (url) => ({ OPENROUTER_API_KEY: 'sk-or-standin', OPENROUTER_BASE_URL: url }),
    note: 'then: atelier edit --backend openrouter --model <an openrouter model of `atelier models`> ...',
  },
} satisfies ProviderSpec;
