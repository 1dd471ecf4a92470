import { describe, expect, it } from 'vitest';
import {
  capabilities,
  checkParams,
  estimateCostUsd,
  estimateEnhancerCostUsd,
  lifecycleProblem,
  modelStatus,
  supportsParam,
  refusedParams,
} from '../../activities/providers/models';

describe('model capability table', () => {
  it('finds exact ids, dated and preview versions, families and defaults', () => {
    expect(capabilities('openai', 'gpt-image-1.5')).toMatchObject({ entry: 'gpt-image-1.5', known: true, maxInputImages: 16 });
    expect(capabilities('openai', 'gpt-image-1.5-2025-12-16').entry).toBe('gpt-image-1.5');
    expect(capabilities('openai', 'gpt-image-1-mini-2025-10-06').entry).toBe('gpt-image-1-mini');
    expect(capabilities('openai', 'gpt-image-2-2026-04-21').entry).toBe('gpt-image-2');
    expect(capabilities('openai', 'gpt-image-2.5-flare')).toMatchObject({ entry: 'gpt-image-2.5-flare', known: true });
    expect(capabilities('openai', 'gpt-image-2.6-sunburst-2026-09-08').entry).toBe('gpt-image-2.6-sunburst');
    expect(capabilities('openai', 'gpt-image-3')).toMatchObject({ entry: 'gpt-image-*', known: true });
    expect(capabilities('openai', 'Qwen/Qwen-Image-Edit-2511')).toMatchObject({ entry: 'openai default', known: false, params: 'any' });
    // A -preview id is its own (shut-down) entry, never mapped to its GA model by prefix.
    expect(capabilities('gemini', 'gemini-3-pro-image-preview').entry).toBe('gemini-3-pro-image-preview');
    expect(capabilities('gemini', 'gemini-3.1-flash-image-preview').entry).toBe('gemini-3.1-flash-image-preview');
    expect(capabilities('gemini', 'gemini-3-pro-image-exp')).toMatchObject({ entry: 'gemini default', known: false });
    expect(lifecycleProblem('gemini', 'gemini-3.1-flash-image-preview', new Date('2026-12-07T00:00:00Z')).error).toMatch(
      /retired on 2026-06-25 .*use gemini-3\.1-flash-image instead/,
    );
    expect(lifecycleProblem('gemini', 'gemini-2.5-flash-image', new Date('2026-12-07T00:00:00Z')).error).toMatch(/retired on 2026-10-02/);
    expect(capabilities('gemini', 'gemini-3.1-flash-lite-image')).toMatchObject({ known: true, imageSizes: ['1K'] });
    expect(capabilities('gemini', 'gemini-nano-banana-2.1').aspectRatios).toHaveLength(14);
    // gpt-image-2.5 takes xhigh/max and full transparency; 2.6 also complexity.
    expect(checkParams('openai', 'gpt-image-2.5-flare', { quality: 'xhigh', background: 'transparent' })).toEqual([]);
    expect(capabilities('openai', 'gpt-image-2.6-sunburst').complexities).toEqual(['low', 'medium', 'high']);
    expect(capabilities('openai', 'gpt-image-2.5-sunburst').complexities).toBeUndefined();
    // --complexity is refused at planning where the table says the model does not take it.
    expect(refusedParams('openai', 'gpt-image-2.6-sunburst-2026-09-08', { complexity: 'medium' })).toBeUndefined();
    expect(refusedParams('openai', 'gpt-image-2', { complexity: 'low' })).toMatch(
      /gpt-image-2 does not take --complexity \(gpt-image-2\.6-flare, gpt-image-2\.6-sunburst do\)/,
    );
    expect(refusedParams('openai', 'gpt-image-2.6-flare', { complexity: 'max' })).toMatch(/takes low, medium, high/);
    expect(refusedParams('openrouter', 'openai/gpt-image-2.6-flare', { complexity: 'low' })).toMatch(/does not take --complexity/);
    expect(refusedParams('gemini', 'gemini-3-pro-image', { complexity: 'low' })).toMatch(/does not take --complexity/);
    expect(refusedParams('gemini', 'gemini-3-pro-image', {})).toBeUndefined();
    expect(lifecycleProblem('openai', 'dall-e-3', new Date('2026-12-07T00:00:00Z')).error).toMatch(/dall-e-3 was retired on 2026-05-12/);
    // "Works best with up to 3" is advice: more is a warning, not a refusal.
    expect(capabilities('gemini', 'gemini-2.5-flash-image')).toMatchObject({ maxInputImages: 14, recommendedMaxInputImages: 3 });
    expect(capabilities('openrouter', 'google/gemini-3-pro-image-preview')).toMatchObject({
      entry: 'google/*',
      maxInputImages: 14,
      outputModalities: ['image', 'text'],
    });
    expect(capabilities('openrouter', 'black-forest-labs/flux.2-pro').outputModalities).toEqual(['image']);
    expect(capabilities('openrouter', 'bytedance-seed/seedream-4.5').outputModalities).toEqual(['image']);
    expect(capabilities('openrouter', 'openai/gpt-image-2').outputModalities).toEqual(['image']);
    expect(capabilities('modelscope', 'Qwen/Qwen-Image-Edit').maxInputImages).toBe(1);
    expect(capabilities('modelscope', 'Qwen/Qwen-Image-Edit-2509').maxInputImages).toBe(3);
  });

  it('holds input limits, dall-e-2 specifics and input_fidelity support', () => {
    expect(capabilities('openai', 'gpt-image-2').inputLimits).toEqual({ maxBytes: 50 * 1024 * 1024 });
    expect(supportsParam(capabilities('openai', 'gpt-image-1.5'), 'inputFidelity')).toBe(true);
    expect(supportsParam(capabilities('openai', 'gpt-image-1-mini'), 'inputFidelity')).toBe(false);
    expect(supportsParam(capabilities('openai', 'gpt-image-2'), 'inputFidelity')).toBe(false);
    expect(supportsParam(capabilities('openai', 'my-local-model'), 'inputFidelity')).toBe(true);
    expect(supportsParam(capabilities('gemini', 'gemini-2.5-flash-image'), 'imageSize')).toBe(false);
    expect(capabilities('gemini', 'gemini-3.1-flash-image').aspectRatios).toContain('8:1');
  });

  it('lists parameter problems for the CLI', () => {
    expect(checkParams('openai', 'gpt-image-1.5', { size: '1024x1024', quality: 'high' })).toEqual([]);
    expect(checkParams('openai', 'gpt-image-1-mini', { inputFidelity: 'high' })).toEqual([
      'gpt-image-1-mini does not take inputFidelity; it is left out of the request',
    ]);
    expect(checkParams('openai', 'gpt-image-1.5', { size: '800x600' })[0]).toMatch(/takes size/);
    expect(checkParams('openai', 'gpt-image-2', { size: '2048x1152' })).toEqual([]);
    expect(checkParams('openai', 'gpt-image-2', { size: '1000x1000' })[0]).toMatch(/divisible by 16/);
    expect(checkParams('openai', 'gpt-image-2', { size: '3840x960' })[0]).toMatch(/aspect ratios/);
    expect(checkParams('openai', 'gpt-image-1.5', { background: 'transparent', outputFormat: 'jpeg' })[0]).toMatch(/png or webp/);
    expect(checkParams('openai', 'gpt-image-2', { background: 'transparent' })).toEqual([
      'gpt-image-2: a transparent background is in preview at OpenAI',
    ]);
    // At least 655,360 pixels in all: 512x512 is too small.
    expect(checkParams('openai', 'gpt-image-2', { size: '512x512' })[0]).toMatch(/at least 655360 pixels/);
    expect(checkParams('openai', 'gpt-image-2', { quality: 'max' })[0]).toMatch(/takes quality/);
    expect(checkParams('openai', 'gpt-image-2.6-flare', { quality: 'max' })).toEqual([]);
    expect(checkParams('openai', 'gpt-image-2', {}, { promptChars: 32_001 })[0]).toMatch(/at most 32000 characters/);
    expect(checkParams('gemini', 'gemini-3-pro-image-preview', { aspectRatio: '7:3' })[0]).toMatch(/aspect ratios/);
    expect(checkParams('gemini', 'gemini-3-pro-image-preview', { imageSize: '2k' })[0]).toMatch(/image sizes/);
    expect(checkParams('gemini', 'gemini-2.5-flash-image', {}, { inputImages: 5 })[0]).toMatch(/works best with up to 3/);
    expect(checkParams('gemini', 'gemini-3-pro-image', {}, { inputImages: 15 })[0]).toMatch(/at most 14/);
    expect(checkParams('openai', 'some-compatible-model', { inputFidelity: 'high', seed: 3 })).toEqual([]);
  });
});

