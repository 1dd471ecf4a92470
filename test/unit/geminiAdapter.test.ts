import { randomBytes } from 'node:crypto';
import { GoogleGenAI } from '@google/genai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listProviderModels } from '../../activities/providers/registry';
import sharp from 'sharp';
import { classifyGeminiError, createGeminiProvider, nextMidnight, parseDuration } from '../../activities/providers/gemini/adapter';
import type { JsonValue, ProviderImage } from '../../activities/providers/provider';
import { freePort } from '../../lib/temporal/devServer';
import { ClassifiedError } from '../../lib/shared/errors';
import { geminiFaults, startGeminiStandin, type GeminiStandin } from '../../activities/providers/gemini/standin';

// The stand-in plays the API as of 2026-06-01, before the 2.5 Flash Image and -preview shutdowns, so
// those models' behaviours stay covered (test/unit/modelCheck.test.ts covers today's refusals).
const BEFORE_SHUTDOWNS = () => new Date('2026-06-01T00:00:00Z');

const KEY = 'AIzaSyStandinKey0000000000000000000000';
let standin: GeminiStandin;
let black: ProviderImage;
let white: ProviderImage;

beforeAll(async () => {
  standin = await startGeminiStandin({ now: BEFORE_SHUTDOWNS });
  black = {
    data: await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000000' } })
      .png()
      .toBuffer(),
    mimeType: 'image/png',
  };
  white = {
    data: await sharp({ create: { width: 6, height: 4, channels: 3, background: '#ffffff' } })
      .png()
      .toBuffer(),
    mimeType: 'image/png',
  };
});
afterAll(async () => standin.close());

function provider(apiKey = KEY) {
  return createGeminiProvider({ apiKey, baseURL: standin.baseURL, timeoutMs: 5000 });
}

async function firstPixel(data: Buffer): Promise<number> {
  const { data: raw } = await sharp(data).raw().toBuffer({ resolveWithObject: true });
  return raw[0]!;
}

async function editError(prompt: string, model = 'gemini-2.5-flash-image', apiKey = KEY): Promise<ClassifiedError> {
  try {
    await provider(apiKey).edit({ model, prompt, images: [black], params: {}, numImages: 1 });
  } catch (err) {
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as Error).message).not.toContain(apiKey || 'never-empty');
    return err as ClassifiedError;
  }
  throw new Error('expected the edit to fail');
}

