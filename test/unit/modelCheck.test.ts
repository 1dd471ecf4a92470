import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createModelCheckActivities } from '../../activities/providers/modelCheck';
import { startGeminiStandin, type GeminiStandin } from '../../activities/providers/gemini/standin';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { startOpenRouterStandin, type ChatStandin } from '../../activities/providers/openrouter/standin';
import { tempDir } from '../helpers/fixtures';

// The plan-time model check against the stand-ins' list routes (OpenAI /v1/models, Gemini
// models.list/models.get, OpenRouter /api/v1/models), through the real SDKs, and the stand-ins'
// strictness about ids the real APIs do not serve (on 2026-12-07, the stand-ins' default clock being the real date).

const NOW = '2026-12-07T06:00:00Z';
const KEY = 'sk-check-7f3e9a1b2c';
let openai: OpenAIStandin;
let compatible: OpenAIStandin;
let emptyList: OpenAIStandin;
let gemini: GeminiStandin;
let openrouter: ChatStandin;

beforeAll(async () => {
  const clock = () => new Date(NOW);
  [openai, compatible, emptyList, gemini, openrouter] = await Promise.all([
    startOpenAIStandin({ now: clock }),
    startOpenAIStandin({ now: clock, compatible: { models: ['model-a', 'model-b'] } }),
    startOpenAIStandin({ now: clock, compatible: {} }),
    startGeminiStandin({ now: clock }),
    startOpenRouterStandin(),
  ]);
});
afterAll(async () => Promise.all([openai, compatible, emptyList, gemini, openrouter].map((s) => s?.close())));

async function editStatus(baseURL: string, model: string): Promise<{ status: number; body: { error?: { code?: string } } }> {
  const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
  const res = await fetch(`${baseURL}/images/edits`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt: 'strict-ids x', images: [{ image_url: `data:image/png;base64,${png.toString('base64')}` }] }),
  });
  return { status: res.status, body: (await res.json()) as { error?: { code?: string } } };
}

describe('strict stand-ins', () => {
  it('the OpenAI stand-in playing api.openai.com answers 404 model_not_found for ids OpenAI does not serve; as a compatible server it serves any id', async () => {
    for (const model of ['m', 'gpt-imag-2', 'gpt-image-9', 'gpt-image-1.5', 'dall-e-3']) {
      const r = await editStatus(openai.baseURL, model);
      expect(r.status, model).toBe(404);
      expect(r.body.error?.code).toBe('model_not_found');
    }
    expect((await editStatus(openai.baseURL, 'gpt-image-2')).status).toBe(200);
    expect((await editStatus(openai.baseURL, 'gpt-image-2.5-flare-2026-09-08')).status).toBe(200);
    expect((await editStatus(compatible.baseURL, 'm')).status).toBe(200);
  });

  it('the Gemini stand-in answers 404 NOT_FOUND for shut-down ids by the API it plays (2.5 Flash Image and -preview ids)', async () => {
    const ask = async (base: string, model: string, path = `/v1beta/models/${model}:generateContent`) =>
      (
        await fetch(`${base}${path}`, {
          method: 'POST',
          headers: { 'x-goog-api-key': 'AIza-strict', 'content-type': 'application/json' },
          body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'strict-gemini' }] }] }),
        })
      ).status;
    expect(await ask(gemini.baseURL, 'gemini-2.5-flash-image')).toBe(404);
    expect(await ask(gemini.baseURL, 'gemini-3.1-flash-image-preview')).toBe(404);
    expect(await ask(gemini.baseURL, 'gemini-3.1-flash-lite-image')).toBe(200);
    expect(await ask(gemini.baseURL, 'gemini-nano-banana-2.1')).toBe(200);
    const vertex = await startGeminiStandin({ vertex: true, now: () => new Date(NOW) });
    try {
      const path = (m: string) => `/v1beta1/publishers/google/models/${m}:generateContent`;
      expect(await ask(vertex.baseURL, '', path('gemini-2.5-flash-image'))).toBe(200); // Vertex has not retired it
      expect(await ask(vertex.baseURL, '', path('gemini-3-pro-image-preview'))).toBe(404);
    } finally {
      await vertex.close();
    }
  });
});