describe('cost estimates', () => {
  it('prices OpenAI GPT image calls from tokens by class when usage is reported, else per image by quality and size', () => {
    // 50 text + 323 image input tokens, 1056 image + 24 text output tokens on gpt-image-2:
    // $5 text in, $8 image in, $30 image out, $10 text out per 1M.
    const usage = {
      inputTokens: 373,
      inputTextTokens: 50,
      inputImageTokens: 323,
      outputTokens: 1080,
      outputImageTokens: 1056,
      outputTextTokens: 24,
      totalTokens: 1453,
    };
    expect(estimateCostUsd('openai', 'gpt-image-2', {}, usage, 1)).toBeCloseTo((50 * 5 + 323 * 8 + 1056 * 30 + 24 * 10) / 1e6, 9);
    // Cached input is billed at the cached rates ($1.25 text, $2 image).
    const cached = { ...usage, cachedInputTokens: 40 + 300, cachedInputImageTokens: 300 };
    expect(estimateCostUsd('openai', 'gpt-image-2', {}, cached, 1)).toBeCloseTo(
      (10 * 5 + 40 * 1.25 + 23 * 8 + 300 * 2 + 1056 * 30 + 24 * 10) / 1e6,
      9,
    );
    expect(estimateCostUsd('openai', 'gpt-image-2.6-sunburst', {}, usage, 1)).toBeCloseTo(
      (50 * 5 + 323 * 8 + 1056 * 30 + 24 * 10) / 1e6,
      9,
    );
    expect(estimateCostUsd('openai', 'gpt-image-1.5', { quality: 'medium', size: '1024x1536' }, undefined, 2)).toBeCloseTo(0.1, 6);
    expect(estimateCostUsd('openai', 'gpt-image-1.5', { quality: 'low' }, undefined, 1)).toBeCloseTo(0.009, 6);
    // Unknown quality (auto) is counted as high.
    expect(estimateCostUsd('openai', 'gpt-image-1.5', { size: '1536x1024' }, undefined, 1)).toBeCloseTo(0.2, 6);
    expect(estimateCostUsd('openai', 'gpt-image-1-mini', { quality: 'high', size: '1024x1024' }, undefined, 1)).toBeCloseTo(0.036, 6);
    expect(estimateCostUsd('openai', 'gpt-image-2', { quality: 'medium', size: '2048x1152' }, undefined, 1)).toBeCloseTo(0.041, 6);
    // No price: unknown, never 0.
    expect(estimateCostUsd('openai', 'a-local-model', {}, usage, 1)).toBeUndefined();
    expect(estimateCostUsd('openai', 'gpt-image-3', {}, usage, 1)).toBeUndefined();
    expect(estimateCostUsd('openai', 'gpt-image-2.5-flare', {}, undefined, 1)).toBeUndefined();
  });

  it("prices prompt-enhancer tokens at the enhancer's rates, else unknown", () => {
    expect(estimateEnhancerCostUsd('gpt-4.1-mini', { inputTokens: 1000, outputTokens: 100 })).toBeCloseTo(
      (1000 * 0.4 + 100 * 1.6) / 1e6,
      9,
    );
    expect(estimateEnhancerCostUsd('openai/gpt-4.1-mini', { inputTokens: 1000, outputTokens: 100, costUsd: 0.0002 })).toBe(0.0002);
    expect(estimateEnhancerCostUsd('my-local-llm', { inputTokens: 1000, outputTokens: 100 })).toBeUndefined();
    expect(estimateEnhancerCostUsd('my-local-llm', undefined)).toBe(0);
  });

  it('prices Gemini per output token by modality, else per image by image size', () => {
    expect(estimateCostUsd('gemini', 'gemini-2.5-flash-image', {}, undefined, 1)).toBeCloseTo(0.039, 6);
    expect(
      estimateCostUsd('gemini', 'gemini-2.5-flash-image', {}, { inputTokens: 0, outputTokens: 1290, outputImageTokens: 1290 }, 1),
    ).toBeCloseTo(0.0387, 6);
    expect(estimateCostUsd('gemini', 'gemini-3-pro-image-preview', { imageSize: '4K' }, undefined, 1)).toBeCloseTo(0.24, 6);
    expect(estimateCostUsd('gemini', 'gemini-3-pro-image-preview', { imageSize: '2K' }, undefined, 2)).toBeCloseTo(0.268, 6);
    expect(
      estimateCostUsd(
        'gemini',
        'gemini-3-pro-image-preview',
        {},
        { inputTokens: 1000, outputTokens: 1126, outputImageTokens: 1120, outputTextTokens: 6, thoughtsTokens: 100 },
        1,
      ),
    ).toBeCloseTo((1000 * 2 + 1120 * 120 + 106 * 12) / 1e6, 6);
    expect(estimateCostUsd('gemini', 'gemini-3.1-flash-image', { imageSize: '512' }, undefined, 1)).toBeCloseTo(0.045, 6);
    expect(estimateCostUsd('gemini', 'gemini-3.1-flash-image-preview', {}, undefined, 1)).toBeCloseTo(0.067, 6);
  });

  it('takes OpenRouter cost from the response usage, else unknown; ModelScope is free', () => {
    expect(estimateCostUsd('openrouter', 'google/gemini-2.5-flash-image', {}, { costUsd: 0.0387, inputTokens: 10 }, 1)).toBe(0.0387);
    expect(estimateCostUsd('openrouter', 'google/gemini-2.5-flash-image', {}, { inputTokens: 10 }, 1)).toBeUndefined();
    expect(estimateCostUsd('modelscope', 'Qwen/Qwen-Image-Edit-2509', {}, undefined, 1)).toBe(0);
  });
});