describe('Gemini adapter through @google/genai', () => {
  it('edits with several images, sends the key only as x-goog-api-key, passes image config and reports usage', async () => {
    const result = await provider().edit({
      model: 'gemini-3.1-flash-image-preview',
      prompt: 'g-multi',
      images: [black, white, black],
      params: { aspectRatio: '16:9', imageSize: '2K' },
      numImages: 1,
    });
    const call = standin.callsFor('g-multi')[0]!;
    expect(call).toMatchObject({
      model: 'gemini-3.1-flash-image-preview',
      imageCount: 3,
      imageTypes: ['image/png', 'image/png', 'image/png'],
      apiKey: KEY,
    });
    expect(call.imageSizes[1]).toEqual({ width: 6, height: 4 });
    // Image alone: no chatty text answer to pay for and re-ask.
    expect(call.generationConfig).toMatchObject({ responseModalities: ['IMAGE'], imageConfig: { aspectRatio: '16:9', imageSize: '2K' } });
    expect(result.images).toHaveLength(1);
    expect(result.images[0]!.mimeType).toBe('image/png');
    expect(await firstPixel(result.images[0]!.data)).toBe(255); // black inverted
    expect(result.requestId).toMatch(/^resp_standin_/);
    expect(result.usage).toMatchObject({ outputImageTokens: 1120, outputTextTokens: 0 });
    expect(result.usage!.inputTokens).toBeGreaterThan(0);
  });

  it('leaves imageSize out for gemini-2.5-flash-image (one size tier), sends it more than 3 inputs (advice, not a limit) and refuses more inputs than a model takes', async () => {
    await provider().edit({
      model: 'gemini-2.5-flash-image',
      prompt: 'g-25',
      images: [black],
      params: { aspectRatio: '1:1', imageSize: '2K' },
      numImages: 1,
    });
    expect(standin.callsFor('g-25')[0]!.generationConfig.imageConfig).toEqual({ aspectRatio: '1:1' });
    const four = await provider().edit({
      model: 'gemini-2.5-flash-image',
      prompt: 'g-four',
      images: [black, black, black, black],
      params: {},
      numImages: 1,
    });
    expect(four.images).toHaveLength(1);
    expect(standin.callsFor('g-four')[0]).toMatchObject({ status: 200, imageCount: 4 });
    const err = await provider()
      .edit({ model: 'gemini-3-pro-image-preview', prompt: 'g-too-many', images: Array(15).fill(black), params: {}, numImages: 1 })
      .catch((e: unknown) => e);
    expect((err as ClassifiedError).kind).toBe('inputError');
    expect(standin.callsFor('g-too-many')).toHaveLength(0);
  });

  it('sends the largest inputs through the Files API when the inline request would pass 100 MB, once per image', async () => {
    // 3 × 6 MB of noise PNG (24 MB as base64): inline since the Gemini API took 100 MB (it was 20 MB).
    const noise = await sharp(randomBytes(1400 * 1400 * 3), { raw: { width: 1400, height: 1400, channels: 3 } })
      .png({ compressionLevel: 1 })
      .toBuffer();
    const mid = { data: noise, mimeType: 'image/png' };
    const inlineBefore = standin.uploadedFiles();
    const slow = createGeminiProvider({ apiKey: KEY, baseURL: standin.baseURL, timeoutMs: 120_000 });
    await slow.edit({ model: 'gemini-3.1-flash-image', prompt: 'g-mid', images: [mid, mid, mid], params: {}, numImages: 1 });
    expect(standin.callsFor('g-mid')[0]).toMatchObject({ status: 200, imageCount: 3 });
    expect(standin.uploadedFiles()).toBe(inlineBefore);
    // 80 MB (107 MB as base64) does not fit inline; it is uploaded and named by fileData instead.
    const big = { data: Buffer.alloc(80 * 1024 * 1024, 7), mimeType: 'image/png' };
    const before = standin.uploadedFiles();
    const result = await slow.edit({
      model: 'gemini-3.1-flash-image',
      prompt: 'g-huge',
      images: [black, big],
      params: {},
      numImages: 1,
    });
    expect(result.images).toHaveLength(1);
    expect(standin.callsFor('g-huge')[0]).toMatchObject({ status: 200, imageCount: 2 });
    expect(standin.uploadedFiles() - before).toBe(1);
    // The same adapter reuses the upload; the small image stays inline.
    const p = createGeminiProvider({ apiKey: KEY, baseURL: standin.baseURL, timeoutMs: 120_000 });
    await p.edit({ model: 'gemini-3.1-flash-image', prompt: 'g-huge-again', images: [black, big], params: {}, numImages: 1 });
    await p.edit({ model: 'gemini-3.1-flash-image', prompt: 'g-huge-again', images: [black, big], params: {}, numImages: 1 });
    expect(standin.uploadedFiles() - before).toBe(2);
    expect(standin.callsFor('g-huge-again').map((c) => c.status)).toEqual([200, 200]);
  });

  it('the stand-in answers 403 for a file it does not have', async () => {
    const ai = new GoogleGenAI({ apiKey: KEY, vertexai: false, httpOptions: { baseUrl: standin.baseURL } });
    const err = await ai.models
      .generateContent({
        model: 'gemini-2.5-flash-image',
        contents: [
          {
            role: 'user',
            parts: [{ text: 'g-nofile' }, { fileData: { fileUri: `${standin.baseURL}/v1beta/files/nope`, mimeType: 'image/png' } }],
          },
        ],
      })
      .catch((e: { status?: number; message?: string }) => e);
    expect(err).toMatchObject({
      status: 403,
      message: expect.stringMatching(/permission to access the File files\/nope or it may not exist/),
    });
  });

  it('retries IMAGE_OTHER and NO_IMAGE (not a refusal): asked again once, then retryable', async () => {
    standin.script('g-other-once', [geminiFaults.finishReason('IMAGE_OTHER')]);
    const ok = await provider().edit({
      model: 'gemini-2.5-flash-image',
      prompt: 'g-other-once',
      images: [black],
      params: {},
      numImages: 1,
    });
    expect(ok.images).toHaveLength(1);
    expect(standin.callsFor('g-other-once')).toHaveLength(2);
    for (const reason of ['IMAGE_OTHER', 'NO_IMAGE']) {
      standin.script(`g-${reason}-always`, [geminiFaults.finishReason(reason)], { repeat: true });
      const err = await editError(`g-${reason}-always`);
      expect(err.kind).toBe('retryable');
      expect(err.message).toMatch(new RegExp(`finish reason ${reason}`));
      expect(standin.callsFor(`g-${reason}-always`)).toHaveLength(2);
    }
  });

  it('generates from text alone, one call per image asked for', async () => {
    const result = await provider().generate({
      model: 'gemini-2.5-flash-image',
      prompt: 'g-t2i',
      params: { aspectRatio: '16:9' },
      numImages: 2,
    });
    expect(result.images).toHaveLength(2);
    expect(standin.callsFor('g-t2i')).toHaveLength(2);
    const meta = await sharp(result.images[0]!.data).metadata();
    expect(meta.width! / meta.height!).toBeCloseTo(16 / 9, 1);
    expect(result.usage!.outputImageTokens).toBe(2 * 1290);
  });

  it('skips thought images (gemini-3-pro-image-preview answers with an interim draft first)', async () => {
    const result = await provider().edit({
      model: 'gemini-3-pro-image-preview',
      prompt: 'g-thoughts',
      images: [black],
      params: {},
      numImages: 1,
    });
    expect(result.images).toHaveLength(1);
    const meta = await sharp(result.images[0]!.data).metadata();
    expect(meta.width).toBe(8); // the answer, not the 16 px magenta draft
    expect(await firstPixel(result.images[0]!.data)).toBe(255);
    expect(result.usage!.thoughtsTokens).toBe(120);
  });

  it('runs multi-turn rows as a real chat: history is JSON, signatures go back verbatim, each turn edits the last output', async () => {
    const p = provider();
    const turn1 = await p.chatTurn!({
      model: 'gemini-3-pro-image-preview',
      prompt: 'g-chat turn one',
      images: [black],
      params: {},
      numImages: 1,
    });
    expect(await firstPixel(turn1.images[0]!.data)).toBe(255);
    // The caller persists the history between turns (and between attempts): it must survive JSON.
    const stored = JSON.parse(JSON.stringify(turn1.history)) as JsonValue[];
    expect(stored).toHaveLength(2);
    const modelTurn = stored[1] as { role: string; parts: { thoughtSignature?: string; thought?: boolean }[] };
    expect(modelTurn.role).toBe('model');
    const signatures = modelTurn.parts.flatMap((part) => (part.thoughtSignature ? [part.thoughtSignature] : []));
    expect(signatures.length).toBeGreaterThan(0);

    const turn2 = await p.chatTurn!({
      model: 'gemini-3-pro-image-preview',
      prompt: 'g-chat turn two',
      images: [],
      params: {},
      numImages: 1,
      history: stored,
    });
    const second = standin.callsFor('g-chat turn two')[0]!;
    expect(second).toMatchObject({ status: 200, turns: 3, imageCount: 0 });
    expect(second.signaturesReturned).toEqual(signatures);
    // Turn two edited turn one's output (white): inverted back to black.
    expect(await firstPixel(turn2.images[0]!.data)).toBe(0);
    expect(turn2.history).toHaveLength(4);

    // Without the signatures Gemini 3 refuses the turn with a 400: a final invalid request.
    const stripped = JSON.parse(JSON.stringify(stored, (k, v: unknown) => (k === 'thoughtSignature' ? undefined : v))) as JsonValue[];
    const err = await p.chatTurn!({
      model: 'gemini-3-pro-image-preview',
      prompt: 'g-chat unsigned',
      images: [],
      params: {},
      numImages: 1,
      history: stripped,
    }).catch((e: unknown) => e);
    expect((err as ClassifiedError).kind).toBe('invalidRequest');
    expect((err as Error).message).toMatch(/thought_signature/);
    expect(standin.callsFor('g-chat unsigned')[0]!.status).toBe(400);
  });

  it('classifies 429 with RetryInfo as retryable with its delay, and a per-day quota as quota exhausted until midnight Pacific', async () => {
    standin.script('g-rate', [geminiFaults.rateLimited(37)]);
    standin.script('g-daily', [geminiFaults.dailyQuota()]);
    const rate = await editError('g-rate');
    expect(rate.kind).toBe('retryable');
    expect(rate.details).toMatchObject({ status: 429, retryAfterMs: 37_000 });
    expect(rate.message).toMatch(/RESOURCE_EXHAUSTED/);
    const daily = await editError('g-daily');
    expect(daily.kind).toBe('quotaExhausted');
    const reset = Date.parse(daily.details.quotaResetAt!);
    expect(reset).toBeGreaterThan(Date.now());
    expect(reset - Date.now()).toBeLessThanOrEqual(25 * 3600_000);
    const hourInLA = new Intl.DateTimeFormat('en-US', {
      timeZone: 'America/Los_Angeles',
      hour: 'numeric',
      minute: 'numeric',
      hourCycle: 'h23',
    }).format(new Date(reset));
    expect(hourInLA).toBe('00:00');
  });

  it('classifies 500/503 as retryable, 400 as invalid, safety finish reasons and blocked prompts as blocked', async () => {
    standin.script('g-503', [geminiFaults.unavailable()]);
    standin.script('g-500', [geminiFaults.serverError()]);
    standin.script('g-400', [geminiFaults.invalidArgument()]);
    standin.script('g-unsafe', [geminiFaults.finishReason('IMAGE_SAFETY')]);
    standin.script('g-prohibited', [geminiFaults.finishReason('PROHIBITED_CONTENT')]);
    standin.script('g-prompt-blocked', [geminiFaults.promptBlocked('SAFETY')]);
    expect((await editError('g-503')).kind).toBe('retryable');
    expect((await editError('g-500')).kind).toBe('retryable');
    expect((await editError('g-400')).kind).toBe('invalidRequest');
    const unsafe = await editError('g-unsafe');
    expect(unsafe.kind).toBe('blocked');
    expect(unsafe.message).toMatch(/IMAGE_SAFETY/);
    expect((await editError('g-prohibited')).kind).toBe('blocked');
    const prompt = await editError('g-prompt-blocked');
    expect(prompt.kind).toBe('blocked');
    expect(prompt.message).toMatch(/SAFETY/);
    // Each of those was one call: blocked answers are not asked again.
    expect(standin.callsFor('g-unsafe')).toHaveLength(1);
    expect((await editError('g-no-key', undefined, '')).kind).toBe('invalidRequest');
  });

  it('asks once more when the answer has text but no image, then fails as invalid', async () => {
    standin.script('g-chatty-once', [geminiFaults.textOnly()]);
    const ok = await provider().edit({
      model: 'gemini-2.5-flash-image',
      prompt: 'g-chatty-once',
      images: [black],
      params: {},
      numImages: 1,
    });
    expect(ok.images).toHaveLength(1);
    expect(standin.callsFor('g-chatty-once')).toHaveLength(2);
    // Both answers are billed: usage covers the two calls.
    expect(ok.usage!.inputTokens).toBeGreaterThan(20);

    standin.script('g-chatty-always', [geminiFaults.textOnly('Sure, what colour?')], { repeat: true });
    const err = await editError('g-chatty-always');
    expect(err.kind).toBe('invalidRequest');
    expect(err.message).toMatch(/no image in the answer/);
    expect(err.message).toMatch(/what colour/);
    expect(standin.callsFor('g-chatty-always')).toHaveLength(2);
  });

  it('classifies malformed bodies, timeouts and unreachable servers as retryable', async () => {
    standin.script('g-malformed', [geminiFaults.malformed()]);
    standin.script('g-slow', [geminiFaults.slow(3000)]);
    expect((await editError('g-malformed')).kind).toBe('retryable');
    const slow = await createGeminiProvider({ apiKey: KEY, baseURL: standin.baseURL, timeoutMs: 300 })
      .edit({ model: 'gemini-2.5-flash-image', prompt: 'g-slow', images: [black], params: {}, numImages: 1 })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    if (!slow) throw new Error('expected a timeout');
    expect(slow.kind).toBe('retryable');
    expect(slow.message).toMatch(/timed out/);
    const port = await freePort();
    const dead = await createGeminiProvider({ apiKey: KEY, baseURL: `http://127.0.0.1:${port}` })
      .edit({ model: 'gemini-2.5-flash-image', prompt: 'x', images: [black], params: {}, numImages: 1 })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    if (!dead) throw new Error('expected a connection error');
    expect(dead).toBeInstanceOf(ClassifiedError);
    expect(dead.kind).toBe('retryable');
    expect(dead.message).not.toContain(KEY);
    // It names the host it tried (issue 24: "connection error: fetch failed" said nowhere).
    expect(dead.message).toBe(`connection error: cannot reach 127.0.0.1:${port} (ECONNREFUSED)`);
  });

  it('answers 429 with Retry-After and RetryInfo above the stand-in rate limit', async () => {
    const limited = await startGeminiStandin({ rateLimitPerSecond: 2, now: BEFORE_SHUTDOWNS });
    try {
      const p = createGeminiProvider({ apiKey: KEY, baseURL: limited.baseURL });
      const outcomes = await Promise.all(
        [0, 1, 2, 3].map((i) =>
          p.edit({ model: 'gemini-2.5-flash-image', prompt: `rl-${i}`, images: [black], params: {}, numImages: 1 }).then(
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

describe('Gemini helpers', () => {
  it('parses durations and finds the next midnight across DST', () => {
    expect(parseDuration('37s')).toBe(37_000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration(undefined)).toBeUndefined();
    // 2026-03-08 is the US spring-forward day: midnight after 2026-03-08 10:00 PDT is 2026-03-09T07:00Z.
    expect(nextMidnight('America/Los_Angeles', new Date('2026-03-08T17:00:00Z'))).toBe('2026-03-09T07:00:00.000Z');
    expect(nextMidnight('America/Los_Angeles', new Date('2026-01-15T12:00:00Z'))).toBe('2026-01-16T08:00:00.000Z');
    expect(nextMidnight('Asia/Shanghai', new Date('2026-01-15T12:00:00Z'))).toBe('2026-01-15T16:00:00.000Z');
  });

  it('treats an unknown error as retryable', () => {
    expect(classifyGeminiError(new Error('boom')).kind).toBe('retryable');
  });
});

describe('the Gemini stand-in holds the real contract (through @google/genai)', () => {
  const ai = () => new GoogleGenAI({ apiKey: KEY, vertexai: false, httpOptions: { baseUrl: standin.baseURL } });
  const ask = (model: string, config: Record<string, unknown>, images = 1) =>
    ai()
      .models.generateContent({
        model,
        contents: [
          {
            role: 'user',
            parts: [
              { text: 'g-contract' },
              ...Array.from({ length: images }, () => ({ inlineData: { mimeType: 'image/png', data: black.data.toString('base64') } })),
            ],
          },
        ],
        config,
      })
      .then(
        () => 200,
        (e: { status?: number; message?: string }) => ({ status: e.status, message: e.message }),
      );

  it('rejects aspect ratios, image sizes and input counts per model, and unknown models', async () => {
    expect(await ask('gemini-3.1-flash-image', { imageConfig: { aspectRatio: '1:8', imageSize: '512' } })).toBe(200);
    expect(await ask('gemini-2.5-flash-image', { imageConfig: { aspectRatio: '1:8' } })).toMatchObject({
      status: 400,
      message: expect.stringMatching(/Unsupported aspect ratio: 1:8/),
    });
    expect(await ask('gemini-3-pro-image-preview', { imageConfig: { imageSize: '512' } })).toMatchObject({
      status: 400,
      message: expect.stringMatching(/Invalid image size: 512/),
    });
    expect(await ask('gemini-2.5-flash-image', { imageConfig: { imageSize: '1K' } })).toMatchObject({ status: 400 });
    expect(await ask('gemini-3-pro-image', {}, 15)).toMatchObject({ status: 400, message: expect.stringMatching(/at most 14/) });
    expect(await ask('gemini-2.5-flash-image', {}, 5)).toBe(200);
    expect(await ask('gemini-9-imaginary', {})).toMatchObject({ status: 404, message: expect.stringMatching(/NOT_FOUND/) });
  });

  it('rejects a request body over 100 MB', async () => {
    const big = Buffer.alloc(76 * 1024 * 1024).toString('base64');
    const err = await ai()
      .models.generateContent({
        model: 'gemini-2.5-flash-image',
        contents: [{ role: 'user', parts: [{ text: 'g-contract-big' }, { inlineData: { mimeType: 'image/png', data: big } }] }],
      })
      .catch((e: { status?: number; message?: string }) => e);
    expect(err).toMatchObject({ status: 400, message: expect.stringMatching(/Request payload size exceeds the limit: 104857600 bytes/) });
  });

  it('lists its models through models.list (paged)', async () => {
    const listed = (await listProviderModels('gemini', { apiKey: KEY, baseURL: standin.baseURL }))!;
    expect(listed.map((m) => m.id)).toEqual(
      expect.arrayContaining(['gemini-2.5-flash-image', 'gemini-3-pro-image-preview', 'gemini-3.1-flash-image', 'gemini-2.5-flash']),
    );
    expect(listed.find((m) => m.id === 'gemini-2.5-flash-image')!.supportedActions).toContain('generateContent');
  });
});
