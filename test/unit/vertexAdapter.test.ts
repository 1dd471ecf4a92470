import { randomBytes } from 'node:crypto';
import { OAuth2Client } from 'google-auth-library';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capabilities, estimateCostUsd, modelStatus } from '../../activities/providers/models';
import type { ProviderImage } from '../../activities/providers/provider';
import { createVertexProvider, type VertexProviderOptions } from '../../activities/providers/vertex/adapter';
import { ClassifiedError } from '../../lib/shared/errors';
import { freePort } from '../../lib/temporal/devServer';
import { geminiFaults, type GeminiStandin } from '../../activities/providers/gemini/standin';
import { startVertexStandin } from '../../activities/providers/vertex/standin';

// The stand-in plays the API as of 2026-06-01, before the 2.5 Flash Image and -preview shutdowns, so
// those models' behaviours stay covered (test/unit/modelCheck.test.ts covers today's refusals).
const BEFORE_SHUTDOWNS = () => new Date('2026-06-01T00:00:00Z');

// The Vertex adapter through @google/genai (`vertexai: true`) against the Vertex-shaped stand-in:
// express mode (API key) and project mode (an OAuth token, as ADC would give), the shared Gemini
// answer handling, and Vertex's own error bodies.

const KEY = 'AIzaSyVertexExpressStandin000000000000';
let standin: GeminiStandin;
let black: ProviderImage;

beforeAll(async () => {
  standin = await startVertexStandin({ now: BEFORE_SHUTDOWNS });
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

  it('an unreachable endpoint fails as a retryable connection error naming the host (issue 24)', async () => {
    const port = await freePort();
    const dead = await createVertexProvider({ apiKey: KEY, baseURL: `http://127.0.0.1:${port}/`, timeoutMs: 5000 })
      .edit({ model: 'gemini-3.1-flash-image', prompt: 'x', images: [black], params: {}, numImages: 1 })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    expect(dead).toBeInstanceOf(ClassifiedError);
    expect(dead?.kind).toBe('retryable');
    expect(dead?.message).toBe(`connection error: cannot reach 127.0.0.1:${port} (ECONNREFUSED)`);
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

  it('has no Files API but takes 500 MB inline: a 21 MB request (refused at the old 20 MB bound) goes through, nothing uploaded', async () => {
    // 3 × 6 MB of noise PNG (each under Vertex's 7 MB per inline file; 24 MB as base64).
    const noise = await sharp(randomBytes(1400 * 1400 * 3), { raw: { width: 1400, height: 1400, channels: 3 } })
      .png({ compressionLevel: 1 })
      .toBuffer();
    const big: ProviderImage = { data: noise, mimeType: 'image/png' };
    const result = await provider({ apiKey: KEY, timeoutMs: 120_000 }).edit({
      model: 'gemini-3-pro-image',
      prompt: 'vx-big',
      images: [big, big, big],
      params: {},
      numImages: 1,
    });
    expect(result.images).toHaveLength(1);
    expect(standin.callsFor('vx-big')).toMatchObject([{ status: 200, imageCount: 3 }]);
    expect(standin.uploadedFiles()).toBe(0);
    expect(capabilities('vertex', 'gemini-3-pro-image').maxRequestBytes).toBe(500 * 1024 * 1024);
    expect(capabilities('gemini', 'gemini-3-pro-image').maxRequestBytes).toBe(100 * 1024 * 1024);
  });

  it('Vertex serves the Gemini table’s models with their limits, on its own lifecycle dates', () => {
    expect(capabilities('vertex', 'gemini-3.1-flash-image')).toMatchObject({
      backend: 'vertex',
      entry: 'gemini-3.1-flash-image',
      known: true,
      maxInputImages: 14,
    });
    // A -preview id is its own model, shut down on Vertex 2026-07-17 (the Gemini API: 2026-06-25).
    expect(modelStatus('vertex', 'gemini-3.1-flash-image-preview', new Date('2026-07-01T00:00:00Z'))).toMatchObject({
      status: 'deprecated',
      shutdown: '2026-07-17',
    });
    expect(modelStatus('gemini', 'gemini-3.1-flash-image-preview', new Date('2026-07-01T00:00:00Z'))).toMatchObject({
      status: 'retired',
      since: '2026-06-25',
      replacement: 'gemini-3.1-flash-image',
    });
    // gemini-2.5-flash-image: gone from the Gemini API on 2026-10-02, no date announced on Vertex.
    expect(modelStatus('gemini', 'gemini-2.5-flash-image', new Date('2026-12-07T00:00:00Z')).status).toBe('retired');
    expect(modelStatus('vertex', 'gemini-2.5-flash-image', new Date('2026-12-07T00:00:00Z')).status).toBe('current');
  });
});
