import { GoogleGenAI } from '@google/genai';
import OpenAI, { toFile, type APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGeminiStandin, type GeminiStandin } from '../../activities/providers/gemini/standin';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';

// The stand-in plays the API as of 2026-06-01, before the 2.5 Flash Image and -preview shutdowns, so
// those models' behaviours stay covered (test/unit/modelCheck.test.ts covers today's refusals).
const BEFORE_SHUTDOWNS = () => new Date('2026-06-01T00:00:00Z');

// The stand-ins' batch APIs as the real SDKs see them: what they refuse, with which body, and the
// lifecycle a batch goes through.

let openaiStandin: OpenAIStandin;
let geminiStandin: GeminiStandin;
let client: OpenAI;
let ai: GoogleGenAI;

beforeAll(async () => {
  openaiStandin = await startOpenAIStandin({ batch: { validatingMs: 20, inProgressMs: 50, finalizingMs: 20 } });
  geminiStandin = await startGeminiStandin({ batch: { pendingMs: 20, runningMs: 50 }, now: BEFORE_SHUTDOWNS });
  client = new OpenAI({ apiKey: 'sk-test-standin-batch', baseURL: openaiStandin.baseURL, maxRetries: 0 });
  ai = new GoogleGenAI({ apiKey: 'AIza-test-standin-batch', httpOptions: { baseUrl: geminiStandin.baseURL } });
});
afterAll(async () => {
  await openaiStandin?.close();
  await geminiStandin?.close();
});

const PNG_1PX = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNgYGAAAAAEAAH2FzhVAAAAAElFTkSuQmCC';
const line = (id: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    custom_id: id,
    method: 'POST',
    url: '/v1/images/edits',
    body: { model: 'gpt-image-2', prompt: `p ${id}`, images: [{ image_url: `data:image/png;base64,${PNG_1PX}` }] },
    ...extra,
  });

async function settle(id: string): Promise<OpenAI.Batch> {
  for (;;) {
    const b = await client.batches.retrieve(id);
    if (['completed', 'failed', 'expired', 'cancelled'].includes(b.status)) return b;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('OpenAI Files and Batch APIs (stand-in)', () => {
  it("refuses bad batch requests with the API's error bodies", async () => {
    const file = await client.files.create({ file: await toFile(Buffer.from(`${line('a')}\n`), 'in.jsonl'), purpose: 'batch' });
    const refused = async (params: Record<string, unknown>) =>
      client.batches.create({ input_file_id: file.id, endpoint: '/v1/images/edits', completion_window: '24h', ...params } as never).then(
        () => undefined,
        (e: APIError) => e,
      );
    expect(await refused({ endpoint: '/v1/images/variations' })).toMatchObject({ status: 400, code: 'invalid_value', param: 'endpoint' });
    expect(await refused({ completion_window: '48h' })).toMatchObject({ status: 400, code: 'invalid_value', param: 'completion_window' });
    expect(await refused({ input_file_id: 'file-nope' })).toMatchObject({
      status: 404,
      message: expect.stringContaining('No such File object: file-nope'),
    });
    expect(await refused({ metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) })).toMatchObject({
      status: 400,
      param: 'metadata',
    });
    const vision = await client.files.create({ file: await toFile(Buffer.from('x'), 'a.png'), purpose: 'vision' });
    expect(await refused({ input_file_id: vision.id })).toMatchObject({ status: 400, param: 'input_file_id' });
    const notJsonl = await client.files.create({ file: await toFile(Buffer.from('x'), 'in.txt'), purpose: 'batch' }).then(
      () => undefined,
      (e: APIError) => e,
    );
    expect(notJsonl).toMatchObject({ status: 400, param: 'file' });
  });

  it('fails a batch whose input file is invalid, naming the lines', async () => {
    const jsonl = [line('a'), line('a'), line('b', { url: '/v1/images/generations' }), 'not json'].join('\n');
    const file = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'bad.jsonl'), purpose: 'batch' });
    const batch = await settle(
      (await client.batches.create({ input_file_id: file.id, endpoint: '/v1/images/edits', completion_window: '24h' })).id,
    );
    expect(batch.status).toBe('failed');
    expect(batch.errors?.data?.map((e) => [e.code, e.line])).toEqual([
      ['duplicate_custom_id', 2],
      ['mismatched_url', 3],
      ['invalid_json_line', 4],
    ]);
  });

  it('runs a valid batch: output and error files keyed by custom_id, request counts, lines run as real edits', async () => {
    const jsonl = [
      line('ok'),
      line('bad', { body: { model: 'gpt-image-2', prompt: 'x', images: [{ image_url: 'https://example.com/a.png', file_id: 'file-1' }] } }),
    ].join('\n');
    const file = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'in.jsonl'), purpose: 'batch' });
    const batch = await settle(
      (
        await client.batches.create({
          input_file_id: file.id,
          endpoint: '/v1/images/edits',
          completion_window: '24h',
          metadata: { tag: 't1' },
        })
      ).id,
    );
    expect(batch).toMatchObject({ status: 'completed', request_counts: { total: 2, completed: 1, failed: 1 }, metadata: { tag: 't1' } });
    const output = (await (await client.files.content(batch.output_file_id!)).text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(output).toMatchObject([
      { custom_id: 'ok', response: { status_code: 200, body: { data: [{ b64_json: expect.any(String) }] } }, error: null },
    ]);
    const errors = (await (await client.files.content(batch.error_file_id!)).text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(errors).toMatchObject([
      {
        custom_id: 'bad',
        response: { status_code: 400, body: { error: { message: "Invalid 'images[0]': provide exactly one of image_url or file_id." } } },
      },
    ]);
    // The good line ran as an edit call (the bad one was refused while its body was read).
    expect(openaiStandin.calls.filter((c) => c.viaBatch && c.prompt === 'p ok')).toHaveLength(1);
    // A finished batch cannot be cancelled.
    expect(
      await client.batches.cancel(batch.id).then(
        () => undefined,
        (e: APIError) => e.status,
      ),
    ).toBe(409);
  });
});

