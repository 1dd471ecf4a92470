import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createAzureOpenAIProvider } from '../../activities/providers/azure/adapter';
import { capabilities, estimateCostUsd, lifecycleProblem, tableModels } from '../../activities/providers/models';
import { ClassifiedError } from '../../lib/shared/errors';
import { azureFaults, startAzureOpenAIStandin } from '../../activities/providers/azure/standin';
import type { OpenAIStandin } from '../../activities/providers/openai/standin';

// The Azure adapter through the openai SDK's AzureOpenAI client against the Azure-shaped stand-in:
// deployment in the path, api-version in the query, api-key header, the deployment's model rules.

const KEY = 'azure-test-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0';
const VERSION = '2025-04-01-preview';
let standin: OpenAIStandin;
let png: Buffer;

beforeAll(async () => {
  // The mapping is read from the environment by the CLI and the worker alike (models.ts).
  vi.stubEnv('ATELIER_AZURE_DEPLOYMENTS', 'img-prod=gpt-image-2, legacy=gpt-image-1.5');
  standin = await startAzureOpenAIStandin({ deployments: { 'img-prod': 'gpt-image-2', legacy: 'gpt-image-1.5' } });
  png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000000' } })
    .png()
    .toBuffer();
});
afterAll(async () => {
  vi.unstubAllEnvs();
  await standin.close();
});

function provider(overrides: { apiKey?: string; apiVersion?: string } = {}) {
  return createAzureOpenAIProvider({
    apiKey: overrides.apiKey ?? KEY,
    endpoint: `${standin.baseURL}/`,
    apiVersion: overrides.apiVersion ?? VERSION,
  });
}

async function editError(
  model: string,
  prompt: string,
  overrides: { apiKey?: string; apiVersion?: string } = {},
  params = {},
): Promise<ClassifiedError> {
  try {
    await provider(overrides).edit({ model, prompt, images: [{ data: png, mimeType: 'image/png' }], params, numImages: 1 });
  } catch (err) {
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as Error).message).not.toContain(KEY);
    return err as ClassifiedError;
  }
  throw new Error('expected the edit to fail');
}

