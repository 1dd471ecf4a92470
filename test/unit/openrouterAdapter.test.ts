import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import sharp from 'sharp';
import OpenAI from 'openai';
import { createOpenRouterProvider } from '../../activities/providers/openrouter/adapter';
import { listProviderModels } from '../../activities/providers/registry';
import type { ProviderImage } from '../../activities/providers/provider';
import { freePort } from '../../lib/temporal/devServer';
import { ClassifiedError } from '../../lib/shared/errors';
import { openrouterFaults, startOpenRouterStandin, type ChatStandin } from '../../activities/providers/openrouter/standin';

const KEY = 'sk-or-v1-standin0000000000000000000000000000';
let standin: ChatStandin;
let black: ProviderImage;
let small: ProviderImage;

beforeAll(async () => {
  standin = await startOpenRouterStandin();
  black = {
    data: await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000000' } })
      .png()
      .toBuffer(),
    mimeType: 'image/png',
  };
  small = {
    data: await sharp({ create: { width: 5, height: 3, channels: 3, background: '#ffffff' } })
      .jpeg()
      .toBuffer(),
    mimeType: 'image/jpeg',
  };
});
afterAll(async () => standin.close());

function provider(apiKey = KEY, timeoutMs?: number) {
  return createOpenRouterProvider({ apiKey, baseURL: standin.baseURL, ...(timeoutMs ? { timeoutMs } : {}) });
}

async function editError(prompt: string, apiKey = KEY): Promise<ClassifiedError> {
  try {
    await provider(apiKey).edit({ model: 'google/gemini-2.5-flash-image', prompt, images: [black], params: {}, numImages: 1 });
  } catch (err) {
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as Error).message).not.toContain(apiKey || 'never-empty');
    return err as ClassifiedError;
  }
  throw new Error('expected the edit to fail');
}