describe('Gemini Batch Mode (stand-in)', () => {
  it('inline requests: states as the SDK maps them, responses in order with their keys', async () => {
    const contents = [{ role: 'user', parts: [{ text: 'gb make it blue' }, { inlineData: { mimeType: 'image/png', data: PNG_1PX } }] }];
    const job = await ai.batches.create({
      model: 'gemini-2.5-flash-image',
      src: [
        { contents, metadata: { key: 'r0' }, config: { responseModalities: ['IMAGE'] } },
        { contents, metadata: { key: 'r1' }, config: { responseModalities: ['AUDIO' as never] } },
      ],
      config: { displayName: 'job-1' },
    });
    expect(job).toMatchObject({ name: expect.stringMatching(/^batches\//), displayName: 'job-1', state: 'JOB_STATE_PENDING' });
    let done = await ai.batches.get({ name: job.name! });
    while (!['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED'].includes(String(done.state))) {
      await new Promise((r) => setTimeout(r, 20));
      done = await ai.batches.get({ name: job.name! });
    }
    expect(done.state).toBe('JOB_STATE_SUCCEEDED');
    const responses = done.dest!.inlinedResponses!;
    expect(responses.map((r) => r.metadata?.key)).toEqual(['r0', 'r1']);
    expect(responses[0]!.response?.candidates?.[0]?.content?.parts?.[0]?.inlineData?.data).toBeTruthy();
    expect(responses[1]!.error).toMatchObject({ code: 400 });
  });

  it('refuses an unknown model and an inline batch over 20 MB; cancels a running job', async () => {
    const unknown = await ai.batches
      .create({ model: 'gemini-0-image', src: [{ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }] })
      .then(
        () => undefined,
        (e: Error) => e.message,
      );
    expect(unknown).toMatch(/NOT_FOUND/);
    const big = 'A'.repeat(21 * 1024 * 1024);
    const tooBig = await ai.batches
      .create({
        model: 'gemini-2.5-flash-image',
        src: [{ contents: [{ role: 'user', parts: [{ inlineData: { mimeType: 'image/png', data: big } }] }] }],
      })
      .then(
        () => undefined,
        (e: Error) => e.message,
      );
    expect(tooBig).toMatch(/Request payload size exceeds the limit: 20971520 bytes/);
    geminiStandin.batches.configure({ runningMs: 60_000 });
    const job = await ai.batches.create({
      model: 'gemini-2.5-flash-image',
      src: [{ contents: [{ role: 'user', parts: [{ text: 'gc' }] }] }],
    });
    await ai.batches.cancel({ name: job.name! });
    expect((await ai.batches.get({ name: job.name! })).state).toBe('JOB_STATE_CANCELLED');
    geminiStandin.batches.configure({ runningMs: 50 });
  });
});
