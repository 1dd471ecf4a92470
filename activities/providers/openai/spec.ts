import type { BatchLimits } from '../batchClient';
import { portOption, type ProviderSpec } from '../spec';
import { openaiTable } from './models';

/** OpenAI's batch limits: 50,000 requests and 200 MB per input file (openai-node src/resources/batches.ts). */
export const OPENAI_BATCH_LIMITS: BatchLimits = { maxRequests: 50_000, maxFileBytes: 200 * 1024 * 1024 };

export const openaiSpec = {
  backend: 'openai',
  table: openaiTable,
  create: async ({ apiKey, baseURL }) => (await import('./adapter')).createOpenAIProvider({ apiKey, baseURL }),
  listing: { list: async (options) => (await import('./list')).listOpenAIModels(options) },
  batch: {
    limits: OPENAI_BATCH_LIMITS,
    requestsPerRow: () => 1,
    oneEndpointPerBatch: true,
    client: async (deps) => (await import('./batch')).openAIBatchClient(deps),
  },
  standin: {
    start: async (port) => (await import('./standin')).startOpenAIStandin(portOption(port)),
    env: (url) => ({ OPENAI_API_KEY: 'sk-standin', OPENAI_BASE_URL: url }),
    note: 'then: atelier edit --backend openai --model gpt-image-2 ...',
  },
} satisfies ProviderSpec;
