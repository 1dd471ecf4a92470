import type { BatchLimits } from '../batchClient';
import { portOption, type ProviderSpec } from '../spec';
import { geminiTable } from './models';

/**
 * Gemini's batch limits: inline requests under 20 MB in all, else a JSONL file (the Files API takes
 * 2 GB; Atelier builds the file in memory, so it holds itself to 200 MB and 50,000 requests too).
 */
export const GEMINI_BATCH_LIMITS: BatchLimits = { maxRequests: 50_000, maxFileBytes: 200 * 1024 * 1024, maxInlineBytes: 20 * 1024 * 1024 };

export const geminiSpec = {
  env: { keys: ['GEMINI_API_KEY', 'GOOGLE_API_KEY'], baseUrl: 'GEMINI_BASE_URL' },
  table: geminiTable,
  create: async ({ apiKey, baseURL }) => (await import('./adapter')).createGeminiProvider({ apiKey, baseURL }),
  listing: {
    list: async (options) => (await import('./list')).listGeminiModels(options),
    source: 'Gemini models.list',
    imageModels: (listed) => listed.filter((m) => /image|banana/i.test(m.id)),
    ask: async (options, model) => (await import('./list')).getGeminiModel(options, model),
  },
  batch: {
    limits: GEMINI_BATCH_LIMITS,
    // Gemini answers one image per request: --num-images N is N requests per row.
    requestsPerRow: (numImages) => numImages,
    oneEndpointPerBatch: false,
    client: async (deps) => (await import('./batch')).geminiBatchClient(deps),
    // Files are deleted 48 hours after upload (ai.google.dev/gemini-api/docs/files) and a batch
    // may take 24 hours: a later round names only files uploaded within the last 24.
    uploadReuseMs: 24 * 3600_000,
  },
  standin: {
    start: async (port) => (await import('./standin')).startGeminiStandin(portOption(port)),
    env: (url) => ({ GEMINI_API_KEY: 'standin', GEMINI_BASE_URL: url }),
    note: 'then: atelier edit --backend gemini --model gemini-3.1-flash-image ...',
  },
} satisfies ProviderSpec;
