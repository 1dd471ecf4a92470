import type { BatchLimits } from '../batchClient';
import { portOption, type ProviderSpec } from '../spec';
import { openaiTable } from './models';

/** OpenAI's batch limits: 50,000 requests and 200 MB per input file (openai-node src/resources/batches.ts). */
export const OPENAI_BATCH_LIMITS: BatchLimits = { maxRequests: 50_000, maxFileBytes: 200 * 1024 * 1024 };

export const openaiSpec = {
  env: { keys: ['OPENAI_API_KEY'], baseUrl: 'OPENAI_BASE_URL', withoutKey: 'or run `npx atelier demo` to try the bundled stand-in' },
  table: openaiTable,
  create: async ({ apiKey, baseURL }) => (await import('./adapter')).createOpenAIProvider({ apiKey, baseURL }),
  listing: {
    list: async (options) => (await import('./list')).listOpenAIModels(options),
    source: 'OpenAI GET /v1/models',
    // A compatible server (--base-url) lists its own models: all of them, except OpenAI's text models.
    imageModels: (listed, compatible) =>
      listed.filter(
        (m) => /image|dall-e/i.test(m.id) || (compatible && !/^(gpt-|o\d|chatgpt-|text-|tts-|whisper|davinci|babbage|omni-)/.test(m.id)),
      ),
    ask: async (options, model) => (await import('./list')).retrieveOpenAIModel(options, model),
  },
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