describe('model lifecycle', () => {
  const eve = new Date('2026-11-30T12:00:00Z');
  const shutdownDay = new Date('2026-12-01T00:00:00Z');

  it('reads current, deprecated and retired models, a deprecated one past its shutdown as retired', () => {
    expect(modelStatus('openai', 'gpt-image-2', eve)).toEqual({ status: 'current' });
    expect(modelStatus('openai', 'gpt-image-2.6-flare', eve).status).toBe('current');
    expect(modelStatus('openai', 'gpt-image-1.5', eve)).toMatchObject({ status: 'deprecated', shutdown: '2026-12-01' });
    expect(modelStatus('openai', 'gpt-image-1.5-2025-12-16', shutdownDay)).toMatchObject({ status: 'retired', since: '2026-12-01' });
    expect(modelStatus('openai', 'chatgpt-image-latest', shutdownDay).status).toBe('retired');
    expect(modelStatus('openai', 'gpt-image-1', eve)).toMatchObject({
      status: 'retired',
      since: '2026-10-23',
      replacement: 'gpt-image-2.5-sunburst',
    });
    expect(modelStatus('openai', 'dall-e-2', eve)).toMatchObject({ status: 'retired', replacement: 'gpt-image-2' });
    expect(modelStatus('openai', 'some-local-model', eve).status).toBe('current');
  });

  it('refuses retired models naming the replacement and warns about deprecated ones', () => {
    expect(lifecycleProblem('openai', 'gpt-image-1', eve).error).toMatch(
      /gpt-image-1 was retired on 2026-10-23 .*use gpt-image-2.5-sunburst/,
    );
    expect(lifecycleProblem('openai', 'gpt-image-1-mini', eve)).toEqual({
      warning: expect.stringMatching(/deprecated and shuts down on 2026-12-01 \(tomorrow\); move to gpt-image-2.6-sunburst/),
    });
    expect(lifecycleProblem('openai', 'gpt-image-1-mini', shutdownDay).error).toMatch(/retired on 2026-12-01/);
    expect(lifecycleProblem('openai', 'gpt-image-2', eve)).toEqual({});
  });
});
