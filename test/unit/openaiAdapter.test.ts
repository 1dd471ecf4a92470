import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { createOpenAIProvider } from '../../activities/providers/openai';
import { ClassifiedError } from '../../lib/errors';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../../standins/openai';
import { freePort } from '../../lib/devServer';

let standin: OpenAIStandin;
let png: Buffer;

beforeAll(async () => {
  standin = await startOpenAIStandin();
  png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000000' } }).png().toBuffer();
});
afterAll(async () => standin.close());

function provider(apiKey = 'sk-test-adapter') {
  return createOpenAIProvider({ apiKey, baseURL: standin.baseURL });
}

async function editError(prompt: string, apiKey?: string): Promise<ClassifiedError> {
  try {
    await provider(apiKey).edit({ model: 'gpt-image-1.5', prompt, images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 });
  } catch (err) {
    expect(err).toBeInstanceOf(ClassifiedError);
    return err as ClassifiedError;
  }
  throw new Error('expected the edit to fail');
}

describe('OpenAI adapter through the real SDK', () => {
  it('sends one image as `image` and several as `image[]`, typed PNG, and returns the edited image', async () => {
    const single = await provider().edit({ model: 'gpt-image-1.5', prompt: 'single', images: [{ data: png, mimeType: 'image/png' }], params: { size: '1024x1024' }, numImages: 1 });
    const multi = await provider().edit({
      model: 'gpt-image-1.5',
      prompt: 'multi',
      images: [png, png, png].map((data) => ({ data, mimeType: 'image/png' })),
      params: {},
      numImages: 1,
    });
    expect(standin.callsFor('single')[0]).toMatchObject({ imageCount: 1, imageTypes: ['image/png'], authorization: 'Bearer sk-test-adapter' });
    expect(standin.callsFor('multi')[0]).toMatchObject({ imageCount: 3, imageTypes: ['image/png', 'image/png', 'image/png'] });
    // The stand-in inverts the first input: black in, white out.
    const { data } = await sharp(single.images[0]!.data).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(255);
    expect(single.requestId).toMatch(/^req_standin_/);
    expect(multi.usage?.totalTokens).toBeGreaterThan(0);
  });

  it('classifies 429 as retryable and honours Retry-After', async () => {
    standin.script('rate-limited', [faults.rateLimited(7)]);
    const err = await editError('rate-limited');
    expect(err.kind).toBe('retryable');
    expect(err.details).toMatchObject({ status: 429, retryAfterMs: 7000 });
  });

  it('classifies 5xx as retryable, moderation as blocked, insufficient_quota as quota, other 4xx as invalid', async () => {
    standin.script('five-hundred', [faults.serverError()]);
    standin.script('refused', [faults.moderationBlocked()]);
    standin.script('broke', [faults.insufficientQuota()]);
    expect((await editError('five-hundred')).kind).toBe('retryable');
    const blocked = await editError('refused');
    expect(blocked.kind).toBe('blocked');
    expect(blocked.message).toMatch(/safety system/);
    expect((await editError('broke')).kind).toBe('quotaExhausted');
    expect((await editError('no key', '')).kind).toBe('invalidRequest');
  });

  it('classifies an unreachable server as retryable', async () => {
    const port = await freePort();
    const dead = createOpenAIProvider({ apiKey: 'sk-x', baseURL: `http://127.0.0.1:${port}/v1` });
    const err = await dead.edit({ model: 'gpt-image-1.5', prompt: 'x', images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as ClassifiedError).kind).toBe('retryable');
  });
});
