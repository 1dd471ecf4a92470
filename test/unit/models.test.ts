import { describe, expect, it } from 'vitest';
import { capabilities, checkParams, estimateCostUsd, supportsParam } from '../../activities/providers/models';

describe('model capability table', () => {
  it('finds exact ids, dated and preview versions, families and defaults', () => {
    expect(capabilities('openai', 'gpt-image-1.5')).toMatchObject({ entry: 'gpt-image-1.5', known: true, maxInputImages: 16 });
    expect(capabilities('openai', 'gpt-image-1.5-2025-12-16').entry).toBe('gpt-image-1.5');
    expect(capabilities('openai', 'gpt-image-1-mini-2025-10-06').entry).toBe('gpt-image-1-mini');
    expect(capabilities('openai', 'gpt-image-2-2026-04-21').entry).toBe('gpt-image-2');
    expect(capabilities('openai', 'gpt-image-2.5-flare')).toMatchObject({ entry: 'gpt-image-*', known: true });
    expect(capabilities('openai', 'Qwen/Qwen-Image-Edit-2511')).toMatchObject({ entry: 'openai default', known: false, params: 'any' });
    expect(capabilities('gemini', 'gemini-3-pro-image-preview').entry).toBe('gemini-3-pro-image');
    expect(capabilities('gemini', 'gemini-3.1-flash-image-preview').entry).toBe('gemini-3.1-flash-image');
    expect(capabilities('gemini', 'gemini-2.5-flash-image').maxInputImages).toBe(3);
    expect(capabilities('openrouter', 'google/gemini-3-pro-image-preview')).toMatchObject({ entry: 'google/*', maxInputImages: 14, outputModalities: ['image', 'text'] });
    expect(capabilities('openrouter', 'black-forest-labs/flux.2-pro').outputModalities).toEqual(['image']);
    expect(capabilities('modelscope', 'Qwen/Qwen-Image-Edit').maxInputImages).toBe(1);
    expect(capabilities('modelscope', 'Qwen/Qwen-Image-Edit-2509').maxInputImages).toBe(3);
  });

  it('holds input limits, dall-e-2 specifics and input_fidelity support', () => {
    expect(capabilities('openai', 'dall-e-2')).toMatchObject({ maxInputImages: 1, squarePngInput: true, responseFormat: true, inputLimits: { maxBytes: 4 * 1024 * 1024, maxSide: 1024 } });
    expect(capabilities('openai', 'gpt-image-1').inputLimits).toEqual({ maxBytes: 50 * 1024 * 1024 });
    expect(capabilities('openai', 'gpt-image-1').responseFormat).toBeUndefined();
    expect(supportsParam(capabilities('openai', 'gpt-image-1'), 'inputFidelity')).toBe(true);
    expect(supportsParam(capabilities('openai', 'gpt-image-1.5'), 'inputFidelity')).toBe(true);
    expect(supportsParam(capabilities('openai', 'gpt-image-1-mini'), 'inputFidelity')).toBe(false);
    expect(supportsParam(capabilities('openai', 'gpt-image-2'), 'inputFidelity')).toBe(false);
    expect(supportsParam(capabilities('openai', 'dall-e-2'), 'quality')).toBe(false);
    expect(supportsParam(capabilities('openai', 'my-local-model'), 'inputFidelity')).toBe(true);
    expect(supportsParam(capabilities('gemini', 'gemini-2.5-flash-image'), 'imageSize')).toBe(false);
    expect(capabilities('gemini', 'gemini-3.1-flash-image').aspectRatios).toContain('8:1');
  });

  it('lists parameter problems for the CLI', () => {
    expect(checkParams('openai', 'gpt-image-1.5', { size: '1024x1024', quality: 'high' })).toEqual([]);
    expect(checkParams('openai', 'gpt-image-1-mini', { inputFidelity: 'high' })).toEqual(['gpt-image-1-mini does not take inputFidelity; it is left out of the request']);
    expect(checkParams('openai', 'gpt-image-1.5', { size: '800x600' })[0]).toMatch(/takes size/);
    expect(checkParams('openai', 'gpt-image-2', { size: '2048x1152' })).toEqual([]);
    expect(checkParams('openai', 'gpt-image-2', { size: '1000x1000' })[0]).toMatch(/divisible by 16/);
    expect(checkParams('openai', 'gpt-image-2', { size: '3840x960' })[0]).toMatch(/aspect ratios/);
    expect(checkParams('openai', 'gpt-image-1', { background: 'transparent', outputFormat: 'jpeg' })[0]).toMatch(/png or webp/);
    expect(checkParams('openai', 'gpt-image-2', { background: 'transparent' })[0]).toMatch(/transparent/);
    expect(checkParams('gemini', 'gemini-3-pro-image-preview', { aspectRatio: '7:3' })[0]).toMatch(/aspect ratios/);
    expect(checkParams('gemini', 'gemini-3-pro-image-preview', { imageSize: '2k' })[0]).toMatch(/image sizes/);
    expect(checkParams('gemini', 'gemini-2.5-flash-image', {}, { inputImages: 5 })[0]).toMatch(/at most 3/);
    expect(checkParams('openai', 'some-compatible-model', { inputFidelity: 'high', seed: 3 })).toEqual([]);
  });
});

