import { startOpenAIStandin, type FaultStep, type OpenAIStandin, type StandinOptions } from '../openai/standin';

// A local stand-in for Azure OpenAI's Images API. It is the OpenAI stand-in (same image handling,
// same per-model rules and error bodies for what the model rejects) behind Azure's URL shape and
// auth; each rule with its source:
// - `POST {endpoint}/openai/deployments/{deployment}/images/edits|generations?api-version=...`
//   (learn.microsoft.com Azure OpenAI REST reference, "Image generation" / "Image edit"; the path
//   the openai SDK's AzureOpenAI client builds, node_modules/openai/azure.js).
// - Auth by the `api-key` header; without it 401 `{error: {code: "401", message: "Access denied due
//   to invalid subscription key or wrong API endpoint. ..."}}` (the message Azure answers, as quoted
//   in many public issues; unverified against a live resource in this repo).
// - `api-version` is required: without it 404 `{error: {code: "404", message: "Resource not
//   found"}}`; an unknown one 400 `{error: {code: "BadRequest", message: "API version not
//   supported"}}` (as publicly reported; unverified live).
// - An unknown deployment: 404 `{error: {code: "DeploymentNotFound", message: "The API deployment
//   for this resource does not exist. ..."}}` (Azure OpenAI troubleshooting pages).
// - The deployment decides the model; its rules are OpenAI's for that model (activities/providers/openai/standin.ts
//   lists them), with OpenAI's error bodies, which Azure passes through for image validation.
// - The content filter: 400 with code `content_policy_violation` and an `inner_error` carrying
//   `ResponsibleAIPolicyViolation` and the filter results (Azure OpenAI content-filtering docs).

/** api-versions the stand-in accepts (the image-edit API has been in these; the list is not exhaustive). */
export const AZURE_API_VERSIONS = ['2025-04-01-preview', '2025-03-01-preview', '2024-10-21'] as const;

export const azureFaults = {
  contentFiltered: (): FaultStep => ({
    status: 400,
    body: {
      error: {
        code: 'content_policy_violation',
        message:
          'Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.',
        param: 'prompt',
        type: 'invalid_request_error',
        inner_error: {
          code: 'ResponsibleAIPolicyViolation',
          content_filter_results: {
            hate: { filtered: false, severity: 'safe' },
            self_harm: { filtered: false, severity: 'safe' },
            sexual: { filtered: false, severity: 'safe' },
            violence: { filtered: true, severity: 'high' },
          },
        },
      },
    },
  }),
  rateLimited: (retryAfterSeconds = 1): FaultStep => ({
    status: 429,
    headers: { 'retry-after': String(retryAfterSeconds) },
    body: {
      error: {
        code: '429',
        message: `Requests to the Images_Edit Operation under Azure OpenAI API version 2025-04-01-preview have exceeded call rate limit of your current AIServices S0 pricing tier. Please retry after ${retryAfterSeconds} second.`,
      },
    },
  }),
};

export interface AzureStandinOptions extends StandinOptions {
  /** Deployment name -> the OpenAI model it serves. */
  deployments: Record<string, string>;
  apiVersions?: readonly string[];
  now?: () => Date;
}

/** Base URL is the resource endpoint (AZURE_OPENAI_ENDPOINT). Calls record `authorization` as `api-key <key>`. */
export function startAzureOpenAIStandin(options: AzureStandinOptions): Promise<OpenAIStandin> {
  const { deployments, apiVersions, ...rest } = options;
  return startOpenAIStandin({ ...rest, azure: { deployments, apiVersions: apiVersions ?? AZURE_API_VERSIONS } });
}
