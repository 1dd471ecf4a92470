import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { createOpenAIProvider } from '../../activities/providers/openai/adapter';
import { ClassifiedError } from '../../lib/shared/errors';
import OpenAI, { toFile } from 'openai';
import { estimateCostUsd } from '../../activities/providers/models';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { freePort } from '../../lib/temporal/devServer';

let standin: OpenAIStandin;
let png: Buffer;

beforeAll(async () => {
  standin = await startOpenAIStandin();
  png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000000' } })
    .png()
    .toBuffer();
});
afterAll(async () => standin.close());

function provider(apiKey = 'sk-test-adapter') {
  return createOpenAIProvider({ apiKey, baseURL: standin.baseURL });
}

async function editError(prompt: string, apiKey?: string): Promise<ClassifiedError> {
  try {
    await provider(apiKey).edit({ model: 'gpt-image-2', prompt, images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 });
  } catch (err) {
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as Error).message).not.toContain(apiKey || 'sk-test-adapter');
    return err as ClassifiedError;
  }
  throw new Error('expected the edit to fail');
}

describe('OpenAI adapter through the real SDK', () => {
  it('sends one image as `image` and several as `image[]`, typed PNG, and returns the edited image', async () => {
    const single = await provider().edit({
      model: 'gpt-image-2',
      prompt: 'single',
      images: [{ data: png, mimeType: 'image/png' }],
      params: { size: '1024x1024' },
      numImages: 1,
    });
    const multi = await provider().edit({
      model: 'gpt-image-2',
      prompt: 'multi',
      images: [png, png, png].map((data) => ({ data, mimeType: 'image/png' })),
      params: {},
      numImages: 1,
    });
    expect(standin.callsFor('single')[0]).toMatchObject({
      imageCount: 1,
      imageTypes: ['image/png'],
      authorization: 'Bearer sk-test-adapter',
    });
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
    const noKey = await editError('no key', '');
    expect(noKey.kind).toBe('invalidRequest');
    // The SDK's message starts with the status already: it is said once ("401 You didn't ...").
    expect(noKey.message).toMatch(/^401 You didn't provide an API key/);
  });

  it('classifies an unreachable server as retryable', async () => {
    const port = await freePort();
    // A key in the URL (some compatible servers take one) must not reach the message: the host only.
    const dead = createOpenAIProvider({ apiKey: 'sk-x', baseURL: `http://127.0.0.1:${port}/v1?key=k-secret` });
    const err = await dead
      .edit({ model: 'gpt-image-2', prompt: 'x', images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as ClassifiedError).kind).toBe('retryable');
    expect((err as ClassifiedError).message).toBe(`connection error: cannot reach 127.0.0.1:${port} (ECONNREFUSED)`);
  });

  it('passes the optional parameters, input_fidelity only where the model takes it, never response_format to GPT image models', async () => {
    const params = {
      size: '1536x1024',
      quality: 'high',
      background: 'opaque',
      outputFormat: 'webp',
      outputCompression: 80,
      inputFidelity: 'high',
      moderation: 'low',
    };
    const result = await provider().edit({
      model: 'gpt-image-2',
      prompt: 'params-2',
      images: [{ data: png, mimeType: 'image/png' }],
      params,
      numImages: 2,
    });
    expect(standin.callsFor('params-2')[0]!.fields).toMatchObject({
      model: 'gpt-image-2',
      n: '2',
      size: '1536x1024',
      quality: 'high',
      background: 'opaque',
      output_format: 'webp',
      output_compression: '80',
      moderation: 'low',
    });
    // gpt-image-2 answers 400 invalid_input_fidelity_model to input_fidelity: it is left out.
    expect(standin.callsFor('params-2')[0]!.fields.input_fidelity).toBeUndefined();
    expect(standin.callsFor('params-2')[0]!.fields.response_format).toBeUndefined();
    expect(result.images).toHaveLength(2);
    expect(result.images[0]!.mimeType).toBe('image/webp');
    // Output tokens by class (output_tokens_details): image and text are billed at different rates.
    expect(result.usage).toMatchObject({ inputTextTokens: 50, inputImageTokens: 323, outputImageTokens: 2112, outputTextTokens: 24 });
    expect(estimateCostUsd('openai', 'gpt-image-2', params, result.usage, 2)).toBeCloseTo(
      (50 * 5 + 323 * 8 + 2112 * 30 + 24 * 10) / 1e6,
      9,
    );

    // gpt-image-2.6 takes quality xhigh and max.
    await provider().edit({
      model: 'gpt-image-2.6-sunburst',
      prompt: 'params-26',
      images: [{ data: png, mimeType: 'image/png' }],
      params: { quality: 'max', size: '2048x1152' },
      numImages: 1,
    });
    expect(standin.callsFor('params-26')[0]).toMatchObject({ status: 200, fields: { quality: 'max', size: '2048x1152' } });

    // --complexity reaches gpt-image-2.6 (the table's `complexities`) and no other model.
    await provider().edit({
      model: 'gpt-image-2.6-flare',
      prompt: 'complexity-26',
      images: [{ data: png, mimeType: 'image/png' }],
      params: { complexity: 'low' },
      numImages: 1,
    });
    expect(standin.callsFor('complexity-26')[0]).toMatchObject({ status: 200, fields: { complexity: 'low' } });
    await provider().edit({
      model: 'gpt-image-2.5-flare',
      prompt: 'complexity-25',
      images: [{ data: png, mimeType: 'image/png' }],
      params: { complexity: 'low' },
      numImages: 1,
    });
    expect(standin.callsFor('complexity-25')[0]!.fields.complexity).toBeUndefined();

    const generated = await provider().generate({
      model: 'gpt-image-2.5-flare',
      prompt: 'params-gen',
      params: { moderation: 'low', outputFormat: 'jpeg', inputFidelity: 'high' },
      numImages: 1,
    });
    expect(standin.callsFor('params-gen')[0]!.fields).toMatchObject({ moderation: 'low', output_format: 'jpeg' });
    expect(standin.callsFor('params-gen')[0]!.fields.input_fidelity).toBeUndefined();
    expect(generated.images[0]!.mimeType).toBe('image/jpeg');
  });

  it('sends a compatible diffusion server its sampling settings; OpenAI models get none of them', async () => {
    // Qwen on a user's --base-url server: the stand-in plays an OpenAI-compatible server (any id).
    const server = await startOpenAIStandin({ compatible: {} });
    const local = createOpenAIProvider({ apiKey: 'sk-test-adapter', baseURL: server.baseURL });
    const sampling = { seed: 1234, numInferenceSteps: 28, guidanceScale: 4.5, trueCfgScale: 4, negativePrompt: 'blurry, low quality' };
    await local.edit({
      model: 'Qwen/Qwen-Image-Edit-2511',
      prompt: 'local-diffusion',
      images: [{ data: png, mimeType: 'image/png' }],
      params: sampling,
      numImages: 1,
    });
    expect(server.callsFor('local-diffusion')[0]!.fields).toMatchObject({
      seed: '1234',
      num_inference_steps: '28',
      guidance_scale: '4.5',
      true_cfg_scale: '4',
      negative_prompt: 'blurry, low quality',
    });
    await local.generate({ model: 'Qwen/Qwen-Image', prompt: 'local-t2i', params: sampling, numImages: 1 });
    await server.close();
    expect(server.callsFor('local-t2i')[0]!.fields).toMatchObject({
      seed: '1234',
      num_inference_steps: '28',
      negative_prompt: 'blurry, low quality',
    });
    await provider().edit({
      model: 'gpt-image-2',
      prompt: 'openai-no-sampling',
      images: [{ data: png, mimeType: 'image/png' }],
      params: sampling,
      numImages: 1,
    });
    const fields = standin.callsFor('openai-no-sampling')[0]!.fields;
    expect([fields.seed, fields.num_inference_steps, fields.guidance_scale, fields.true_cfg_scale, fields.negative_prompt]).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
  });

  it('sends the mask as a PNG sized like the first image', async () => {
    const big = await sharp({ create: { width: 16, height: 12, channels: 3, background: '#000000' } })
      .png()
      .toBuffer();
    const mask = await sharp({ create: { width: 32, height: 24, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
      .png()
      .toBuffer();
    await provider().edit({
      model: 'gpt-image-2',
      prompt: 'masked',
      images: [
        { data: big, mimeType: 'image/png' },
        { data: png, mimeType: 'image/png' },
      ],
      mask: { data: mask, mimeType: 'image/png' },
      params: {},
      numImages: 1,
    });
    expect(standin.callsFor('masked')[0]).toMatchObject({
      status: 200,
      imageCount: 2,
      mask: { type: 'image/png', width: 16, height: 12, hasAlpha: true },
    });
  });

  it('lets the stand-in reject what the real API rejects (invalid requests are final)', async () => {
    const err = await provider()
      .edit({
        model: 'gpt-image-2',
        prompt: 'jpeg-transparent',
        images: [{ data: png, mimeType: 'image/png' }],
        params: { background: 'transparent', outputFormat: 'jpeg' },
        numImages: 1,
      })
      .catch((e: unknown) => e as ClassifiedError);
    expect(err).toMatchObject({ kind: 'invalidRequest', details: { status: 400 } });
    expect((err as Error).message).toMatch(/Transparent background/);
  });

  it('fails an over-long prompt before any call', async () => {
    const before = standin.calls.length;
    const err = await provider()
      .edit({ model: 'gpt-image-2', prompt: 'x'.repeat(32_001), images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 })
      .catch((e: unknown) => e as ClassifiedError);
    expect(err).toMatchObject({ kind: 'inputError' });
    expect(standin.calls.length).toBe(before);
  });
});

describe('the OpenAI stand-in holds the real contract (through the SDK)', () => {
  const client = () => new OpenAI({ apiKey: 'sk-contract', baseURL: standin.baseURL, maxRetries: 0 });
  const status = (p: Promise<unknown>) =>
    p.then(
      () => 200,
      (e: unknown) => e as InstanceType<typeof OpenAI.APIError>,
    );
  const file = (data: Buffer) => toFile(data, 'in.png', { type: 'image/png' });

  it('answers 404 model_not_found for retired models, and for deprecated ones from their shutdown day', async () => {
    for (const model of ['dall-e-2', 'gpt-image-1', 'gpt-image-1-2025-04-15']) {
      const err = await status(client().images.generate({ model, prompt: 'retired' }));
      expect(err).toMatchObject({ status: 404, code: 'model_not_found', type: 'invalid_request_error' });
    }
    const before = await startOpenAIStandin({ now: () => new Date('2026-11-30T23:00:00Z') });
    const after = await startOpenAIStandin({ now: () => new Date('2026-12-01T00:00:01Z') });
    try {
      const on = (s: OpenAIStandin, model: string) =>
        status(new OpenAI({ apiKey: 'k', baseURL: s.baseURL, maxRetries: 0 }).images.generate({ model, prompt: 'p' }));
      for (const model of ['gpt-image-1.5', 'gpt-image-1-mini', 'chatgpt-image-latest']) {
        expect(await on(before, model)).toBe(200);
        expect(await on(after, model)).toMatchObject({ status: 404, code: 'model_not_found' });
      }
      const listed = async (s: OpenAIStandin) =>
        (await new OpenAI({ apiKey: 'k', baseURL: s.baseURL }).models.list()).data.map((m) => m.id);
      expect(await listed(before)).toContain('gpt-image-1.5');
      expect(await listed(after)).not.toContain('gpt-image-1.5');
      expect(await listed(after)).toContain('gpt-image-2.6-sunburst');
    } finally {
      await Promise.all([before.close(), after.close()]);
    }
  });

  it('holds gpt-image-2 sizes to /16, 1:3..3:1, 655,360..8,294,400 pixels and 3840 px a side', async () => {
    for (const size of ['1024x1024', '2048x1152', '3840x2160', '2160x3840', '2304x768', '1024x640']) {
      expect(await status(client().images.generate({ model: 'gpt-image-2', prompt: 'size-ok', size: size as '1024x1024' }))).toBe(200);
    }
    for (const [size, why] of [
      ['1000x1000', /divisible by 16/],
      ['512x512', /655,360/],
      ['3840x3840', /8,294,400/],
      ['4096x1536', /3840/],
      ['3072x960', /1:3/],
    ] as const) {
      const err = await status(client().images.generate({ model: 'gpt-image-2', prompt: 'size-bad', size: size as '1024x1024' }));
      expect(err).toMatchObject({ status: 400, code: 'invalid_value', param: 'size' });
      expect((err as Error).message).toMatch(why);
    }
    expect(await status(client().images.generate({ model: 'gpt-image-2', prompt: 'q', quality: 'xhigh' as 'high' }))).toMatchObject({
      status: 400,
      param: 'quality',
    });
    expect(await status(client().images.generate({ model: 'gpt-image-2.6-flare', prompt: 'q', quality: 'xhigh' as 'high' }))).toBe(200);
    // complexity: gpt-image-2.6 alone, low/medium/high ([OA-edit]); other models answer unknown_parameter.
    const withComplexity = async (model: string, complexity: string) =>
      status(
        client().images.edit({ model, prompt: 'cx', image: await file(png), complexity } as Parameters<
          ReturnType<typeof client>['images']['edit']
        >[0]),
      );
    expect(await withComplexity('gpt-image-2.6-sunburst', 'medium')).toBe(200);
    expect(await withComplexity('gpt-image-2.6-sunburst', 'max')).toMatchObject({
      status: 400,
      code: 'invalid_value',
      param: 'complexity',
    });
    expect(await withComplexity('gpt-image-2.5-sunburst', 'low')).toMatchObject({
      status: 400,
      code: 'unknown_parameter',
      param: 'complexity',
    });
    expect(await withComplexity('gpt-image-2', 'low')).toMatchObject({ status: 400, code: 'unknown_parameter', param: 'complexity' });
    expect(
      await status(client().images.edit({ model: 'gpt-image-2', prompt: 'fid', image: await file(png), input_fidelity: 'high' })),
    ).toMatchObject({
      status: 400,
      code: 'invalid_input_fidelity_model',
    });
  });

  it('rejects more than 16 images, prompts over 32,000 characters and masks of 4 MB or more', async () => {
    const many = await Promise.all(Array.from({ length: 17 }, () => file(png)));
    expect(await status(client().images.edit({ model: 'gpt-image-2', prompt: 'many', image: many }))).toMatchObject({
      status: 400,
      param: 'image',
    });
    expect(await status(client().images.edit({ model: 'gpt-image-2', prompt: 'x'.repeat(32_001), image: await file(png) }))).toMatchObject({
      status: 400,
      code: 'string_above_max_length',
      param: 'prompt',
    });
    // Noise does not compress: 1100x1000 RGBA is about 4.4 MB as a PNG.
    const noise = (channels: 3 | 4) =>
      sharp(Buffer.from(Array.from({ length: 1100 * 1000 * channels }, () => Math.floor(Math.random() * 256))), {
        raw: { width: 1100, height: 1000, channels },
      })
        .png({ compressionLevel: 0 })
        .toBuffer();
    const [image, mask] = await Promise.all([noise(3), noise(4)]);
    expect(mask.length).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    const err = await status(
      client().images.edit({
        model: 'gpt-image-2',
        prompt: 'big-mask',
        image: await file(image),
        mask: await toFile(mask, 'mask.png', { type: 'image/png' }),
      }),
    );
    expect(err).toMatchObject({ status: 400, param: 'mask' });
  });
});

describe('OpenAI adapter: slow and limited servers', () => {
  it('classifies malformed bodies and timeouts as retryable', async () => {
    standin.script('malformed-body', [faults.malformed()]);
    expect((await editError('malformed-body')).kind).toBe('retryable');
    standin.script('too-slow', [faults.slow(3000)]);
    const slow = await createOpenAIProvider({ apiKey: 'sk-x', baseURL: standin.baseURL, timeoutMs: 300 })
      .edit({ model: 'gpt-image-2', prompt: 'too-slow', images: [{ data: png, mimeType: 'image/png' }], params: {}, numImages: 1 })
      .catch((e: unknown) => e as ClassifiedError);
    expect(slow).toMatchObject({ kind: 'retryable' });
    expect((slow as Error).message).toMatch(/timed out/);
  });

  it('answers 429 with retry-after: 1 above rateLimitPerSecond', async () => {
    const limited = await startOpenAIStandin({ rateLimitPerSecond: 2 });
    try {
      const p = createOpenAIProvider({ apiKey: 'sk-x', baseURL: limited.baseURL });
      const outcomes = await Promise.all(
        [0, 1, 2, 3].map((i) =>
          p.generate({ model: 'gpt-image-2', prompt: `rl-${i}`, params: {}, numImages: 1 }).then(
            () => 'ok',
            (e: ClassifiedError) => e,
          ),
        ),
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
