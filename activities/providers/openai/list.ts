import type { CatalogOptions, ListedModel } from '../catalog';

// The SDK is imported where the list is read, so loading the spec (the CLI does) does not load it.

function shutdownOf(value: unknown): string | undefined {
  if (typeof value === 'number') return new Date(value * 1000).toISOString().slice(0, 10);
  if (typeof value === 'string' && !Number.isNaN(Date.parse(value))) return new Date(value).toISOString().slice(0, 10);
  return undefined;
}

/** OpenAI `GET /v1/models/{model}`: resolves when the key can use the model, else throws the API's error. */
export async function retrieveOpenAIModel(options: CatalogOptions, model: string): Promise<void> {
  const { default: OpenAI } = await import('openai');
  const client = new OpenAI({ apiKey: options.apiKey, baseURL: options.baseURL, maxRetries: 1, timeout: options.timeoutMs ?? 20_000 });
  await client.models.retrieve(model);
}

/** OpenAI `GET /v1/models`, with each model's `shutdown_date` where the object carries one. */
export async function listOpenAIModels(options: CatalogOptions): Promise<ListedModel[]> {
  const { default: OpenAI } = await import('openai');
  const client = new OpenAI({ apiKey: options.apiKey, baseURL: options.baseURL, maxRetries: 1, timeout: options.timeoutMs ?? 20_000 });
  const out: ListedModel[] = [];
  for await (const m of client.models.list()) {
    const shutdown = shutdownOf((m as unknown as { shutdown_date?: unknown }).shutdown_date);
    out.push({ id: m.id, ...(shutdown ? { shutdownDate: shutdown } : {}) });
  }
  return out;
}
