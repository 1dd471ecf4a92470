// What a provider's own model list says, normalised (each provider's listing lives in its folder,
// <name>/list.ts, and is named by its spec's `listing`): OpenAI `GET /v1/models` (ids; `shutdown_date`
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
