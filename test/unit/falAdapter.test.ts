import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFalProvider, type FalProviderOptions } from '../../activities/providers/fal/adapter';
import { capabilities, estimateCostUsd } from '../../activities/providers/models';
import type { JsonValue, ProviderImage } from '../../activities/providers/provider';
import { ClassifiedError } from '../../lib/shared/errors';
import { falFaults, startFalStandin, type FalStandin } from '../../activities/providers/fal/standin';

// The fal.ai adapter (plain fetch) against the queue-API stand-in: submit, status polls, result,
// download; the request id heartbeated so a retried attempt polls the same (paid) request.

const KEY = '3f2a9c1e-7b4d-4e8a-9f01-2c3d4e5f6a7b:0123456789abcdef0123456789abcdef';
const KONTEXT = 'fal-ai/flux-pro/kontext';
let standin: FalStandin;
let black: ProviderImage;

beforeAll(async () => {
  standin = await startFalStandin();
  black = {
    data: await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000000' } })
      .png()
      .toBuffer(),
    mimeType: 'image/png',
  };
});
afterAll(async () => standin.close());

function provider(extra: Partial<FalProviderOptions> = {}) {
  return createFalProvider({ apiKey: KEY, baseURL: standin.baseURL, pollIntervalMs: 5, maxWaitMs: 5000, ...extra });
}

/** The ClassifiedError a call fails with (the test fails if it succeeds). */
async function fails(call: Promise<unknown>): Promise<ClassifiedError> {
  const outcome = await call.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(outcome).toBeInstanceOf(ClassifiedError);
  return outcome as ClassifiedError;
}

async function editError(prompt: string, model = KONTEXT, params = {}, extra: Partial<FalProviderOptions> = {}): Promise<ClassifiedError> {
  try {
    await provider(extra).edit({ model, prompt, images: [black], params, numImages: 1 });
  } catch (err) {
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as Error).message).not.toContain(KEY);
    return err as ClassifiedError;
  }
  throw new Error('expected the edit to fail');
}

