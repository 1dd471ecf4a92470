import { GoogleGenAI, type GoogleGenAIOptions } from '@google/genai';
import { googleGenAIProvider } from '../gemini/adapter';
import type { ImageEditProvider } from '../provider';

// Gemini image models on Vertex AI through @google/genai with `vertexai: true`: the same
// generateContent request and answer as the Gemini API, so everything but the client is shared with
// gemini/adapter.ts (finish reasons, thought signatures, errors, usage). The SDK calls
//   {base}/v1beta1/publishers/google/models/{model}:generateContent                      (express mode: API key)
//   {base}/v1beta1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent (project: ADC)
// (node_modules/@google/genai: ApiClient.constructUrl / shouldPrependVertexProjectPath, tModel).
// Express mode authenticates with `x-goog-api-key`; project mode with Application Default
// Credentials (google-auth-library, a dependency of @google/genai), so no key passes through here.
// Vertex has no Files API: a row over the inline request limit fails as an input error.

const REQUEST_TIMEOUT_MS = 180_000;
const GLOBAL_BASE_URL = 'https://aiplatform.googleapis.com/';

export interface VertexProviderOptions {
  /** Vertex AI express mode API key; without it, `project` with Application Default Credentials. */
  apiKey?: string | undefined;
  /** Google Cloud project (GOOGLE_CLOUD_PROJECT); used when no API key is given. */
  project?: string | undefined;
  /** Region (GOOGLE_CLOUD_LOCATION), default `global`. */
  location?: string | undefined;
  /** Host root without the API version (tests: the stand-in). */
  baseURL?: string | undefined;
  timeoutMs?: number;
  /** Credentials other than ADC (a service-account key, an auth client); project mode only. */
  googleAuthOptions?: GoogleGenAIOptions['googleAuthOptions'];
}

/** The host the SDK would pick, given explicitly so it never reads GOOGLE_VERTEX_BASE_URL from the environment. */
function defaultBaseUrl(express: boolean, location: string): string {
  if (express || location === 'global') return GLOBAL_BASE_URL;
  if (location === 'us' || location === 'eu') return `https://aiplatform.${location}.rep.googleapis.com/`;
  return `https://${location}-aiplatform.googleapis.com/`;
}

export function createVertexProvider(options: VertexProviderOptions): ImageEditProvider {
  const express = !!options.apiKey;
  if (!express && !options.project) throw new Error('Vertex AI needs an express-mode API key or a Google Cloud project');
  const location = options.location || 'global';
  const httpOptions = { baseUrl: options.baseURL || defaultBaseUrl(express, location), timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS };
  // Both modes are given explicitly, so the SDK's own environment fallbacks (GOOGLE_API_KEY,
  // GOOGLE_CLOUD_PROJECT / _LOCATION) never pick the other mode behind our back.
  const ai = express
    ? new GoogleGenAI({ vertexai: true, apiKey: options.apiKey!, httpOptions })
    : new GoogleGenAI({
        vertexai: true,
        project: options.project!,
        location,
        httpOptions,
        ...(options.googleAuthOptions ? { googleAuthOptions: options.googleAuthOptions } : {}),
      });
  return googleGenAIProvider('vertex', ai, { secrets: express ? [options.apiKey!] : [], filesApi: false, endpoint: httpOptions.baseUrl });
}
