import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { createModelScopeProvider, type ModelScopeProviderOptions } from '../../activities/providers/modelscope/adapter';
import type { JsonValue, ProviderImage } from '../../activities/providers/provider';
import { freePort } from '../../lib/temporal/devServer';
import { ClassifiedError } from '../../lib/shared/errors';
import { modelscopeFaults, startModelScopeStandin, type ModelScopeStandin } from '../../activities/providers/modelscope/standin';

const KEY = 'ms-0123abcd-89ab-cdef-0123-456789abcdef';
const MODEL = 'Qwen/Qwen-Image-Edit-2509';
let standin: ModelScopeStandin;
let black: ProviderImage;

beforeAll(async () => {
  standin = await startModelScopeStandin();
  black = {
    data: await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000000' } })
      .png()
      .toBuffer(),
    mimeType: 'image/png',
  };
});
afterAll(async () => standin.close());

function provider(extra: Partial<ModelScopeProviderOptions> = {}, target: ModelScopeStandin = standin) {
  return createModelScopeProvider({ apiKey: KEY, baseURL: target.baseURL, pollIntervalMs: 5, maxWaitMs: 5000, ...extra });
}

async function editError(
  prompt: string,
  extra: Partial<ModelScopeProviderOptions> = {},
  target?: ModelScopeStandin,
): Promise<ClassifiedError> {
  try {
    await provider(extra, target).edit({ model: MODEL, prompt, images: [black], params: {}, numImages: 1 });
  } catch (err) {
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as Error).message).not.toContain(KEY);
    return err as ClassifiedError;
  }
  throw new Error('expected the edit to fail');
}