describe('fal.ai adapter (queue API)', () => {
  it('submits with Key auth and a data URI, polls the status URL it was given, reads the result, downloads without the key', async () => {
    const beats: JsonValue[] = [];
    const result = await provider().edit({
      model: KONTEXT,
      prompt: 'fal-happy',
      images: [black],
      params: { seed: 7, guidanceScale: 3.5, aspectRatio: '16:9', size: '1024x1024' },
      numImages: 1,
      heartbeat: (d) => beats.push(d),
    });
    const calls = standin.callsFor('fal-happy');
    const submit = calls.filter((c) => c.kind === 'submit');
    expect(submit).toHaveLength(1);
    expect(submit[0]).toMatchObject({
      model: KONTEXT,
      imageCount: 1,
      authorization: `Key ${KEY}`,
      fields: { seed: 7, guidance_scale: 3.5, aspect_ratio: '16:9' },
    });
    // `size` is not a kontext field: left out.
    expect(submit[0]!.fields.size).toBeUndefined();
    expect(calls.filter((c) => c.kind === 'status').map((c) => c.status)).toEqual([202, 202, 200]);
    expect(calls.filter((c) => c.kind === 'result')).toHaveLength(1);
    const download = calls.filter((c) => c.kind === 'download');
    expect(download).toHaveLength(1);
    expect(download[0]!.authorization).toBe('');
    const { data } = await sharp(result.images[0]!.data).raw().toBuffer({ resolveWithObject: true });
    expect(data[0]).toBe(255);
    expect(result.requestId).toBe(submit[0]!.requestId);
    expect(beats.length).toBeGreaterThanOrEqual(4);
    expect(JSON.stringify(beats[beats.length - 1])).toContain(submit[0]!.requestId!);
    expect(JSON.stringify(beats)).not.toContain(KEY);
    // $0.04 per image (fal's kontext page).
    expect(estimateCostUsd('fal', KONTEXT, {}, undefined, 1)).toBe(0.04);
  });

  it('sends several images as image_urls to multi-image endpoints, and num_images up to 4 a request', async () => {
    const result = await provider().edit({
      model: 'fal-ai/nano-banana/edit',
      prompt: 'fal-multi',
      images: [black, black],
      params: {},
      numImages: 6,
    });
    expect(result.images).toHaveLength(6);
    const submits = standin.callsFor('fal-multi').filter((c) => c.kind === 'submit');
    expect(submits.map((s) => [s.imageCount, s.fields.num_images])).toEqual([
      [2, 4],
      [2, 2],
    ]);
    expect(estimateCostUsd('fal', 'fal-ai/nano-banana/edit', {}, undefined, 6)).toBeUndefined();
  });

  it("today's Nano Banana endpoints: 2 at $0.08 an image, 2.1 with its 14 ratios (1:4 included) and 14 references", async () => {
    const two = await provider().edit({ model: 'fal-ai/nano-banana-2/edit', prompt: 'fal-nb2', images: [black], params: {}, numImages: 1 });
    expect(two.images).toHaveLength(1);
    expect(estimateCostUsd('fal', 'fal-ai/nano-banana-2/edit', {}, undefined, 2)).toBe(0.16);
    const caps = capabilities('fal', 'google/nano-banana-2.1/edit');
    expect(caps).toMatchObject({ known: true, maxInputImages: 14 });
    expect(caps.aspectRatios).toHaveLength(15); // auto and 14 ratios
    await provider().edit({
      model: 'google/nano-banana-2.1/edit',
      prompt: 'fal-nb21',
      images: [black, black, black],
      params: { aspectRatio: '1:4' },
      numImages: 1,
    });
    const [submit] = standin.callsFor('fal-nb21').filter((c) => c.kind === 'submit');
    expect(submit).toMatchObject({ status: 200, imageCount: 3, fields: { aspect_ratio: '1:4' } });
  });

  it('a retried attempt polls the request the crashed one submitted instead of paying for another', async () => {
    standin.script('fal-crash', [falFaults.slowRequest(6)]);
    const beats: JsonValue[] = [];
    const controller = new AbortController();
    const first = provider({ pollIntervalMs: 20 }).edit({
      model: KONTEXT,
      prompt: 'fal-crash',
      images: [black],
      params: {},
      numImages: 1,
      signal: controller.signal,
      heartbeat: (d) => beats.push(d),
    });
    // The worker "crashes" once the request is queued and polled.
    while (standin.callsFor('fal-crash').filter((c) => c.kind === 'status').length < 2) await new Promise((r) => setTimeout(r, 5));
    controller.abort();
    await expect(first).rejects.toBeInstanceOf(ClassifiedError);
    const before = standin.submitted();
    const result = await provider().edit({
      model: KONTEXT,
      prompt: 'fal-crash',
      images: [black],
      params: {},
      numImages: 1,
      previousHeartbeat: beats[beats.length - 1],
    });
    expect(standin.submitted()).toBe(before);
    const submits = standin.callsFor('fal-crash').filter((c) => c.kind === 'submit');
    expect(submits).toHaveLength(1);
    expect(result.requestId).toBe(submits[0]!.requestId);
    expect(result.info).toMatchObject({ resumedRequests: 1 });
  });

  it('a heartbeat from another call (other prompt) is not resumed; a resumed request that is gone is submitted afresh', async () => {
    const beats: JsonValue[] = [];
    await provider().edit({
      model: KONTEXT,
      prompt: 'fal-turn1',
      images: [black],
      params: {},
      numImages: 1,
      heartbeat: (d) => beats.push(d),
    });
    await provider().edit({
      model: KONTEXT,
      prompt: 'fal-turn2',
      images: [black],
      params: {},
      numImages: 1,
      previousHeartbeat: beats[beats.length - 1],
    });
    expect(standin.callsFor('fal-turn2').filter((c) => c.kind === 'submit')).toHaveLength(1);
    expect(standin.callsFor('fal-turn1').filter((c) => c.kind === 'status').length).toBe(3);
    // A heartbeat naming a request the queue does not know (expired): 404 on its status, so submit.
    const gone = JSON.parse(JSON.stringify(beats[beats.length - 1])) as {
      fal: { key: string; requests: { id: string; statusUrl: string; responseUrl: string }[] };
    };
    gone.fal.requests[0]!.statusUrl = gone.fal.requests[0]!.statusUrl.replace(/requests\/[^/]+/, 'requests/no-such-request');
    await provider().edit({
      model: KONTEXT,
      prompt: 'fal-turn1',
      images: [black],
      params: {},
      numImages: 1,
      previousHeartbeat: gone as unknown as JsonValue,
    });
    expect(standin.callsFor('fal-turn1').filter((c) => c.kind === 'submit')).toHaveLength(2);
  });

  it('a request still running at the wait limit fails retryable and keeps its id in the heartbeat', async () => {
    standin.script('fal-long', [falFaults.slowRequest(1000)]);
    const beats: JsonValue[] = [];
    const err = await fails(
      provider({ maxWaitMs: 60, pollIntervalMs: 10 }).edit({
        model: KONTEXT,
        prompt: 'fal-long',
        images: [black],
        params: {},
        numImages: 1,
        heartbeat: (d) => beats.push(d),
      }),
    );
    expect(err).toMatchObject({ kind: 'retryable' });
    expect(err.message).toMatch(/still running/);
    const id = standin.callsFor('fal-long').find((c) => c.kind === 'submit')!.requestId!;
    expect(JSON.stringify(beats[beats.length - 1])).toContain(id);
  });

  it('classifies fal’s answers: content policy, validation, unreadable image, rate limit, exhausted balance, a failed run, an unknown app, a bad key', async () => {
    standin.script('fal-refused', [falFaults.contentPolicy()]);
    expect(await editError('fal-refused')).toMatchObject({ kind: 'blocked' });
    const range = await editError('fal-range', KONTEXT, { guidanceScale: 30 });
    expect(range.kind).toBe('invalidRequest');
    expect(range.message).toMatch(/^422 .*less than or equal to 20 \(body\.guidance_scale\)/);
    const ratio = await editError('fal-ratio', KONTEXT, { aspectRatio: '5:4' });
    expect(ratio.kind).toBe('invalidRequest');
    standin.script('fal-busy', [falFaults.rateLimited(2)]);
    expect(await editError('fal-busy')).toMatchObject({ kind: 'retryable', details: { status: 429, retryAfterMs: 2000 } });
    standin.script('fal-broke', [falFaults.exhaustedBalance()]);
    expect(await editError('fal-broke')).toMatchObject({ kind: 'quotaExhausted' });
    standin.script('fal-runfail', [falFaults.failedRun()]);
    expect(await editError('fal-runfail')).toMatchObject({ kind: 'retryable', details: { status: 500 } });
    expect(await editError('fal-unknown', 'fal-ai/no-such-model')).toMatchObject({ kind: 'invalidRequest', details: { status: 404 } });
    const badKey = await fails(
      provider({ apiKey: '' }).edit({ model: KONTEXT, prompt: 'fal-nokey', images: [black], params: {}, numImages: 1 }),
    );
    expect(badKey).toMatchObject({ kind: 'invalidRequest', details: { status: 401 } });
    const garbage: ProviderImage = { data: Buffer.from('not an image'), mimeType: 'image/png' };
    const unreadable = await fails(provider().edit({ model: KONTEXT, prompt: 'fal-garbage', images: [garbage], params: {}, numImages: 1 }));
    expect(unreadable).toMatchObject({ kind: 'invalidRequest' });
    expect(unreadable.message).toMatch(/Failed to load the image/);
  });

  it("request errors are classed by X-Fal-Error-Type / error_type, and fal's own queue retries are off (ours alone)", async () => {
    await provider().edit({ model: KONTEXT, prompt: 'fal-noretry', images: [black], params: {}, numImages: 1 });
    expect(standin.callsFor('fal-noretry').find((c) => c.kind === 'submit')).toMatchObject({ noRetry: '1' });
    standin.script('fal-disconnected', [falFaults.requestError('runner_disconnected')]);
    const gone = await editError('fal-disconnected');
    expect(gone).toMatchObject({ kind: 'retryable', details: { status: 503 } });
    expect(gone.message).toMatch(/^503 .*The runner disconnected unexpectedly during processing \(runner_disconnected\)$/);
    standin.script('fal-timeout', [falFaults.requestError('request_timeout')]);
    expect((await editError('fal-timeout')).message).toMatch(/\(request_timeout\)$/);
    // The caller's own request: final, however it is answered.
    standin.script('fal-badreq', [falFaults.requestError('bad_request')]);
    expect(await editError('fal-badreq')).toMatchObject({ kind: 'invalidRequest', details: { status: 400 } });
    // A model error fal marks not retryable is final even as a 5xx.
    standin.script('fal-final500', [
      { status: 500, body: { detail: 'Model failed on this input' }, headers: { 'x-fal-retryable': 'false' } },
    ]);
    expect(await editError('fal-final500')).toMatchObject({ kind: 'invalidRequest', details: { status: 500 } });
  });

  it('an edit endpoint needs its image; text-to-image goes to a text-to-image endpoint', async () => {
    const result = await provider().generate({
      model: 'fal-ai/flux-pro/kontext/text-to-image',
      prompt: 'fal-t2i',
      params: { aspectRatio: '1:1' },
      numImages: 1,
    });
    expect(result.images).toHaveLength(1);
    const missing = await fails(provider().generate({ model: KONTEXT, prompt: 'fal-noimage', params: {}, numImages: 1 }));
    expect(missing).toMatchObject({ kind: 'invalidRequest' });
    expect(missing.message).toMatch(/Field required \(body\.image_url\)/);
    expect(capabilities('fal', 'fal-ai/flux-pro/kontext/text-to-image').editCapable).toBe(false);
  });
});

