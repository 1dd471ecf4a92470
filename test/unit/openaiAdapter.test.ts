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
    expect((err as Error).message).not.toContain(apiKey || 'sk-test-adapter');
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

  it('passes the optional parameters, input_fidelity only where the model takes it, never response_format to GPT image models', async () => {
    const params = { size: '1536x1024', quality: 'high', background: 'opaque', outputFormat: 'webp', outputCompression: 80, inputFidelity: 'high', moderation: 'low' };
    const result = await provider().edit({ model: 'gpt-image-1.5', prompt: 'params-15', images: [{ data: png, mimeType: 'image/png' }], params, numImages: 2 });
    expect(standin.callsFor('params-15')[0]!.fields).toMatchObject({
      model: 'gpt-image-1.5',
      n: '2',
      size: '1536x1024',
      quality: 'high',
      background: 'opaque',
      output_format: 'webp',
      output_compression: '80',
      input_fidelity: 'high',
      moderation: 'low',
    });
    expect(standin.callsFor('params-15')[0]!.fields.response_format).toBeUndefined();
    expect(result.images).toHaveLength(2);
    expect(result.images[0]!.mimeType).toBe('image/webp');
    expect(result.usage).toMatchObject({ inputTextTokens: 50, inputImageTokens: 323 });

    await provider().edit({ model: 'gpt-image-1-mini', prompt: 'params-mini', images: [{ data: png, mimeType: 'image/png' }], params: { inputFidelity: 'high' }, numImages: 1 });
    expect(standin.callsFor('params-mini')[0]).toMatchObject({ status: 200 });
    expect(standin.callsFor('params-mini')[0]!.fields.input_fidelity).toBeUndefined();

    const generated = await provider().generate({ model: 'gpt-image-1', prompt: 'params-gen', params: { moderation: 'low', outputFormat: 'jpeg', inputFidelity: 'high' }, numImages: 1 });
    expect(standin.callsFor('params-gen')[0]!.fields).toMatchObject({ moderation: 'low', output_format: 'jpeg' });
    expect(standin.callsFor('params-gen')[0]!.fields.input_fidelity).toBeUndefined();
    expect(generated.images[0]!.mimeType).toBe('image/jpeg');
  });

  it('sends the mask as a PNG sized like the first image', async () => {
    const big = await sharp({ create: { width: 16, height: 12, channels: 3, background: '#000000' } }).png().toBuffer();
    const mask = await sharp({ create: { width: 32, height: 24, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
    await provider().edit({ model: 'gpt-image-1', prompt: 'masked', images: [{ data: big, mimeType: 'image/png' }, { data: png, mimeType: 'image/png' }], mask: { data: mask, mimeType: 'image/png' }, params: {}, numImages: 1 });
    expect(standin.callsFor('masked')[0]).toMatchObject({ status: 200, imageCount: 2, mask: { type: 'image/png', width: 16, height: 12, hasAlpha: true } });
  });

  it('turns a dall-e-2 input into one square RGBA PNG, asks for b64_json and leaves GPT-only fields out', async () => {
    const wide = await sharp({ create: { width: 1400, height: 700, channels: 3, background: '#000000' } }).jpeg().toBuffer();
    const result = await provider().edit({
      model: 'dall-e-2',
      prompt: 'dalle',
      images: [{ data: wide, mimeType: 'image/jpeg' }],
      params: { size: '512x512', quality: 'high', outputFormat: 'webp', inputFidelity: 'high' },
      numImages: 1,
    });
    const call = standin.callsFor('dalle')[0]!;
    expect(call).toMatchObject({ status: 200, imageCount: 1, imageTypes: ['image/png'], imageSizes: [{ width: 1024, height: 1024 }] });
    expect(call.fields).toMatchObject({ response_format: 'b64_json', size: '512x512' });
    expect(call.fields.quality ?? call.fields.output_format ?? call.fields.input_fidelity).toBeUndefined();
    expect(result.images[0]!.mimeType).toBe('image/png');
    expect(createOpenAIProvider({ apiKey: 'k' }).maxInputImages('dall-e-2')).toBe(1);
    expect(createOpenAIProvider({ apiKey: 'k' }).inputLimits('dall-e-2')).toEqual({ maxBytes: 4 * 1024 * 1024, maxSide: 1024 });
    // A URL answer (dall-e-2's default elsewhere) is downloaded.
    standin.script('dalle-url', [{ status: 200, body: { created: 1, data: [{ url: `${standin.baseURL.replace(/\/v1$/, '')}/files/missing.png` }] } }]);
    const err = await provider().edit({ model: 'dall-e-2', prompt: 'dalle-url', images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 }).catch((e: unknown) => e);
    expect((err as ClassifiedError).kind).toBe('retryable');
  });

  it('lets the stand-in reject what the real API rejects (invalid requests are final)', async () => {
    const err = await provider()
      .edit({ model: 'gpt-image-1', prompt: 'jpeg-transparent', images: [{ data: png, mimeType: 'image/png' }], params: { background: 'transparent', outputFormat: 'jpeg' }, numImages: 1 })
      .catch((e: unknown) => e as ClassifiedError);
    expect(err).toMatchObject({ kind: 'invalidRequest', details: { status: 400 } });
    expect((err as Error).message).toMatch(/Transparent background/);
  });

  it('classifies malformed bodies and timeouts as retryable', async () => {
    standin.script('malformed-body', [faults.malformed()]);
    expect((await editError('malformed-body')).kind).toBe('retryable');
    standin.script('too-slow', [faults.slow(3000)]);
    const slow = await createOpenAIProvider({ apiKey: 'sk-x', baseURL: standin.baseURL, timeoutMs: 300 })
      .edit({ model: 'gpt-image-1.5', prompt: 'too-slow', images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 })
      .catch((e: unknown) => e as ClassifiedError);
    expect(slow).toMatchObject({ kind: 'retryable' });
    expect((slow as Error).message).toMatch(/timed out/);
  });

  it('answers 429 with retry-after: 1 above rateLimitPerSecond', async () => {
    const limited = await startOpenAIStandin({ rateLimitPerSecond: 2 });
    try {
      const p = createOpenAIProvider({ apiKey: 'sk-x', baseURL: limited.baseURL });
      const outcomes = await Promise.all(
        [0, 1, 2, 3].map((i) => p.generate({ model: 'gpt-image-1', prompt: `rl-${i}`, params: {}, numImages: 1 }).then(() => 'ok', (e: ClassifiedError) => e)),
      );
      const rejected = outcomes.filter((o): o is ClassifiedError => o instanceof ClassifiedError);
      expect(rejected).toHaveLength(2);
      expect(rejected[0]).toMatchObject({ kind: 'retryable', details: { status: 429, retryAfterMs: 1000 } });
      expect(limited.calls.filter((c) => c.status === 429)).toHaveLength(2);
    } finally {
      await limited.close();
    }
  });
});