describe('OpenRouter adapter through the openai SDK (chat completions)', () => {
  it("an id OpenRouter does not serve (never, or no longer: the Gemini 3 previews since 2026-06-25) is OpenRouter's final 400", async () => {
    for (const model of ['google/gemini-3.1-flash-image-preview', 'acme/no-such-model']) {
      const err = await provider()
        .edit({ model, prompt: 'or-unknown', images: [black], params: {}, numImages: 1 })
        .then(
          () => undefined,
          (e: unknown) => e as ClassifiedError,
        );
      expect(err).toBeInstanceOf(ClassifiedError);
      expect(err).toMatchObject({ kind: 'invalidRequest' });
      expect(err!.message).toContain(`${model} is not a valid model ID`);
    }
    // Its list no longer has the previews; it has the GA ids.
    const raw = (await (await fetch(`${standin.baseURL}/models?output_modalities=image`)).json()) as { data: { id: string }[] };
    const ids = raw.data.map((m) => m.id);
    expect(ids).toEqual(expect.arrayContaining(['google/gemini-3-pro-image', 'google/gemini-3.1-flash-image']));
    expect(ids.filter((id) => id.endsWith('-preview'))).toEqual([]);
  });

  it('sends the prompt and every image as data URLs with modalities and image_config, and reads message.images', async () => {
    const result = await provider().edit({
      model: 'google/gemini-3-pro-image',
      prompt: 'or-multi',
      images: [black, small],
      params: { aspectRatio: '4:3', imageSize: '2K' },
      numImages: 1,
    });
    const call = standin.callsFor('or-multi')[0]!;
    expect(call).toMatchObject({
      model: 'google/gemini-3-pro-image',
      imageCount: 2,
      imageTypes: ['image/png', 'image/jpeg'],
      modalities: ['image', 'text'],
      imageConfig: { aspect_ratio: '4:3', image_size: '2K' },
      authorization: `Bearer ${KEY}`,
    });
    expect(call.imageSizes[1]).toEqual({ width: 5, height: 3 });
    expect(result.images).toHaveLength(1);
    const { data } = await sharp(result.images[0]!.data).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(255);
    expect(result.requestId).toMatch(/^gen-standin-/);
    expect(result.usage).toMatchObject({ costUsd: 0.0387, outputImageTokens: 1290 });
  });

  it('generates from text, asks image-only models for the image modality alone', async () => {
    const t2i = await provider().generate({
      model: 'google/gemini-2.5-flash-image',
      prompt: 'or-t2i',
      params: { aspectRatio: '16:9' },
      numImages: 2,
    });
    expect(t2i.images).toHaveLength(2);
    expect(standin.callsFor('or-t2i')).toHaveLength(2);
    expect(t2i.usage!.costUsd).toBeCloseTo(2 * 0.0387, 6);
    // Without an Image API (an OpenAI-compatible server) an image-only model goes through chat.
    const compatible = await startOpenRouterStandin({ compatible: true });
    try {
      await createOpenRouterProvider({ apiKey: KEY, baseURL: compatible.baseURL }).generate({
        model: 'black-forest-labs/flux.2-pro',
        prompt: 'or-flux',
        params: {},
        numImages: 1,
      });
      expect(compatible.callsFor('or-flux')[0]!.modalities).toEqual(['image']);
    } finally {
      await compatible.close();
    }
  });

  it('without an Image API, asks chat for the modalities /api/v1/models declares (once per adapter), with OpenAI image options in image_config', async () => {
    // A server with /api/v1/models but no Image API: the chat path serves image-only models.
    const standin = await startOpenRouterStandin({ compatible: true });
    onTestFinished(() => standin.close());
    const p = createOpenRouterProvider({ apiKey: KEY, baseURL: standin.baseURL });
    const listsBefore = standin.modelListCalls();
    // Not in the name table: only the list says it outputs images alone.
    const forged = await p.edit({ model: 'acme/pixel-forge-1', prompt: 'or-listed-1', images: [black], params: {}, numImages: 1 });
    expect(forged.images).toHaveLength(1);
    expect(standin.callsFor('or-listed-1')[0]).toMatchObject({ status: 200, modalities: ['image'] });
    await p.generate({
      model: 'openai/gpt-image-2',
      prompt: 'or-listed-2',
      params: { quality: 'high', background: 'opaque', outputFormat: 'webp', aspectRatio: '3:2' },
      numImages: 1,
    });
    expect(standin.callsFor('or-listed-2')[0]).toMatchObject({
      status: 200,
      modalities: ['image'],
      imageConfig: { aspect_ratio: '3:2', quality: 'high', background: 'opaque', output_format: 'webp' },
    });
    await p.generate({ model: 'google/gemini-2.5-flash-image', prompt: 'or-listed-3', params: { quality: 'high' }, numImages: 1 });
    expect(standin.callsFor('or-listed-3')[0]).toMatchObject({ status: 200, modalities: ['image', 'text'] });
    expect(standin.callsFor('or-listed-3')[0]!.imageConfig).toBeUndefined();
    expect(standin.modelListCalls() - listsBefore).toBe(1);
  });

  it("image-only models go through OpenRouter's Image API: input_references, the fields the model lists, b64_json back", async () => {
    const p = provider();
    const listsBefore = standin.imageModelListCalls();
    const edited = await p.edit({
      model: 'bytedance-seed/seedream-4.5',
      prompt: 'or-img-1',
      images: [black, small],
      // Seedream lists resolution and seed only: aspect_ratio is left out (OpenRouter would refuse it).
      params: { imageSize: '2K', seed: 7, aspectRatio: '16:9' },
      numImages: 1,
    });
    const [call] = standin.callsFor('or-img-1');
    expect(call).toMatchObject({ endpoint: 'images', status: 200, imageCount: 2, imageTypes: ['image/png', 'image/jpeg'] });
    expect(call!.extra).toEqual({ resolution: '2K', seed: 7 });
    expect(call!.imageSizes[0]).toEqual({ width: 8, height: 8 });
    // The stand-in inverts the first input: black comes back white.
    expect(edited.images).toHaveLength(1);
    expect(edited.images[0]!.mimeType).toBe('image/png');
    const { data } = await sharp(edited.images[0]!.data).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(255);
    expect(edited.usage).toMatchObject({ costUsd: 0.04 });
    expect(edited.requestId).toMatch(/^gen-img-standin-/);
    // gpt-image-2 lists n: two images in one call; Atelier's 0.5K is the API's 512 where listed.
    const two = await p.generate({
      model: 'openai/gpt-image-2',
      prompt: 'or-img-2',
      params: { quality: 'high', outputFormat: 'webp' },
      numImages: 2,
    });
    expect(two.images).toHaveLength(2);
    expect(standin.callsFor('or-img-2')).toHaveLength(1);
    expect(standin.callsFor('or-img-2')[0]!.extra).toEqual({ quality: 'high', output_format: 'webp', n: 2 });
    // Models that answer with text too stay on chat completions.
    await p.generate({ model: 'google/gemini-3.1-flash-image', prompt: 'or-img-3', params: {}, numImages: 1 });
    expect(standin.callsFor('or-img-3')[0]).toMatchObject({ modalities: ['image', 'text'] });
    expect(standin.callsFor('or-img-3')[0]!.endpoint).toBeUndefined();
    // The parameter list is asked once per adapter.
    expect(standin.imageModelListCalls() - listsBefore).toBe(1);
  });

  it('a value the model does not list (FLUX.2 at 4K) fails the row before any call, naming what it takes', async () => {
    const err = await provider()
      .edit({ model: 'black-forest-labs/flux.2-pro', prompt: 'or-img-4k', images: [black], params: { imageSize: '4K' }, numImages: 1 })
      .catch((e: unknown) => e as ClassifiedError);
    expect(err).toBeInstanceOf(ClassifiedError);
    expect(err).toMatchObject({ kind: 'invalidRequest' });
    expect((err as Error).message).toBe("black-forest-labs/flux.2-pro takes resolution 1K, 2K on OpenRouter's Image API, not 4K");
    expect(standin.callsFor('or-img-4k')).toHaveLength(0);
  });

  it('the Image API stand-in answers as OpenRouter: unsupported parameters and unknown ids refused, no Image API on a compatible server', async () => {
    const post = (base: string, body: unknown) =>
      fetch(`${base}/images`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const unsupported = await post(standin.baseURL, { model: 'bytedance-seed/seedream-4.5', prompt: 'or-raw-1', aspect_ratio: '16:9' });
    expect(unsupported.status).toBe(400);
    expect(await unsupported.json()).toEqual({
      error: { code: 400, message: 'bytedance-seed/seedream-4.5 does not support parameter(s): aspect_ratio' },
    });
    const unknown = await post(standin.baseURL, { model: 'acme/imaginary-9', prompt: 'or-raw-2' });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { error: { message: string } }).error.message).toBe('acme/imaginary-9 is not a valid model ID');
    const textOnly = await post(standin.baseURL, { model: 'openai/gpt-4.1-mini', prompt: 'or-raw-3' });
    expect(textOnly.status).toBe(404);
    const list = (await (await fetch(`${standin.baseURL}/images/models`)).json()) as {
      data: { id: string; supported_parameters: object }[];
    };
    expect(list.data.find((m) => m.id === 'bytedance-seed/seedream-4.5')!.supported_parameters).toEqual({
      resolution: { type: 'enum', values: ['1K', '2K', '4K'] },
      seed: { type: 'boolean' },
    });
    expect(list.data.find((m) => m.id === 'openai/gpt-4.1-mini')).toBeUndefined();
    const compatible = await startOpenRouterStandin({ compatible: true });
    try {
      expect((await post(compatible.baseURL, { model: 'bytedance-seed/seedream-4.5', prompt: 'x' })).status).toBe(404);
      expect((await fetch(`${compatible.baseURL}/images/models`)).status).toBe(404);
    } finally {
      await compatible.close();
    }
  });

  it('the stand-in answers 404 to an image-only model asked for text too, as OpenRouter does', async () => {
    const client = new OpenAI({ apiKey: KEY, baseURL: standin.baseURL, maxRetries: 0 });
    const err = await client.chat.completions
      .create({
        model: 'bytedance-seed/seedream-4.5',
        messages: [{ role: 'user', content: 'or-404' }],
        modalities: ['image', 'text'],
      } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming)
      .catch((e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
    expect(err).toMatchObject({ status: 404 });
    expect((err as Error).message).toMatch(/No endpoints found that support the requested output modalities: image, text/);
    // The list holds text models unless asked for image models.
    const images = (await listProviderModels('openrouter', { apiKey: KEY, baseURL: standin.baseURL }))!;
    expect(images.find((m) => m.id === 'bytedance-seed/seedream-4.5')).toMatchObject({
      outputModalities: ['image'],
      inputModalities: ['image', 'text'],
    });
    expect(images.find((m) => m.id === 'openai/gpt-4.1-mini')).toBeUndefined();
  });

  it('tolerates the imageUrl spelling', async () => {
    const png = (
      await sharp({ create: { width: 2, height: 2, channels: 3, background: '#123456' } })
        .png()
        .toBuffer()
    ).toString('base64');
    standin.script('or-camel', [
      {
        status: 200,
        body: {
          id: 'gen-camel',
          choices: [
            {
              index: 0,
              finish_reason: 'stop',
              message: {
                role: 'assistant',
                content: '',
                images: [{ type: 'image_url', imageUrl: { url: `data:image/png;base64,${png}` } }],
              },
            },
          ],
        },
      },
    ]);
    const result = await provider().edit({
      model: 'google/gemini-2.5-flash-image',
      prompt: 'or-camel',
      images: [black],
      params: {},
      numImages: 1,
    });
    expect(result.images[0]!.mimeType).toBe('image/png');
    expect(result.requestId).toBe('gen-camel');
  });

  it('asks once more when there is no image, then fails as invalid', async () => {
    standin.script('or-chatty-once', [openrouterFaults.noImage()]);
    const ok = await provider().edit({
      model: 'google/gemini-2.5-flash-image',
      prompt: 'or-chatty-once',
      images: [black],
      params: {},
      numImages: 1,
    });
    expect(ok.images).toHaveLength(1);
    expect(standin.callsFor('or-chatty-once')).toHaveLength(2);
    standin.script('or-chatty-always', [openrouterFaults.noImage('What style?')], { repeat: true });
    const err = await editError('or-chatty-always');
    expect(err.kind).toBe('invalidRequest');
    expect(err.message).toMatch(/no image in the answer.*What style/);
    expect(standin.callsFor('or-chatty-always')).toHaveLength(2);
  });

  it('classifies 429 (Retry-After), 5xx and errors in a 200 body as retryable; 402 as quota; 403 moderation and safety finishes as blocked; other 4xx as invalid', async () => {
    standin.script('or-429', [openrouterFaults.rateLimited(9)]);
    standin.script('or-502', [openrouterFaults.serverError(502)]);
    standin.script('or-inbody', [openrouterFaults.errorInBody(502)]);
    standin.script('or-402', [openrouterFaults.insufficientCredits()]);
    standin.script('or-403', [openrouterFaults.moderation()]);
    standin.script('or-filter', [openrouterFaults.contentFilter()]);
    standin.script('or-400', [openrouterFaults.badRequest()]);
    const rate = await editError('or-429');
    expect(rate).toMatchObject({ kind: 'retryable', details: { status: 429, retryAfterMs: 9000 } });
    expect((await editError('or-502')).kind).toBe('retryable');
    expect((await editError('or-inbody')).kind).toBe('retryable');
    expect((await editError('or-402')).kind).toBe('quotaExhausted');
    const moderated = await editError('or-403');
    expect(moderated.kind).toBe('blocked');
    expect(moderated.message).toMatch(/flagged/);
    expect(moderated.message).toMatch(/^403 google\/gemini-2\.5-flash-image requires moderation/);
    const filtered = await editError('or-filter');
    expect(filtered.kind).toBe('blocked');
    expect(standin.callsFor('or-filter')).toHaveLength(1);
    expect((await editError('or-400')).kind).toBe('invalidRequest');
    expect((await editError('or-nokey', '')).kind).toBe('invalidRequest');
  });

  it('classifies malformed bodies, timeouts and unreachable servers as retryable', async () => {
    standin.script('or-malformed', [openrouterFaults.malformed()]);
    standin.script('or-slow', [openrouterFaults.slow(3000)]);
    expect((await editError('or-malformed')).kind).toBe('retryable');
    const slow = await provider(KEY, 300)
      .edit({ model: 'google/gemini-2.5-flash-image', prompt: 'or-slow', images: [black], params: {}, numImages: 1 })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    expect(slow?.kind).toBe('retryable');
    const port = await freePort();
    const dead = await createOpenRouterProvider({ apiKey: KEY, baseURL: `http://127.0.0.1:${port}/api/v1` })
      .edit({ model: 'google/gemini-2.5-flash-image', prompt: 'x', images: [black], params: {}, numImages: 1 })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    expect(dead?.kind).toBe('retryable');
    // It names the host it tried (issue 24: a bare "Connection error." said nowhere).
    expect(dead?.message).toBe(`connection error: cannot reach 127.0.0.1:${port} (ECONNREFUSED)`);
  });

  it('answers 429 with Retry-After above the stand-in rate limit', async () => {
    const limited = await startOpenRouterStandin({ rateLimitPerSecond: 3 });
    try {
      const p = createOpenRouterProvider({ apiKey: KEY, baseURL: limited.baseURL });
      const outcomes = await Promise.all(
        [0, 1, 2, 3, 4].map((i) =>
          p.generate({ model: 'google/gemini-2.5-flash-image', prompt: `rl-${i}`, params: {}, numImages: 1 }).then(
            () => 'ok',
            (e: ClassifiedError) => e,
          ),
        ),
      );
      const rejected = outcomes.filter((o): o is ClassifiedError => o instanceof ClassifiedError);
      expect(rejected).toHaveLength(2);
      expect(rejected[0]).toMatchObject({ kind: 'retryable', details: { status: 429, retryAfterMs: 1000 } });
    } finally {
      await limited.close();
    }
  });
});
