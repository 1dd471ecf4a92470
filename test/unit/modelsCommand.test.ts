import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runModels, type ModelRow } from '../../cli/models';
import type { CliIO } from '../../cli/io';
import { UsageError } from '../../lib/shared/errors';
import { startGeminiStandin, type GeminiStandin } from '../../activities/providers/gemini/standin';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { startOpenRouterStandin, type ChatStandin } from '../../activities/providers/openrouter/standin';

// `atelier models` against the stand-ins' list endpoints (OpenAI /v1/models, OpenRouter
// /api/v1/models, Gemini models.list), through the real SDKs.

let openai: OpenAIStandin;
let openrouter: ChatStandin;
let gemini: GeminiStandin;

beforeAll(async () => {
  [openai, openrouter, gemini] = await Promise.all([
    startOpenAIStandin({ now: () => new Date('2026-11-30T12:00:00Z') }),
    startOpenRouterStandin(),
    startGeminiStandin(),
  ]);
});
afterAll(async () => Promise.all([openai, openrouter, gemini].map((s) => s?.close())));

function io(): CliIO & { lines: string[] } {
  const lines: string[] = [];
  return { lines, out: (l) => lines.push(l), err: (l) => lines.push(l), interrupted: new Promise(() => undefined), isTTY: false };
}

const env = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  ATELIER_NOW: '2026-11-30T12:00:00Z',
  OPENAI_API_KEY: 'sk-models-test',
  OPENAI_BASE_URL: openai.baseURL,
  OPENROUTER_API_KEY: 'sk-or-models-test',
  OPENROUTER_BASE_URL: openrouter.baseURL,
  GEMINI_API_KEY: 'AIza-models-test',
  GEMINI_BASE_URL: gemini.baseURL,
  ...extra,
});

async function rows(options: { backend?: string; offline?: boolean }, e = env()): Promise<ModelRow[]> {
  const out = io();
  expect(await runModels({ ...options, json: true }, out, e)).toBe(0);
  return JSON.parse(out.lines.join('\n')) as ModelRow[];
}

describe('atelier models', () => {
  it('lists the OpenAI table with lifecycle status, merged with /v1/models', async () => {
    const list = await rows({ backend: 'openai' });
    const by = (m: string) => list.find((r) => r.model === m)!;
    expect(by('gpt-image-2')).toMatchObject({ status: 'current', provider: 'listed', edits: 'yes', inputs: '16' });
    expect(by('gpt-image-2.6-sunburst').options).toMatch(/quality low\|medium\|high\|auto\|xhigh\|max/);
    expect(by('gpt-image-1.5')).toMatchObject({
      status: 'deprecated, shuts down 2026-12-01 -> gpt-image-2.6-sunburst (or gpt-image-2.6-flare)',
      provider: 'listed',
    });
    expect(by('gpt-image-1')).toMatchObject({ status: 'retired 2026-10-23 -> gpt-image-2.5-sunburst', provider: 'not listed (retired)' });
    // Listed by the provider, not in the table by its exact id: shown with the entry it falls back to.
    expect(by('gpt-image-2-2026-04-21').provider).toBe('listed (table: gpt-image-2)');
    // OpenAI's text models are not image models.
    expect(list.find((r) => r.model === 'gpt-4.1-mini')).toBeUndefined();
  });

  it('counts a deprecated model past its shutdown as retired', async () => {
    const list = await rows({ backend: 'openai', offline: true }, env({ ATELIER_NOW: '2026-12-01T00:00:00Z' }));
    expect(list.find((r) => r.model === 'gpt-image-1-mini')).toMatchObject({
      status: 'retired 2026-12-01 -> gpt-image-2.6-sunburst (or gpt-image-2.6-flare)',
      provider: '-',
    });
  });

  it('shows OpenRouter image models with their declared output modalities and prices', async () => {
    const list = await rows({ backend: 'openrouter' });
    expect(list.find((r) => r.model === 'acme/pixel-forge-1')).toMatchObject({
      provider: 'listed, not in the table (capabilities unknown)',
    });
    expect(list.find((r) => r.model === 'acme/pixel-forge-1')!.options).toMatch(/outputs image \(asks image\)/);
    expect(list.find((r) => r.model === 'google/gemini-2.5-flash-image')!.options).toMatch(/outputs image\+text \(asks image\+text\)/);
    expect(list.find((r) => r.model === 'bytedance-seed/seedream-4.5')!.price).toMatch(/image 0.04/);
    expect(list.find((r) => r.model === 'openai/gpt-4.1-mini')).toBeUndefined();
  });

  it('merges Gemini models.list (image models only) and says ModelScope has no list', async () => {
    const list = await rows({ backend: 'gemini' });
    // Shut down on the Gemini API (2026-10-02; the -preview ids 2026-06-25): not listed, and the table agrees.
    expect(list.find((r) => r.model === 'gemini-2.5-flash-image')).toMatchObject({
      provider: 'not listed (retired)',
      status: 'retired 2026-10-02 -> gemini-3.1-flash-image (or gemini-3.1-flash-lite-image)',
    });
    expect(list.find((r) => r.model === 'gemini-3-pro-image-preview')!.provider).toBe('not listed (retired)');
    expect(list.find((r) => r.model === 'gemini-3.1-flash-lite-image')).toMatchObject({
      provider: 'listed',
      options: expect.stringMatching(/image size 1K(;|$)/),
    });
    expect(list.find((r) => r.model === 'gemini-nano-banana-2.1')).toMatchObject({ provider: 'listed', price: 'unknown' });
    expect(list.find((r) => r.model === 'gemini-2.5-flash')).toBeUndefined();
    const out = io();
    await runModels({ backend: 'modelscope' }, out, env());
    expect(out.lines[0]).toMatch(/ModelScope has no model list endpoint/);
    expect(out.lines.join('\n')).toMatch(/Qwen\/Qwen-Image-Edit-2511 .*\n(.*\n)*? {4}price: free quota/);
  });

  it('fits 100 columns, every backend, merged with the provider lists (a table ran ~230 wide)', async () => {
    const out = io();
    expect(await runModels({}, out, env())).toBe(0);
    const wide = out.lines.filter((l) => l.length > 100);
    expect(wide).toEqual([]);
    expect(out.lines.length).toBeGreaterThan(50);
    // A model's block: the model and its status, then its options and price, indented.
    const at = out.lines.findIndex((l) => l.startsWith('  gpt-image-2  current; edits yes, inputs 16; provider: listed'));
    expect(at).toBeGreaterThan(0);
    expect(out.lines.slice(at + 1, at + 6).join('\n')).toMatch(
      /^ {4}options: size .*\n(.*\n)*? {4}price: \$\/1M in 5 \(image 8\) cached 1\.25, out 30/m,
    );
  });

  it('without a key, shows the table only; an unknown backend is a usage error', async () => {
    const out = io();
    await runModels({ backend: 'gemini' }, out, { ATELIER_NOW: '2026-11-30' });
    expect(out.lines[0]).toBe('gemini: GEMINI_API_KEY or GOOGLE_API_KEY not set: table only');
    // fal.ai is a backend now (table only: no list endpoint for API keys); replicate is not.
    const fal = io();
    await runModels({ backend: 'fal' }, fal, { ATELIER_NOW: '2026-11-30' });
    expect(fal.lines[0]).toMatch(/^fal: fal\.ai has no model list endpoint/);
    expect(fal.lines.join('\n')).toContain('fal-ai/flux-pro/kontext');
    await expect(runModels({ backend: 'replicate' }, io(), env())).rejects.toBeInstanceOf(UsageError);
  });
});
