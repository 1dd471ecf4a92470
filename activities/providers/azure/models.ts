import type { ProviderTable } from '../table';
import { gptImage } from '../openai/models';

// Azure OpenAI has no rows of its own: a deployment serves an OpenAI model, and gets that model's row.

/**
 * `ATELIER_AZURE_DEPLOYMENTS="mydeploy=gpt-image-2,other=gpt-image-1.5"`: which OpenAI model each
 * Azure deployment serves. Not a secret; the CLI (planning, estimates) and the worker (costs) read
 * the same variable, so a deployment gets its model's capabilities and prices everywhere.
 */
export function parseAzureDeployments(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (text ?? '').split(',')) {
    const [deployment, model] = pair.split('=').map((s) => s.trim());
    if (deployment && model) out[deployment] = model;
  }
  return out;
}

/** The model an Azure deployment serves: mapped, else the name itself (deployments are often named after their model). */
export function azureDeploymentModel(deployment: string, env: NodeJS.ProcessEnv = process.env): string {
  return parseAzureDeployments(env.ATELIER_AZURE_DEPLOYMENTS)[deployment] ?? deployment;
}

export const azureTable: ProviderTable = {
  models: {},
  // Unused: every deployment resolves through the OpenAI rows.
  default: { ...gptImage, params: 'any', price: {} },
  /**
   * A deployment's capabilities: those of the OpenAI model it serves. Prices are assumed to be
   * OpenAI's (Azure's global standard rates matched them when last compared; unverified for Nov
   * 2026). The lifecycle is left out: Azure retires models on its own schedule, which this table
   * does not track, so OpenAI's shutdown dates must not refuse an Azure deployment.
   */
  resolve(deployment, capabilitiesOf) {
    const model = azureDeploymentModel(deployment);
    const { lifecycle: _openAILifecycle, ...caps } = capabilitiesOf('openai', model);
    return { ...caps, backend: 'azure', entry: model === deployment ? caps.entry : `${deployment} = ${caps.entry}` };
  },
  // Azure's "models" are the deployments ATELIER_AZURE_DEPLOYMENTS names.
  ids: () => Object.keys(parseAzureDeployments(process.env.ATELIER_AZURE_DEPLOYMENTS)),
};
