import { OAuth2Client } from 'google-auth-library';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capabilities, estimateCostUsd } from '../../activities/providers/models';
import type { ProviderImage } from '../../activities/providers/provider';
import { createVertexProvider, type VertexProviderOptions } from '../../activities/providers/vertex';
import { ClassifiedError } from '../../lib/shared/errors';
import { geminiFaults, type GeminiStandin } from '../../standins/gemini';
import { startVertexStandin } from '../../standins/vertex';

// The Vertex adapter through @google/genai (`vertexai: true`) against the Vertex-shaped stand-in:
// express mode (API key) and project mode (an OAuth token, as ADC would give), the shared Gemini
// answer handling, and Vertex's own error bodies.

const KEY = 'AIzaSyVertexExpressStandin000000000000';
let standin: GeminiStandin;
let black: ProviderImage;

beforeAll(async () => {
  standin = await startVertexStandin();
  black = {
    data: await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000000' } })
      .png()
      .toBuffer(),
    mimeType: 'image/png',
  };
});
afterAll(async () => standin.close());

function provider(extra: Partial<VertexProviderOptions> = { apiKey: KEY }) {
  return createVertexProvider({ baseURL: standin.baseURL, timeoutMs: 5000, ...extra });
}

/** An auth client holding a token, as Application Default Credentials would after a refresh (no network). */
function tokenClient(): OAuth2Client {
  const client = new OAuth2Client();
  client.setCredentials({ access_token: 'ya29.standin-token', expiry_date: Date.now() + 3600_000 });
  return client;
}

async function editError(
  prompt: string,
  extra?: Partial<VertexProviderOptions>,
  model = 'gemini-2.5-flash-image',
): Promise<ClassifiedError> {
  try {
    await provider(extra).edit({ model, prompt, images: [black], params: {}, numImages: 1 });
  } catch (err) {
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as Error).message).not.toContain(KEY);
    return err as ClassifiedError;
  }
  throw new Error('expected the edit to fail');
}

describe('Vertex AI adapter through @google/genai', () => {
  it('express mode: the global publisher path with x-goog-api-key, image-only modalities, the edited image and usage', async () => {
    const result = await provider().edit({
      model: 'gemini-2.5-flash-image',
      prompt: 'vx-express',
      images: [black],
      params: { aspectRatio: '4:3' },
      numImages: 1,
    });
    const [call] = standin.callsFor('vx-express');
    expect(call).toMatchObject({
      path: '/v1beta1/publishers/google/models/gemini-2.5-flash-image:generateContent',
      apiKey: KEY,
      imageCount: 1,
      status: 200,
    });
    expect(call!.generationConfig).toMatchObject({ responseModalities: ['IMAGE'], imageConfig: { aspectRatio: '4:3' } });
    const { data } = await sharp(result.images[0]!.data).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(255);
    expect(result.usage).toMatchObject({ outputImageTokens: 1290 });
    expect(estimateCostUsd('vertex', 'gemini-2.5-flash-image', {}, result.usage, 1)).toBeGreaterThan(0);
  });

  it('project mode: the project/location path with the OAuth token and no key', async () => {
    const result = await provider({
      project: 'atelier-test',
      location: 'us-central1',
      googleAuthOptions: { authClient: tokenClient() },
    }).edit({ model: 'gemini-3-pro-image-preview', prompt: 'vx-project', images: [black], params: { imageSize: '2K' }, numImages: 1 });
    expect(result.images).toHaveLength(1);
    const [call] = standin.callsFor('vx-project');
    expect(call).toMatchObject({
      path: '/v1beta1/projects/atelier-test/locations/us-central1/publishers/google/models/gemini-3-pro-image-preview:generateContent',
      apiKey: '',
      bearer: true,
      status: 200,
    });
  });

  it('a multi-turn row is one conversation with its thought signatures, as on the Gemini API', async () => {
    const p = provider();
    const first = await p.chatTurn!({
      model: 'gemini-3-pro-image',
      prompt: 'vx-turn1 add a hat',
      images: [black],
      params: {},
      numImages: 1,
    });
    await p.chatTurn!({
      model: 'gemini-3-pro-image',
      prompt: 'vx-turn2 make it red',
      images: [],
      history: first.history,
      params: {},
      numImages: 1,
    });
    const second = standin.callsFor('vx-turn2')[0]!;
    expect(second).toMatchObject({ turns: 3, status: 200 });
    expect(second.signaturesReturned.length).toBeGreaterThan(0);
  });

  it('classifies Vertex’s answers: unknown model, safety finish, rate limit with RetryInfo', async () => {
    const unknown = await editError('vx-unknown', undefined, 'gemini-9-image');
    expect(unknown.kind).toBe('invalidRequest');
    expect(unknown.message).toMatch(/^404 NOT_FOUND: Publisher Model `publishers\/google\/models\/gemini-9-image` was not found/);
    standin.script('vx-safety', [geminiFaults.finishReason('IMAGE_SAFETY')]);
    expect((await editError('vx-safety')).kind).toBe('blocked');
    standin.script('vx-busy', [geminiFaults.rateLimited(3)]);
    expect(await editError('vx-busy')).toMatchObject({ kind: 'retryable', details: { status: 429, retryAfterMs: 3000 } });
  });

  it('the stand-in refuses what Vertex refuses: a bare API key on a project path, no credentials at all', async () => {
    const body = JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'vx-raw' }] }] });
    const post = (path: string, headers: Record<string, string>) =>
      fetch(`${standin.baseURL}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    const keyed = await post('/v1beta1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash-image:generateContent', {
      'x-goog-api-key': KEY,
    });
    expect(keyed.status).toBe(401);
    expect(((await keyed.json()) as { error: { status: string; message: string } }).error).toMatchObject({
      status: 'UNAUTHENTICATED',
      message: expect.stringMatching(/^API keys are not supported/),
    });
    const bare = await post('/v1beta1/publishers/google/models/gemini-2.5-flash-image:generateContent', {});
    expect(bare.status).toBe(401);
    // The Gemini API's path is not Vertex's.
    expect((await post('/v1beta/models/gemini-2.5-flash-image:generateContent', { 'x-goog-api-key': KEY })).status).toBe(404);
  });

  it('has no Files API: a request over the inline limit fails before any call instead of uploading', async () => {
    const big: ProviderImage = { data: Buffer.alloc(8 * 1024 * 1024, 1), mimeType: 'image/png' };
    let error: ClassifiedError | undefined;
    try {
      await provider().edit({ model: 'gemini-3-pro-image', prompt: 'vx-big', images: [big, big], params: {}, numImages: 1 });
    } catch (err) {
      error = err as ClassifiedError;
    }
    expect(error?.kind).toBe('inputError');
    expect(standin.callsFor('vx-big')).toHaveLength(0);
    expect(standin.uploadedFiles()).toBe(0);
  });

  it('Vertex serves the Gemini table’s models with their limits', () => {
    expect(capabilities('vertex', 'gemini-3.1-flash-image-preview')).toMatchObject({
      backend: 'vertex',
      entry: 'gemini-3.1-flash-image',
      known: true,
      maxInputImages: 14,
    });
  });
});