describe('ModelScope adapter (async task submit and poll)', () => {
  it('submits with async mode and data URIs, polls with the task-type header, downloads the output, heartbeats the task id and records quota headers', async () => {
    const beats: JsonValue[] = [];
    const result = await provider().edit({
      model: MODEL,
      prompt: 'ms-happy',
      images: [black, black],
      params: { size: '1024x1024', seed: 7 },
      numImages: 1,
      heartbeat: (d) => beats.push(d),
    });
    const calls = standin.callsFor('ms-happy');
    const submit = calls.filter((c) => c.kind === 'submit');
    expect(submit).toHaveLength(1);
    expect(submit[0]).toMatchObject({
      model: MODEL,
      imageCount: 2,
      imageTypes: ['image/png', 'image/png'],
      asyncMode: 'true',
      authorization: `Bearer ${KEY}`,
      fields: { size: '1024x1024', seed: 7 },
    });
    const polls = calls.filter((c) => c.kind === 'poll');
    expect(polls).toHaveLength(3); // PENDING, RUNNING, SUCCEED
    expect(polls.every((p) => p.taskType === 'image_generation' && p.taskId === submit[0]!.taskId)).toBe(true);
    expect(calls.filter((c) => c.kind === 'download')).toHaveLength(1);
    const { data } = await sharp(result.images[0]!.data).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(255);
    expect(result.requestId).toBe(submit[0]!.taskId);
    expect(result.info).toMatchObject({
      'modelscope-ratelimit-requests-remaining': expect.any(Number),
      'modelscope-ratelimit-model-requests-remaining': expect.any(Number),
    });
    // A heartbeat right after submit and one per poll, all naming the task.
    expect(beats.length).toBeGreaterThanOrEqual(4);
    expect(JSON.stringify(beats[beats.length - 1])).toContain(submit[0]!.taskId!);
    expect(JSON.stringify(beats)).not.toContain(KEY);
  });

  it('resumes a submitted task from previousHeartbeat without submitting again', async () => {
    standin.script('ms-resume', [modelscopeFaults.slowTask(6)]);
    const beats: JsonValue[] = [];
    const controller = new AbortController();
    const first = provider({ pollIntervalMs: 20 })
      .edit({
        model: MODEL,
        prompt: 'ms-resume',
        images: [black],
        params: {},
        numImages: 1,
        signal: controller.signal,
        heartbeat: (d) => {
          beats.push(d);
          if (beats.length === 3) controller.abort(); // the worker dies mid-poll
        },
      })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    expect((await first)?.kind).toBe('retryable');
    expect(standin.callsFor('ms-resume').filter((c) => c.kind === 'submit')).toHaveLength(1);

    const result = await provider().edit({
      model: MODEL,
      prompt: 'ms-resume',
      images: [black],
      params: {},
      numImages: 1,
      previousHeartbeat: beats[beats.length - 1]!,
    });
    const calls = standin.callsFor('ms-resume');
    expect(calls.filter((c) => c.kind === 'submit')).toHaveLength(1);
    expect(calls.filter((c) => c.kind === 'poll').length).toBeGreaterThanOrEqual(7);
    expect(result.images).toHaveLength(1);
    expect(result.info).toMatchObject({ resumedTasks: 1 });

    // A heartbeat from another request (another turn's prompt) is not reused.
    await provider().edit({
      model: MODEL,
      prompt: 'ms-resume other turn',
      images: [black],
      params: {},
      numImages: 1,
      previousHeartbeat: beats[beats.length - 1]!,
    });
    expect(standin.callsFor('ms-resume other turn').filter((c) => c.kind === 'submit')).toHaveLength(1);
  });

  it('fails as retryable after the wall-clock cap, keeping the task id for the next attempt', async () => {
    standin.script('ms-capped', [modelscopeFaults.slowTask(1000)]);
    const beats: JsonValue[] = [];
    const err = await provider({ pollIntervalMs: 20, maxWaitMs: 150 })
      .edit({ model: MODEL, prompt: 'ms-capped', images: [black], params: {}, numImages: 1, heartbeat: (d) => beats.push(d) })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    expect(err?.kind).toBe('retryable');
    expect(err?.message).toMatch(/still running/);
    const submitted = standin.callsFor('ms-capped').find((c) => c.kind === 'submit')!;
    expect(JSON.stringify(beats[beats.length - 1])).toContain(submitted.taskId!);
  });

  it('classifies a content-filtered task as blocked and another failed task as retryable', async () => {
    standin.script('ms-filtered', [modelscopeFaults.contentFiltered()]);
    standin.script('ms-failed', [modelscopeFaults.taskFailed()]);
    const blocked = await editError('ms-filtered');
    expect(blocked.kind).toBe('blocked');
    expect(blocked.message).toMatch(/inappropriate/);
    expect((await editError('ms-failed')).kind).toBe('retryable');
  });

  it('classifies 429 as retryable with Retry-After, 5xx as retryable, 400 as invalid, malformed bodies as retryable', async () => {
    standin.script('ms-429', [modelscopeFaults.rateLimited(3)]);
    standin.script('ms-500', [modelscopeFaults.serverError()]);
    standin.script('ms-400', [modelscopeFaults.badRequest()]);
    standin.script('ms-malformed', [modelscopeFaults.malformed()]);
    expect(await editError('ms-429')).toMatchObject({ kind: 'retryable', details: { status: 429, retryAfterMs: 3000 } });
    expect((await editError('ms-500')).kind).toBe('retryable');
    const bad = await editError('ms-400');
    expect(bad.kind).toBe('invalidRequest');
    // The request id ModelScope puts inside `errors` is kept for support.
    expect(bad.details.requestId).toMatch(/^standin-/);
    expect((await editError('ms-malformed')).kind).toBe('retryable');
  });

  it('classifies a 429 with the daily quota at 0 as quota exhausted until midnight Beijing time', async () => {
    const tiny = await startModelScopeStandin({ dailyQuota: 1 });
    try {
      const ok = await provider({}, tiny).edit({ model: MODEL, prompt: 'first', images: [black], params: {}, numImages: 1 });
      expect(ok.info).toMatchObject({ 'modelscope-ratelimit-requests-remaining': 0 });
      const err = await editError('second', {}, tiny);
      expect(err.kind).toBe('quotaExhausted');
      const reset = Date.parse(err.details.quotaResetAt!);
      expect(reset).toBeGreaterThan(Date.now());
      const hour = new Intl.DateTimeFormat('en-US', {
        timeZone: 'Asia/Shanghai',
        hour: 'numeric',
        minute: 'numeric',
        hourCycle: 'h23',
      }).format(new Date(reset));
      expect(hour).toBe('00:00');
    } finally {
      await tiny.close();
    }
  });

  it('generates from text alone (no image_url) and tolerates a base URL ending in /v1', async () => {
    const result = await createModelScopeProvider({ apiKey: KEY, baseURL: `${standin.baseURL}/v1`, pollIntervalMs: 5 }).generate({
      model: 'Qwen/Qwen-Image',
      prompt: 'ms-t2i',
      params: { size: '64x32' },
      numImages: 2,
    });
    expect(result.images).toHaveLength(2);
    const submits = standin.callsFor('ms-t2i').filter((c) => c.kind === 'submit');
    expect(submits).toHaveLength(2);
    expect(submits[0]!.imageCount).toBe(0);
    expect(String(result.info!.taskIds).split(',')).toHaveLength(2);
  });

  it('classifies unreachable servers as retryable and an empty key as invalid', async () => {
    const port = await freePort();
    const dead = await createModelScopeProvider({ apiKey: KEY, baseURL: `http://127.0.0.1:${port}` })
      .edit({ model: MODEL, prompt: 'x', images: [black], params: {}, numImages: 1 })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    expect(dead?.kind).toBe('retryable');
    expect(dead?.message).toBe(`connection error: cannot reach 127.0.0.1:${port} (ECONNREFUSED)`);
    const noKey = await createModelScopeProvider({ apiKey: '', baseURL: standin.baseURL })
      .edit({ model: MODEL, prompt: 'ms-nokey', images: [black], params: {}, numImages: 1 })
      .then(
        () => undefined,
        (e: unknown) => e as ClassifiedError,
      );
    expect(noKey?.kind).toBe('invalidRequest');
  });
});