describe('the provider-fed model check', () => {
  it('refuses an id OpenAI does not list with the API’s own words and a replacement; a typo gets the closest listed model', async () => {
    const cacheDir = tempDir('atelier-model-check-');
    const check = createModelCheckActivities({ backend: 'openai', apiKey: KEY, baseURL: openai.baseURL, cacheDir });
    const typo = await check.checkModelServed({ backend: 'openai', model: 'gpt-imag-2', now: NOW });
    expect(typo).toMatchObject({ verdict: 'refused', replacement: 'gpt-image-2', cached: false, source: 'OpenAI GET /v1/models' });
    expect(typo.reason).toMatch(
      /openai does not serve gpt-imag-2 .*The model `gpt-imag-2` does not exist or you do not have access to it.*use gpt-image-2 instead/,
    );
    const never = await check.checkModelServed({ backend: 'openai', model: 'gpt-image-9', now: NOW });
    expect(never.verdict).toBe('refused');
    // A model the table knows as shut down: the table's replacement.
    const gone = await check.checkModelServed({ backend: 'openai', model: 'gpt-image-1.5', now: NOW });
    expect(gone).toMatchObject({ verdict: 'refused', replacement: 'gpt-image-2.6-sunburst (or gpt-image-2.6-flare)' });
    expect(await check.checkModelServed({ backend: 'openai', model: 'gpt-image-2.6-flare', now: NOW })).toMatchObject({
      verdict: 'listed',
      cached: true,
    });
    // Cached on disk under a hash: the key is in neither the file name nor its content.
    const files = readdirSync(cacheDir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^openai-[0-9a-f]{24}\.json$/);
    expect(readFileSync(join(cacheDir, files[0]!), 'utf8')).not.toContain(KEY);
    // A second worker with the same key and dir reads the cache: no list call.
    const listCalls = () => openai.calls.length;
    const before = listCalls();
    const again = createModelCheckActivities({ backend: 'openai', apiKey: KEY, baseURL: openai.baseURL, cacheDir });
    expect(await again.checkModelServed({ backend: 'openai', model: 'gpt-image-2', now: NOW })).toMatchObject({
      verdict: 'listed',
      cached: true,
    });
    expect(listCalls()).toBe(before);
  });

  it('the cache lasts a few hours, then the list is read again', async () => {
    let t = Date.parse(NOW);
    const check = createModelCheckActivities({ backend: 'openai', apiKey: KEY, baseURL: openai.baseURL, clock: () => t });
    expect((await check.checkModelServed({ backend: 'openai', model: 'gpt-image-2', now: NOW })).cached).toBe(false);
    t += 2 * 3600_000;
    expect((await check.checkModelServed({ backend: 'openai', model: 'gpt-image-2', now: NOW })).cached).toBe(true);
    t += 2 * 3600_000;
    expect((await check.checkModelServed({ backend: 'openai', model: 'gpt-image-2', now: NOW })).cached).toBe(false);
  });

  it('Gemini: a shut-down id is refused with NOT_FOUND and the table’s replacement; GA and new ids are listed', async () => {
    const check = createModelCheckActivities({ backend: 'gemini', apiKey: 'AIza-check', baseURL: gemini.baseURL });
    const dead = await check.checkModelServed({ backend: 'gemini', model: 'gemini-2.5-flash-image', now: NOW });
    expect(dead.verdict).toBe('refused');
    expect(dead.reason).toMatch(/models\/gemini-2\.5-flash-image is not found .*use gemini-3\.1-flash-image/);
    const preview = await check.checkModelServed({ backend: 'gemini', model: 'gemini-3-pro-image-preview', now: NOW });
    expect(preview).toMatchObject({ verdict: 'refused', replacement: 'gemini-3-pro-image' });
    expect((await check.checkModelServed({ backend: 'gemini', model: 'gemini-3.1-flash-lite-image', now: NOW })).verdict).toBe('listed');
  });

  it('an OpenAI-compatible server: what it lists runs, the rest is refused; an empty list leaves the table to decide', async () => {
    const check = createModelCheckActivities({ backend: 'openai', apiKey: KEY, baseURL: compatible.baseURL });
    expect((await check.checkModelServed({ backend: 'openai', model: 'model-a', now: NOW })).verdict).toBe('listed');
    expect((await check.checkModelServed({ backend: 'openai', model: 'model-z', now: NOW })).verdict).toBe('refused');
    const empty = createModelCheckActivities({ backend: 'openai', apiKey: KEY, baseURL: emptyList.baseURL });
    expect((await empty.checkModelServed({ backend: 'openai', model: 'anything', now: NOW })).verdict).toBe('no-list');
  });

  it('OpenRouter: its image-model list decides; an unreadable list leaves the table to decide', async () => {
    const check = createModelCheckActivities({ backend: 'openrouter', apiKey: 'sk-or-x', baseURL: openrouter.baseURL });
    expect((await check.checkModelServed({ backend: 'openrouter', model: 'google/gemini-3.1-flash-image', now: NOW })).verdict).toBe(
      'listed',
    );
    // The -preview ids OpenRouter stopped serving with Google's 2026-06-25 shutdown are not listed.
    expect(
      (await check.checkModelServed({ backend: 'openrouter', model: 'google/gemini-3.1-flash-image-preview', now: NOW })).verdict,
    ).toBe('refused');
    expect((await check.checkModelServed({ backend: 'openrouter', model: 'acme/no-such-model', now: NOW })).verdict).toBe('refused');
    const down = createModelCheckActivities({ backend: 'openrouter', apiKey: 'sk-or-x', baseURL: 'http://127.0.0.1:9/api/v1' });
    expect((await down.checkModelServed({ backend: 'openrouter', model: 'x/y', now: NOW })).verdict).toBe('unreadable');
  });
});
