import OpenAI, { AzureOpenAI } from 'openai';
import { openAIImagesProvider } from '../openai/adapter';
import type { ImageEditProvider } from '../provider';

// Azure OpenAI: OpenAI's Images API served from an Azure resource. Everything but the client is
// shared with openai/adapter.ts (request fields from the capability table, multipart images, error classes:
// Azure's content filter answers 400 `content_policy_violation`, which classifyOpenAIError reads as
// blocked). The SDK's own retries are off, as for OpenAI: Temporal owns every retry.

const REQUEST_TIMEOUT_MS = 180_000;

export interface AzureOpenAIProviderOptions {
  apiKey: string;
  /** https://<resource>.openai.azure.com (the SDK adds /openai/deployments/<deployment>/...). */
  endpoint: string;
  /**
   * The `api-version` of the dated API (OPENAI_API_VERSION). Absent: the v1 API, which takes none
   * (`{endpoint}/openai/v1/...`, GA since August 2025).
   */
  apiVersion?: string | undefined;
  /** Per-attempt timeout (default 180 s). */
  timeoutMs?: number;
}

/**
 * Azure OpenAI with an api-version: the SDK's AzureOpenAI client, the same Images API and wire body as OpenAI,
 * at `{endpoint}/openai/deployments/{deployment}/images/edits?api-version=...` with an `api-key`
 * header. The row's model is the deployment name (the SDK puts the body's `model` into the path);
 * capabilities and prices come from the model the deployment serves (models.ts, from
 * ATELIER_AZURE_DEPLOYMENTS), so the request takes exactly the fields that model takes.
 */
export function createAzureOpenAIProvider(options: AzureOpenAIProviderOptions): ImageEditProvider {
  const endpoint = options.endpoint.replace(/\/+$/, '');
  if (!options.apiVersion) {
    // The v1 API (learn.microsoft.com, Azure OpenAI v1 API / api-version lifecycle): OpenAI's own
    // paths under /openai/v1, no api-version, the deployment as the body's `model`, so the plain
    // OpenAI client serves every deployment. The key goes as Azure's `api-key` header only.
    const v1 = new OpenAI({
      apiKey: options.apiKey,
      baseURL: `${endpoint}/openai/v1`,
      defaultHeaders: { 'api-key': options.apiKey, Authorization: null },
      maxRetries: 0,
      timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS,
    });
    return openAIImagesProvider('azure', () => v1, [options.apiKey]);
  }
  const apiVersion = options.apiVersion;
  // One client per deployment, created with `deployment` so the path holds it: the SDK (6.30.1)
  // adds the deployment from the body's `model` only for JSON bodies, so a multipart edit without
  // it would go to /openai/images/edits, which Azure answers 404 "Resource not found".
  const clients = new Map<string, AzureOpenAI>();
  const clientFor = (deployment: string): AzureOpenAI => {
    let client = clients.get(deployment);
    if (!client) {
      client = new AzureOpenAI({
        apiKey: options.apiKey,
        // The base URL the SDK would build from `endpoint`, given as baseURL: with `endpoint` the SDK
        // still reads OPENAI_BASE_URL from the process environment and throws when both are set.
        baseURL: `${endpoint}/openai`,
        deployment,
        apiVersion,
        maxRetries: 0,
        timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS,
      });
      clients.set(deployment, client);
    }
    return client;
  };
  return openAIImagesProvider('azure', clientFor, [options.apiKey]);
}