describe('cost estimates', () => {
  it('prices OpenAI GPT image calls from tokens when usage is reported, else per image by quality and size', () => {
    // 50 text + 323 image input tokens, 1056 output tokens on gpt-image-1: $5, $10, $40 per 1M.
    const usage = { inputTokens: 373, inputTextTokens: 50, inputImageTokens: 323, outputTokens: 1056, totalTokens: 1429 };
    expect(estimateCostUsd('openai', 'gpt-image-1', {}, usage, 1)).toBeCloseTo((50 * 5 + 323 * 10 + 1056 * 40) / 1e6, 6);
    expect(estimateCostUsd('openai', 'gpt-image-1', { quality: 'medium', size: '1024x1536' }, undefined, 2)).toBeCloseTo(0.126, 6);
    expect(estimateCostUsd('openai', 'gpt-image-1', { quality: 'low' }, undefined, 1)).toBeCloseTo(0.011, 6);
    // Unknown quality (auto) is counted as high.
    expect(estimateCostUsd('openai', 'gpt-image-1.5', { size: '1536x1024' }, undefined, 1)).toBeCloseTo(0.2, 6);
    expect(estimateCostUsd('openai', 'gpt-image-1-mini', { quality: 'high', size: '1024x1024' }, undefined, 1)).toBeCloseTo(0.036, 6);
    expect(estimateCostUsd('openai', 'gpt-image-2', { quality: 'medium', size: '2048x1152' }, undefined, 1)).toBeCloseTo(0.041, 6);
    expect(estimateCostUsd('openai', 'dall-e-2', { size: '512x512' }, undefined, 3)).toBeCloseTo(0.054, 6);
    expect(estimateCostUsd('openai', 'dall-e-2', {}, undefined, 1)).toBeCloseTo(0.02, 6);
    expect(estimateCostUsd('openai', 'a-local-model', {}, usage, 1)).toBeUndefined();
  });

  it('prices Gemini per output token by modality, else per image by image size', () => {
    expect(estimateCostUsd('gemini', 'gemini-2.5-flash-image', {}, undefined, 1)).toBeCloseTo(0.039, 6);
    expect(estimateCostUsd('gemini', 'gemini-2.5-flash-image', {}, { inputTokens: 0, outputTokens: 1290, outputImageTokens: 1290 }, 1)).toBeCloseTo(0.0387, 6);
    expect(estimateCostUsd('gemini', 'gemini-3-pro-image-preview', { imageSize: '4K' }, undefined, 1)).toBeCloseTo(0.24, 6);
    expect(estimateCostUsd('gemini', 'gemini-3-pro-image-preview', { imageSize: '2K' }, undefined, 2)).toBeCloseTo(0.268, 6);
    expect(estimateCostUsd('gemini', 'gemini-3-pro-image-preview', {}, { inputTokens: 1000, outputTokens: 1126, outputImageTokens: 1120, outputTextTokens: 6, thoughtsTokens: 100 }, 1)).toBeCloseTo(
      (1000 * 2 + 1120 * 120 + 106 * 12) / 1e6,
      6,
    );
    expect(estimateCostUsd('gemini', 'gemini-3.1-flash-image', { imageSize: '512' }, undefined, 1)).toBeCloseTo(0.045, 6);
    expect(estimateCostUsd('gemini', 'gemini-3.1-flash-image-preview', {}, undefined, 1)).toBeCloseTo(0.067, 6);
  });

  it('takes OpenRouter cost from the response usage, else unknown; ModelScope is free', () => {
    expect(estimateCostUsd('openrouter', 'google/gemini-2.5-flash-image', {}, { costUsd: 0.0387, inputTokens: 10 }, 1)).toBe(0.0387);
    expect(estimateCostUsd('openrouter', 'google/gemini-2.5-flash-image', {}, { inputTokens: 10 }, 1)).toBeUndefined();
    expect(estimateCostUsd('modelscope', 'Qwen/Qwen-Image-Edit-2509', {}, undefined, 1)).toBe(0);
  });
});
