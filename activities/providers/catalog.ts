// The SDKs are imported where a list is read, so loading this module (the CLI does) loads neither.
// What a provider's own model list says, normalised: OpenAI `GET /v1/models` (ids; `shutdown_date`
// when the object carries one), OpenRouter `GET /api/v1/models?output_modalities=image` (input and
// output modalities, pricing per token or per image), Gemini `models.list` (names and supported
// actions). ModelScope has no list endpoint. Used by `atelier models` and, for OpenRouter's output
// modalities, by the adapter (cached per worker).

export interface ListedModel {
  id: string;
  inputModalities?: string[];
  outputModalities?: string[];
  /** USD as the provider states it (OpenRouter: per token, as strings). */
  pricing?: Record<string, string>;
  /** OpenAI: the shutdown date, when the list gives one (YYYY-MM-DD). */
  shutdownDate?: string;
  /** Gemini: generateContent, countTokens, ... */
  supportedActions?: string[];
}

export interface CatalogOptions {
  apiKey: string;
  baseURL?: string | undefined;
  timeoutMs?: number;
}

const DEFAULT_OPENROUTER_BASE_URL = 'https://openrouter.ai/api/v1';

function shutdownOf(value: unknown): string | undefined {
  if (typeof value === 'number') return new Date(value * 1000).toISOString().slice(0, 10);
  if (typeof value === 'string' && !Number.isNaN(Date.parse(value))) return new Date(value).toISOString().slice(0, 10);
  return undefined;
}

interface OpenRouterModel {
  id?: string;
  architecture?: { input_modalities?: string[]; output_modalities?: string[] };
  pricing?: Record<string, string>;
}

/** OpenRouter's image models (`output_modalities=image`: the list holds text models only by default). */
export async function listOpenRouterImageModels(options: CatalogOptions): Promise<ListedModel[]> {
  const { default: OpenAI } = await import('openai');
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseURL || DEFAULT_OPENROUTER_BASE_URL,
    maxRetries: 1,
    timeout: options.timeoutMs ?? 20_000,
  });
  const body = (await client.get('/models', { query: { output_modalities: 'image' } })) as { data?: OpenRouterModel[] };
  return (body.data ?? []).flatMap((m) =>
    m.id
      ? [
          {
            id: m.id,
            ...(m.architecture?.input_modalities ? { inputModalities: m.architecture.input_modalities } : {}),
            ...(m.architecture?.output_modalities ? { outputModalities: m.architecture.output_modalities } : {}),
            ...(m.pricing ? { pricing: m.pricing } : {}),
          },
        ]
      : [],
  );
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

/** Gemini API `models.list`, with each model's supported actions. */
export async function listGeminiModels(options: CatalogOptions): Promise<ListedModel[]> {
  const { GoogleGenAI } = await import('@google/genai');
  const ai = new GoogleGenAI({
    apiKey: options.apiKey,
    vertexai: false,
    httpOptions: { baseUrl: options.baseURL || 'https://generativelanguage.googleapis.com', timeout: options.timeoutMs ?? 20_000 },
  });
  const out: ListedModel[] = [];
  const pager = await ai.models.list({ config: { pageSize: 100 } });
  for await (const m of pager) {
    if (!m.name) continue;
    out.push({ id: m.name.replace(/^models\//, ''), ...(m.supportedActions ? { supportedActions: m.supportedActions } : {}) });
  }
  return out;
}
