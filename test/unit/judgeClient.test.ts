import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJudgeClient, takesSamplingParams } from '../../activities/judge/client';
import { ClassifiedError } from '../../lib/shared/errors';
import { JUDGE_ANSWERS, startJudgeStandin } from '../../standins/judge';
import type { ChatStandin } from '../../activities/providers/openrouter/standin';

// The judge on today's models, against the judge stand-in (an OpenAI-compatible chat server that
// answers GPT-5.x's 400 unsupported_value for temperature, as the real API does).

const KEY = 'sk-judge-client-5e1d';
let judge: ChatStandin;
let png: { data: Buffer; mimeType: string };

beforeAll(async () => {
  judge = await startJudgeStandin();
  png = {
    data: await sharp({ create: { width: 8, height: 8, channels: 3, background: '#00ff00' } })
      .png()
      .toBuffer(),
    mimeType: 'image/png',
  };
});
afterAll(async () => judge?.close());

const client = () => createJudgeClient({ apiKey: KEY, baseURL: judge.baseURL });
const request = (marker: string) => ({ turns: [`${marker} make it red`], sources: [png], edited: png });

describe('the judge client', () => {
  it('sends no temperature to GPT-5.x (which rejects it) and asks for structured output; scores parse from the bare JSON', async () => {
    expect(takesSamplingParams('gpt-5.2')).toBe(false);
    expect(takesSamplingParams('openai/gpt-5.1-mini')).toBe(false);
    expect(takesSamplingParams('gpt-4.1-mini')).toBe(true);
    const answer = await client().judge('gpt-5.2', request('jc-gpt5'));
    expect(answer.scores.instructionFollowing).toBe(JUDGE_ANSWERS.good.instruction_following);
    const [call] = judge.callsFor('jc-gpt5');
    expect(call!.extra.temperature).toBeUndefined();
    expect(call!.extra.response_format).toMatchObject({
      type: 'json_schema',
      json_schema: {
        name: 'edit_scores',
        strict: true,
        schema: { required: ['instruction_following', 'preservation', 'quality', 'reason'] },
      },
    });
    // A model that takes sampling parameters gets temperature 0.
    await client().judge('gpt-4.1-mini', request('jc-gpt41'));
    expect(judge.callsFor('jc-gpt41')[0]!.extra.temperature).toBe(0);
  });

  it('a server that still rejects temperature is asked once more without it', async () => {
    judge.script('jc-temp-400', [
      {
        status: 400,
        body: {
          error: {
            message: "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported.",
            type: 'invalid_request_error',
            param: 'temperature',
            code: 'unsupported_value',
          },
        },
      },
    ]);
    await client().judge('my-vlm', request('jc-temp-400'));
    expect(judge.callsFor('jc-temp-400').map((c) => c.extra.temperature)).toEqual([0, undefined]);
  });

  it('a model the server refuses fails as a configError with the provider’s reason (the judge run stops, not row by row)', async () => {
    judge.script(
      'jc-unknown',
      [
        {
          status: 404,
          body: {
            error: {
              message: 'The model `gpt-9-vision` does not exist or you do not have access to it.',
              type: 'invalid_request_error',
              param: null,
              code: 'model_not_found',
            },
          },
        },
      ],
      { repeat: true },
    );
    const err = await client()
      .judge('gpt-9-vision', request('jc-unknown'))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClassifiedError);
    expect((err as ClassifiedError).kind).toBe('configError');
    expect((err as Error).message).toMatch(
      /judge model gpt-9-vision refused the request \(404 model_not_found\): The model `gpt-9-vision` does not exist/,
    );
    expect((err as Error).message).not.toContain(KEY);
  });
});
