import { startGeminiStandin, type GeminiStandin, type GeminiStandinOptions } from '../gemini/standin';

// A local stand-in for Gemini on Vertex AI: the Gemini stand-in's request rules, answers, thought
// signatures, faults and google.rpc error bodies (activities/providers/gemini/standin.ts lists them with their sources),
// served at the paths @google/genai calls with `vertexai: true` (node_modules/@google/genai
// ApiClient.constructUrl, tModel; API version v1beta1 by default):
// - express mode (API key, `x-goog-api-key`): POST /v1beta1/publishers/google/models/{m}:generateContent
//   (cloud.google.com/vertex-ai/generative-ai/docs/start/express-mode);
// - project mode (OAuth token from ADC, `Authorization: Bearer`):
//   POST /v1beta1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent.
// Without credentials: 401 UNAUTHENTICATED "Request is missing required authentication credential";
// an API key alone on a project path: 401 "API keys are not supported by this API" (Google's answer
// for keys on OAuth-only APIs; whether Vertex now takes service-account-bound keys there is
// unverified). An unknown model: 404 NOT_FOUND "Publisher Model `...` was not found or your project
// does not have access to it" (the Vertex wording). Vertex has no Files API, so none is served.

export function startVertexStandin(options: Omit<GeminiStandinOptions, 'vertex'> = {}): Promise<GeminiStandin> {
  return startGeminiStandin({ ...options, vertex: true });
}
