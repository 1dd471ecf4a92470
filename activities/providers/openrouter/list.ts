import type { CatalogOptions, ListedModel } from '../catalog';

// The SDK is imported where the list is read, so loading the spec (the CLI does) does not load it.

const DEFAULT_OPENROUTER_BASE_URL = 'https://openrouter.ai/api/v1';

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
