import { UsageError } from '../../../lib/shared/errors';
import type { ProviderSpec } from '../spec';
import { azureTable } from './models';

// Azure's stand-in (./standin.ts) is the OpenAI stand-in in Azure's URL shape; tests start it, and
// `atelier standin` does not offer it (`atelier standin openai` serves the same rules).

export const azureSpec = {
  // The "base URL" is the resource endpoint, which Azure needs (no default); OPENAI_API_VERSION too.
  env: { keys: ['AZURE_OPENAI_API_KEY'], baseUrl: 'AZURE_OPENAI_ENDPOINT' },
  table: azureTable,
  create: async ({ apiKey, baseURL, env }) => {
    // Without OPENAI_API_VERSION: Azure's v1 API, which takes none.
    const apiVersion = env.OPENAI_API_VERSION || undefined;
    if (!baseURL) {
      throw new UsageError(
        'Azure OpenAI needs AZURE_OPENAI_ENDPOINT (https://<resource>.openai.azure.com) in the worker environment, besides AZURE_OPENAI_API_KEY (and OPENAI_API_VERSION only for a dated api-version instead of the v1 API)',
      );
    }
    return (await import('./adapter')).createAzureOpenAIProvider({ apiKey, endpoint: baseURL, apiVersion });
  },
  listing: {
    tableOnly:
      'Azure deployments are listed by the management API, not the data-plane key: models by ATELIER_AZURE_DEPLOYMENTS, from the OpenAI table',
  },
} satisfies ProviderSpec;
