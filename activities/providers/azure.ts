import { AzureOpenAI } from 'openai';
import { openAIImagesProvider } from './openai';
import type { ImageEditProvider } from './provider';

// Azure OpenAI: OpenAI's Images API served from an Azure resource. Everything but the client is
// shared with openai.ts (request fields from the capability table, multipart images, error classes:
// Azure's content filter answers 400 `content_policy_violation`, which classifyOpenAIError reads as
// blocked). The SDK's own retries are off, as for OpenAI: Temporal owns every retry.

const REQUEST_TIMEOUT_MS = 180_000;

export interface AzureOpenAIProviderOptions {
  apiKey: string;
  /** https://<resource>.openai.azure.com (the SDK adds /openai/deployments/<deployment>/...). */
  endpoint: string;
  /** The `api-version` query parameter every Azure OpenAI call needs (OPENAI_API_VERSION). */
  apiVersion: string;
  /** Per-attempt timeout (default 180 s). */
  timeoutMs?: number;
}

/**
 * Azure OpenAI through the SDK's AzureOpenAI client: the same Images API and wire body as OpenAI,
 * at `{endpoint}/openai/deployments/{deployment}/images/edits?api-version=...` with an `api-key`
 * header. The row's model is the deployment name (the SDK puts the body's `model` into the path);
 * capabilities and prices come from the model the deployment serves (models.ts, from
 * ATELIER_AZURE_DEPLOYMENTS), so the request takes exactly the fields that model takes.
 */
export function createAzureOpenAIProvider(options: AzureOpenAIProviderOptions): ImageEditProvider {
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
        baseURL: `${options.endpoint.replace(/\/+$/, '')}/openai`,
        deployment,
        apiVersion: options.apiVersion,
        maxRetries: 0,
        timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS,
      });
      clients.set(deployment, client);
    }
    return client;
  };
  return openAIImagesProvider('azure', clientFor, [options.apiKey]);
}
