import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { cleanEnhancedText, createPromptEnhancer, ENHANCE_SYSTEM_PROMPT } from '../../activities/providers/promptEnhance';
import type { ProviderImage } from '../../activities/providers/provider';
import { ClassifiedError } from '../../lib/shared/errors';
import { openrouterFaults, startOpenRouterStandin, type ChatStandin } from '../../activities/providers/openrouter/standin';

const KEY = 'sk-enhance-standin-000000000000';
let standin: ChatStandin;
let png: ProviderImage;

beforeAll(async () => {
  standin = await startOpenRouterStandin();
  png = {
    data: await sharp({ create: { width: 4, height: 4, channels: 3, background: '#808080' } })
      .png()
      .toBuffer(),
    mimeType: 'image/png',
  };
});
afterAll(async () => standin.close());

function enhancer(apiKey = KEY) {
  return createPromptEnhancer({ apiKey, baseURL: standin.baseURL, model: 'openai/gpt-4.1-mini' });
}

async function enhanceError(instruction: string): Promise<ClassifiedError> {
  try {
    await enhancer().enhance({ instruction });
  } catch (err) {
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as Error).message).not.toContain(KEY);
    return err as ClassifiedError;
  }
  throw new Error('expected enhancement to fail');
}

describe('prompt enhancement through an OpenAI-compatible chat model', () => {
  it('sends our system prompt and the instruction, returns the rewrite with usage', async () => {
    const result = await enhancer().enhance({ instruction: 'pe-text make the sky red' });
    const call = standin.callsFor('pe-text')[0]!;
    expect(call).toMatchObject({
      model: 'openai/gpt-4.1-mini',
      system: ENHANCE_SYSTEM_PROMPT,
      imageCount: 0,
      messages: 2,
      authorization: `Bearer ${KEY}`,
    });
    expect(call.modalities).toBeUndefined();
    expect(result.text).toBe('Precisely: pe-text make the sky red; keep everything else unchanged.');
    expect(result.requestId).toMatch(/^gen-standin-/);
    expect(result.usage).toMatchObject({ inputTokens: 40, outputTokens: 24, costUsd: 0.00002 });
  });

  it('optionally shows the images as data URLs', async () => {
    const result = await enhancer().enhance({ instruction: 'pe-images swap the hats', images: [png, png] });
    expect(standin.callsFor('pe-images')[0]).toMatchObject({ imageCount: 2, imageTypes: ['image/png', 'image/png'] });
    expect(result.text).toMatch(/looking at 2 images/);
  });

  it('cleans labels, quotes and fences off the answer', async () => {
    expect(cleanEnhancedText('"Edit instruction: Make the car blue."')).toBe('Make the car blue.');
    expect(cleanEnhancedText('Prompt the user to smile.')).toBe('Prompt the user to smile.');
    expect(cleanEnhancedText('Rewritten instruction: "Make the car blue."')).toBe('Make the car blue.');
    expect(cleanEnhancedText('```\nMake the car blue.\n```')).toBe('Make the car blue.');
    expect(cleanEnhancedText('  Make the car blue.  ')).toBe('Make the car blue.');
    const custom = await startOpenRouterStandin({ compatible: true, answer: () => '**Instruction:** "Turn the lamp on."' });
    try {
      const result = await createPromptEnhancer({ apiKey: KEY, baseURL: custom.baseURL, model: 'm' }).enhance({ instruction: 'lamp' });
      expect(result.text).toBe('Turn the lamp on.');
    } finally {
      await custom.close();
    }
  });

  it('classifies failures like the image adapters', async () => {
    standin.script('pe-429', [openrouterFaults.rateLimited(2)]);
    standin.script('pe-500', [openrouterFaults.serverError(500)]);
    standin.script('pe-402', [openrouterFaults.insufficientCredits()]);
    standin.script('pe-403', [openrouterFaults.moderation()]);
    standin.script('pe-400', [openrouterFaults.badRequest()]);
    standin.script('pe-empty', [openrouterFaults.noImage('   ')]);
    standin.script('pe-malformed', [openrouterFaults.malformed()]);
    expect(await enhanceError('pe-429')).toMatchObject({ kind: 'retryable', details: { status: 429, retryAfterMs: 2000 } });
    expect((await enhanceError('pe-500')).kind).toBe('retryable');
    expect((await enhanceError('pe-402')).kind).toBe('quotaExhausted');
    expect((await enhanceError('pe-403')).kind).toBe('blocked');
    expect((await enhanceError('pe-400')).kind).toBe('invalidRequest');
    expect((await enhanceError('pe-empty')).kind).toBe('retryable');
    expect((await enhanceError('pe-malformed')).kind).toBe('retryable');
  });
});