describe("Azure OpenAI's v1 API (no api-version)", () => {
  const v1 = (apiKey = KEY) => createAzureOpenAIProvider({ apiKey, endpoint: `${standin.baseURL}/` });

  it('edits and generates at /openai/v1 with the deployment as the model and the api-key header', async () => {
    const result = await v1().edit({
      model: 'img-prod',
      prompt: 'az-v1-edit',
      images: [{ data: png, mimeType: 'image/png' }],
      params: { quality: 'high' },
      numImages: 1,
    });
    expect(result.images).toHaveLength(1);
    expect(standin.callsFor('az-v1-edit')[0]).toMatchObject({ model: 'gpt-image-2', authorization: `api-key ${KEY}`, status: 200 });
    await v1().generate({ model: 'img-prod', prompt: 'az-v1-gen', params: {}, numImages: 1 });
    expect(standin.callsFor('az-v1-gen')[0]).toMatchObject({ model: 'gpt-image-2', status: 200 });
  });

  it("an unknown deployment is Azure's 404 DeploymentNotFound; a bad key its 401", async () => {
    const missing = await v1()
      .edit({ model: 'nope', prompt: 'az-v1-missing', images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    expect(missing).toBeInstanceOf(ClassifiedError);
    expect(missing!.message).toMatch(/404 .*deployment for this resource does not exist/);
    const denied = await v1('')
      .edit({ model: 'img-prod', prompt: 'az-v1-denied', images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    expect(denied!.message).toMatch(/401 .*Access denied/);
  });
});

describe('Azure OpenAI adapter through the AzureOpenAI client', () => {
  it('edits through the deployment with the api-key header and returns the image with usage', async () => {
    const result = await provider().edit({
      model: 'img-prod',
      prompt: 'az-happy',
      images: [
        { data: png, mimeType: 'image/png' },
        { data: png, mimeType: 'image/png' },
      ],
      params: { size: '1024x1024', quality: 'high' },
      numImages: 1,
    });
    const [call] = standin.callsFor('az-happy');
    expect(call).toMatchObject({ model: 'gpt-image-2', imageCount: 2, authorization: `api-key ${KEY}`, status: 200 });
    expect(call!.fields).toMatchObject({ size: '1024x1024', quality: 'high' });
    const { data } = await sharp(result.images[0]!.data).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(255);
    expect(result.usage).toMatchObject({ inputImageTokens: 646, outputImageTokens: 1056 });
  });

  it('takes only the fields the deployment’s model takes (no input_fidelity for gpt-image-2, which Azure would refuse)', async () => {
    await provider().edit({
      model: 'img-prod',
      prompt: 'az-fidelity',
      images: [{ data: png, mimeType: 'image/png' }],
      params: { inputFidelity: 'high' },
      numImages: 1,
    });
    expect(standin.callsFor('az-fidelity')[0]!.fields.input_fidelity).toBeUndefined();
    await provider().edit({
      model: 'legacy',
      prompt: 'az-fidelity-legacy',
      images: [{ data: png, mimeType: 'image/png' }],
      params: { inputFidelity: 'high' },
      numImages: 1,
    });
    expect(standin.callsFor('az-fidelity-legacy')[0]!.fields.input_fidelity).toBe('high');
  });

  it('generates text-to-image through the deployment', async () => {
    const result = await provider().generate({ model: 'img-prod', prompt: 'az-generate', params: { size: '1024x1024' }, numImages: 1 });
    expect(result.images).toHaveLength(1);
    expect(standin.callsFor('az-generate')[0]).toMatchObject({ path: '/v1/images/generations', model: 'gpt-image-2' });
  });

  it('classifies Azure’s errors: unknown deployment, wrong api-version, content filter, rate limit', async () => {
    const missing = await editError('no-such-deployment', 'az-missing');
    expect(missing.kind).toBe('invalidRequest');
    expect(missing.message).toMatch(/^404 .*deployment for this resource does not exist/);
    const version = await editError('img-prod', 'az-version', { apiVersion: '2019-01-01' });
    expect(version).toMatchObject({ kind: 'invalidRequest' });
    expect(version.message).toMatch(/API version not supported/);
    standin.script('az-filtered', [azureFaults.contentFiltered()]);
    expect((await editError('img-prod', 'az-filtered')).kind).toBe('blocked');
    standin.script('az-busy', [azureFaults.rateLimited(2)]);
    const busy = await editError('img-prod', 'az-busy');
    expect(busy).toMatchObject({ kind: 'retryable', details: { retryAfterMs: 2000, status: 429 } });
  });

  it('the model’s own rules still hold behind a deployment (gpt-image-2 size rules)', async () => {
    const size = await editError('img-prod', 'az-size', {}, { size: '512x512' });
    expect(size.kind).toBe('invalidRequest');
    expect(size.message).toMatch(/total number of pixels/);
  });

  it('a deployment gets its model’s capabilities and prices, without OpenAI’s shutdown dates', () => {
    const caps = capabilities('azure', 'img-prod');
    expect(caps).toMatchObject({ backend: 'azure', entry: 'img-prod = gpt-image-2', known: true, maxInputImages: 16 });
    expect(
      estimateCostUsd(
        'azure',
        'img-prod',
        {},
        { inputTextTokens: 50, inputImageTokens: 323, inputTokens: 373, outputImageTokens: 1056, outputTextTokens: 24, outputTokens: 1080 },
        1,
      ),
    ).toBeCloseTo((50 * 5 + 323 * 8 + 1056 * 30 + 24 * 10) / 1e6, 9);
    // gpt-image-1.5 shuts down at OpenAI on 2026-12-01; Azure's schedule is its own.
    expect(lifecycleProblem('azure', 'legacy', new Date('2026-12-15'))).toEqual({});
    expect(lifecycleProblem('openai', 'gpt-image-1.5', new Date('2026-12-15')).error).toBeDefined();
    // An unmapped deployment named after its model resolves too; any other name is unknown (no price).
    expect(capabilities('azure', 'gpt-image-2').entry).toBe('gpt-image-2');
    expect(capabilities('azure', 'mystery').known).toBe(false);
    expect(estimateCostUsd('azure', 'mystery', {}, undefined, 1)).toBeUndefined();
    // `atelier models --backend azure` lists the mapped deployments.
    expect(tableModels('azure').map((m) => m.model)).toEqual(['img-prod', 'legacy']);
  });
});
