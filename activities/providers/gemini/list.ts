import type { CatalogOptions, ListedModel } from '../catalog';

// The SDK is imported where the list is read, so loading the spec (the CLI does) does not load it.

async function client(options: CatalogOptions) {
  const { GoogleGenAI } = await import('@google/genai');
  return new GoogleGenAI({
    apiKey: options.apiKey,
    vertexai: false,
    httpOptions: { baseUrl: options.baseURL || 'https://generativelanguage.googleapis.com', timeout: options.timeoutMs ?? 20_000 },
  });
}

/** Gemini API `models.get`: resolves when the key can use the model, else throws the API's error. */
export async function getGeminiModel(options: CatalogOptions, model: string): Promise<void> {
  await (await client(options)).models.get({ model });
}

/** Gemini API `models.list`, with each model's supported actions. */
export async function listGeminiModels(options: CatalogOptions): Promise<ListedModel[]> {
  const ai = await client(options);
  const out: ListedModel[] = [];
  const pager = await ai.models.list({ config: { pageSize: 100 } });
  for await (const m of pager) {
    if (!m.name) continue;
    out.push({ id: m.name.replace(/^models\//, ''), ...(m.supportedActions ? { supportedActions: m.supportedActions } : {}) });
  }
  return out;
}