describe("fal.ai: the account's concurrency limit", () => {
  it('is 2 (a new account) unless FAL_CONCURRENCY says more; a bad value is refused by name', async () => {
    const { providerFromEnv } = await import('../../activities/providers/registry');
    expect((await providerFromEnv('fal', { FAL_KEY: KEY })).maxConcurrentCalls).toBe(2);
    expect((await providerFromEnv('fal', { FAL_KEY: KEY, FAL_CONCURRENCY: '40' })).maxConcurrentCalls).toBe(40);
    await expect(providerFromEnv('fal', { FAL_KEY: KEY, FAL_CONCURRENCY: 'lots' })).rejects.toThrow(
      'FAL_CONCURRENCY must be a whole number of at least 1, not "lots"',
    );
  });

  it('the stand-in plays the limit: requests past it wait IN_QUEUE with their position, never rejected', async () => {
    const capped = await startFalStandin({ accountConcurrency: 1, pollsUntilDone: 1 });
    try {
      const submit = async (prompt: string) =>
        (await (
          await fetch(`${capped.baseURL}/${KONTEXT}`, {
            method: 'POST',
            headers: { authorization: `Key ${KEY}`, 'content-type': 'application/json' },
            body: JSON.stringify({ prompt, image_url: `data:image/png;base64,${black.data.toString('base64')}` }),
          })
        ).json()) as { status_url: string };
      const poll = async (url: string) => {
        const r = await fetch(url, { headers: { authorization: `Key ${KEY}` } });
        return { code: r.status, ...((await r.json()) as { status: string; queue_position?: number }) };
      };
      const [a, b] = [await submit('cap-a'), await submit('cap-b')];
      expect(await poll(a.status_url)).toMatchObject({ code: 202 });
      // However often it is polled, b waits while a holds the account's one slot.
      for (let i = 0; i < 3; i++) expect(await poll(b.status_url)).toMatchObject({ code: 202, status: 'IN_QUEUE', queue_position: 0 });
      expect(await poll(a.status_url)).toMatchObject({ code: 200, status: 'COMPLETED' });
      expect(await poll(b.status_url)).toMatchObject({ code: 202 });
      expect(await poll(b.status_url)).toMatchObject({ code: 200, status: 'COMPLETED' });
      expect(capped.maxOutstanding()).toBe(2);
    } finally {
      await capped.close();
    }
  });
});
