import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { rowSeed } from '../lib/gpuContract';
import { readLedgerEntry } from '../lib/run/ledger';
import { findTemporalCli } from '../lib/temporal/temporalCli';
import type { DatasetRunSummary, DatasetWorkflowInput, ProgressSnapshot } from '../lib/shared/types';
import { azureFaults, startAzureOpenAIStandin } from '../activities/providers/azure/standin';
import { geminiFaults, startGeminiStandin, type GeminiStandin } from '../activities/providers/gemini/standin';
import { startVertexStandin } from '../activities/providers/vertex/standin';
import { falFaults, startFalStandin, type FalStandin } from '../activities/providers/fal/standin';
import { startModelScopeStandin, type ModelScopeStandin } from '../activities/providers/modelscope/standin';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { startOpenRouterStandin, type ChatStandin } from '../activities/providers/openrouter/standin';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import { createWorkers, runWorkersUntil, type WorkerSetOptions } from '../workers';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { filesContaining } from './helpers/scan';
import { runDataset as runWith, startTestServer, testInput, watchDatasetRun } from './helpers/temporalEnv';

// The Gemini stand-in plays the API as of 2026-06-01 (before the 2.5 Flash Image shutdown) so these
// runs keep their 2.5 rates; test/unit/modelCheck.test.ts covers today's refusals.
const BEFORE_SHUTDOWNS = () => new Date('2026-06-01T00:00:00Z');

// Every backend through the dataset workflow on a real dev server, each through its real SDK
// against its stand-in: happy paths, multi-turn chat, failure classes per row, quota pauses, prompt
// enhancement, and keys that never leave the worker environment.

const KEYS = {
  OPENAI_API_KEY: 'sk-test-prov-openai-1f2e3d4c',
  GEMINI_API_KEY: 'AIzaTestProvidersGemini0123456789abc',
  OPENROUTER_API_KEY: 'sk-or-test-prov-9a8b7c6d',
  MODELSCOPE_API_KEY: 'ms-test-prov-5e4d3c2b',
  AZURE_OPENAI_API_KEY: 'azure-test-prov-8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f',
  VERTEX_API_KEY: 'AIzaTestProvidersVertex0123456789abcd',
  FAL_KEY: '9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a:fedcba9876543210fedcba9876543210',
};

let env: TestWorkflowEnvironment;
let stateDir: string;
let openai: OpenAIStandin;
let gemini: GeminiStandin;
let openrouter: ChatStandin;
let modelscope: ModelScopeStandin;
let azure: OpenAIStandin;
let vertex: GeminiStandin;
let fal: FalStandin;
let workerEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  ({ env, stateDir } = await startTestServer());
  // Which model each Azure deployment serves: read by the CLI and the worker from their environment.
  vi.stubEnv('ATELIER_AZURE_DEPLOYMENTS', 'prov-images=gpt-image-2');
  [openai, gemini, openrouter, modelscope, azure, vertex, fal] = await Promise.all([
    startOpenAIStandin(),
    startGeminiStandin({ now: BEFORE_SHUTDOWNS }),
    startOpenRouterStandin(),
    startModelScopeStandin(),
    startAzureOpenAIStandin({ deployments: { 'prov-images': 'gpt-image-2' } }),
    startVertexStandin({ now: BEFORE_SHUTDOWNS }),
    startFalStandin(),
  ]);
  workerEnv = {
    ...KEYS,
    OPENAI_BASE_URL: openai.baseURL,
    GEMINI_BASE_URL: gemini.baseURL,
    OPENROUTER_BASE_URL: openrouter.baseURL,
    MODELSCOPE_BASE_URL: modelscope.baseURL,
    MODELSCOPE_POLL_INTERVAL_MS: '50',
    AZURE_OPENAI_ENDPOINT: azure.baseURL,
    OPENAI_API_VERSION: '2025-04-01-preview',
    VERTEX_BASE_URL: vertex.baseURL,
    FAL_BASE_URL: fal.baseURL,
    FAL_POLL_INTERVAL_MS: '20',
    PROMPT_ENHANCE_API_KEY: 'sk-test-prov-enhance-77aa',
    PROMPT_ENHANCE_BASE_URL: openrouter.baseURL,
  };
});
afterAll(async () => {
  vi.unstubAllEnvs();
  await Promise.all([openai, gemini, openrouter, modelscope, azure, vertex, fal].map((s) => s?.close()));
  await env?.teardown();
});

const run = (input: DatasetWorkflowInput) => runWith(env, input, workerEnv);

async function rowsCsv(rows: string[]): Promise<{ dir: string; csv: string; outputDir: string }> {
  const dir = tempDir('atelier-prov-');
  await writePng(join(dir, 'a.png'), '#000000');
  await writePng(join(dir, 'b.png'), '#ffffff');
  writeText(join(dir, 'rows.csv'), ['input_images,instruction', ...rows].join('\n'));
  return { dir, csv: join(dir, 'rows.csv'), outputDir: join(dir, 'out') };
}

function results(outputDir: string): Record<string, string>[] {
  return parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
}

describe('Gemini through the workflow', () => {
  it('edits multi-image rows, classifies refusals and bad requests per row, and records usage and cost', async () => {
    gemini.script('gm-safety', [geminiFaults.finishReason('IMAGE_SAFETY')], { repeat: true });
    gemini.script('gm-invalid', [geminiFaults.invalidArgument()], { repeat: true });
    gemini.script('gm-busy', [geminiFaults.rateLimited(1)]);
    const { dir, csv, outputDir } = await rowsCsv([
      '"[""a.png"",""b.png""]",gm-multi combine them',
      'a.png,gm-safety refuse',
      'a.png,gm-invalid bad',
      'a.png,gm-busy retry me',
    ]);
    const summary = await run(
      testInput({
        runId: 'prov-gemini',
        inputPath: csv,
        outputDir,
        backend: 'gemini',
        model: 'gemini-2.5-flash-image',
        params: { aspectRatio: '16:9' },
      }),
    );
    expect(summary).toMatchObject({ total: 4, ok: 2, failed: 2, failedByType: { Blocked: 1, InvalidRequest: 1 } });
    expect(gemini.callsFor('gm-multi')[0]).toMatchObject({ imageCount: 2 });
    expect(gemini.callsFor('gm-multi')[0]!.generationConfig).toMatchObject({ imageConfig: { aspectRatio: '16:9' } });
    expect(gemini.callsFor('gm-safety')).toHaveLength(1);
    expect(gemini.callsFor('gm-busy').map((c) => c.status)).toEqual([429, 200]);
    expect(results(outputDir).map((r) => r.status)).toEqual(['ok', 'failed', 'failed', 'ok']);
    const ledger = await readLedgerEntry(outputDir, 0);
    expect(ledger?.usage?.totalTokens).toBeGreaterThan(0);
    expect(ledger?.costUsd).toBeGreaterThan(0);
    expect(summary.costUsd).toBeGreaterThan(0);
    void dir;
  });

  it('runs a multi-turn row as one chat: each turn sends the history back with its thought signatures', async () => {
    const dir = tempDir('atelier-prov-chat-');
    await writePng(join(dir, 'a.png'), '#000000');
    writeText(
      join(dir, 'chat.jsonl'),
      JSON.stringify({
        images: ['a.png'],
        conversations: [
          { role: 'user', content: 'gc-turn1 add a hat' },
          { role: 'user', content: 'gc-turn2 now make it red' },
        ],
      }),
    );
    const outputDir = join(dir, 'out');
    const summary = await run(
      testInput({
        runId: 'prov-gemini-chat',
        inputPath: join(dir, 'chat.jsonl'),
        outputDir,
        backend: 'gemini',
        model: 'gemini-3-pro-image-preview',
      }),
    );
    expect(summary).toMatchObject({ ok: 1, failed: 0 });
    const second = gemini.callsFor('gc-turn2')[0]!;
    expect(second.turns).toBe(3); // user, model, user
    expect(second.signaturesReturned.length).toBeGreaterThan(0);
    expect(results(outputDir)[0]!.output_image).toBe('000000_01.png');
  });
});

describe('OpenRouter and ModelScope through the workflow', () => {
  it('OpenRouter: chat completions with image output, read from message.images', async () => {
    const { csv, outputDir } = await rowsCsv(['a.png,or-edit paint it']);
    const summary = await run(
      testInput({ runId: 'prov-openrouter', inputPath: csv, outputDir, backend: 'openrouter', model: 'google/gemini-2.5-flash-image' }),
    );
    expect(summary).toMatchObject({ ok: 1 });
    expect(openrouter.callsFor('or-edit')).toHaveLength(1);
    expect(results(outputDir)[0]!.status).toBe('ok');
  });

  it('ModelScope: submits a task, polls it, downloads the image, records the quota headers', async () => {
    const { csv, outputDir } = await rowsCsv(['a.png,ms-edit paint it']);
    const summary = await run(
      testInput({ runId: 'prov-modelscope', inputPath: csv, outputDir, backend: 'modelscope', model: 'Qwen/Qwen-Image-Edit-2509' }),
    );
    expect(summary).toMatchObject({ ok: 1 });
    const ledger = await readLedgerEntry(outputDir, 0);
    expect(Object.keys(ledger?.info ?? {}).join(',')).toMatch(/remaining/);
  });
});

describe('fal.ai through the workflow', () => {
  it('submits each row once to the queue, polls it, downloads the result, prices it per image, and classifies refusals and failed runs per row', async () => {
    fal.script('fal-refused', [falFaults.contentPolicy()], { repeat: true });
    fal.script('fal-flaky', [falFaults.failedRun()]);
    const { csv, outputDir } = await rowsCsv(['a.png,fal-edit paint it', 'a.png,fal-refused refuse', 'b.png,fal-flaky retry me']);
    const before = fal.submitted();
    const summary = await run(
      testInput({ runId: 'prov-fal', inputPath: csv, outputDir, backend: 'fal', model: 'fal-ai/flux-pro/kontext', params: { seed: 5 } }),
    );
    expect(summary).toMatchObject({ total: 3, ok: 2, failed: 1, failedByType: { Blocked: 1 } });
    const edit = fal.callsFor('fal-edit');
    expect(edit.filter((c) => c.kind === 'submit')).toHaveLength(1);
    expect(edit.find((c) => c.kind === 'submit')).toMatchObject({
      authorization: `Key ${KEYS.FAL_KEY}`,
      imageCount: 1,
      fields: { seed: rowSeed(5, 0, 0) },
    });
    expect(edit.filter((c) => c.kind === 'status').length).toBeGreaterThanOrEqual(3);
    // The refusal is final (one request); the failed run is retried with a new request.
    expect(fal.callsFor('fal-refused').filter((c) => c.kind === 'submit')).toHaveLength(1);
    expect(fal.callsFor('fal-flaky').filter((c) => c.kind === 'submit')).toHaveLength(2);
    expect(fal.submitted() - before).toBe(4);
    expect(results(outputDir).map((r) => r.status)).toEqual(['ok', 'failed', 'ok']);
    const ledger = await readLedgerEntry(outputDir, 0);
    expect(ledger?.costUsd).toBe(0.04);
    expect(String(ledger?.info?.requestIds ?? '')).toBe(edit.find((c) => c.kind === 'submit')!.requestId);
  });
});

describe("fal.ai: the account's concurrency limit", () => {
  it("a new account (2 at once): the worker runs 2 rows at a time, so no request waits in fal's queue while an attempt clock runs; every row once", async () => {
    // fal queues requests past the account's limit (never rejects them); each waiting one would
    // hold an activity slot polling, its 10-minute attempt clock running.
    const capped = await startFalStandin({ accountConcurrency: 2, pollsUntilDone: 25 });
    try {
      const { csv, outputDir } = await rowsCsv(Array.from({ length: 8 }, (_, i) => `${i % 2 ? 'b' : 'a'}.png,fal-cap-${i} paint it`));
      const summary = await runWith(
        env,
        testInput({ runId: 'prov-fal-cap', inputPath: csv, outputDir, backend: 'fal', model: 'fal-ai/flux-pro/kontext', window: 8 }),
        { ...workerEnv, FAL_BASE_URL: capped.baseURL },
      );
      expect(summary).toMatchObject({ total: 8, ok: 8 });
      expect(capped.submitted()).toBe(8);
      // Without the limit the worker held all 8 open at once (window 8), 6 of them queued at fal.
      expect(capped.maxOutstanding()).toBeLessThanOrEqual(2);
    } finally {
      await capped.close();
    }
  });
});

describe('fal.ai: a worker that stops mid-request', () => {
  it('the retry on another worker polls the request already submitted (heartbeated id) instead of paying for a second one', async () => {
    fal.script('fal-crash', [falFaults.slowRequest(60)]);
    const { csv, outputDir } = await rowsCsv(['a.png,fal-crash paint it']);
    const input = testInput({ runId: 'prov-fal-crash', inputPath: csv, outputDir, backend: 'fal', model: 'fal-ai/flux-pro/kontext' });
    const options: WorkerSetOptions = {
      connection: env.nativeConnection,
      namespace: 'default',
      env: workerEnv,
      workerOptions: { shutdownGraceTime: '100 ms' },
    };
    const handle = await env.client.workflow.start('datasetWorkflow', {
      taskQueue: ORCHESTRATOR_QUEUE,
      workflowId: input.runId,
      args: [input],
    });
    const done = handle.result() as Promise<DatasetRunSummary>;
    // The first workers: stopped once the request is queued and being polled.
    const first = await createWorkers(options);
    const firstRunning = Promise.allSettled(first.map((w) => w.run()));
    for (let i = 0; i < 400 && fal.callsFor('fal-crash').filter((c) => c.kind === 'status').length < 3; i++)
      await new Promise((r) => setTimeout(r, 25));
    expect(fal.callsFor('fal-crash').filter((c) => c.kind === 'status').length).toBeGreaterThanOrEqual(3);
    for (const w of first) w.shutdown();
    await firstRunning;
    expect(fal.callsFor('fal-crash').filter((c) => c.kind === 'result')).toHaveLength(0);
    // Fresh workers pick the row up again.
    const second = await createWorkers(options);
    const summary = await runWorkersUntil(second, done);
    expect(summary).toMatchObject({ total: 1, ok: 1, failed: 0 });
    const submits = fal.callsFor('fal-crash').filter((c) => c.kind === 'submit');
    expect(submits).toHaveLength(1);
    const ledger = await readLedgerEntry(outputDir, 0);
    expect(ledger?.info?.resumedRequests).toBe(1);
    expect(ledger?.info?.requestIds).toBe(submits[0]!.requestId);
  });
});

describe('Vertex AI through the workflow', () => {
  it('edits on Vertex in express mode (the publisher path, the key in x-goog-api-key), classifies refusals per row, and records cost', async () => {
    vertex.script('vx-safety', [geminiFaults.finishReason('IMAGE_SAFETY')], { repeat: true });
    vertex.script('vx-busy', [geminiFaults.rateLimited(1)]);
    const { csv, outputDir } = await rowsCsv([
      '"[""a.png"",""b.png""]",vx-multi combine them',
      'a.png,vx-safety refuse',
      'a.png,vx-busy retry me',
    ]);
    const summary = await run(
      testInput({ runId: 'prov-vertex', inputPath: csv, outputDir, backend: 'vertex', model: 'gemini-2.5-flash-image' }),
    );
    expect(summary).toMatchObject({ total: 3, ok: 2, failed: 1, failedByType: { Blocked: 1 } });
    expect(vertex.callsFor('vx-multi')[0]).toMatchObject({
      path: '/v1beta1/publishers/google/models/gemini-2.5-flash-image:generateContent',
      apiKey: KEYS.VERTEX_API_KEY,
      imageCount: 2,
    });
    expect(vertex.callsFor('vx-busy').map((c) => c.status)).toEqual([429, 200]);
    const ledger = await readLedgerEntry(outputDir, 0);
    expect(ledger?.costUsd).toBeGreaterThan(0);
  });
});

describe('Azure OpenAI through the workflow', () => {
  it('edits through a deployment (api-key, api-version), prices it as the mapped model, and classifies the content filter per row', async () => {
    azure.script('az-filtered', [azureFaults.contentFiltered()], { repeat: true });
    const { csv, outputDir } = await rowsCsv(['a.png,az-edit paint it', 'a.png,az-filtered refuse']);
    const summary = await run(testInput({ runId: 'prov-azure', inputPath: csv, outputDir, backend: 'azure', model: 'prov-images' }));
    expect(summary).toMatchObject({ total: 2, ok: 1, failed: 1, failedByType: { Blocked: 1 } });
    expect(azure.callsFor('az-edit')[0]).toMatchObject({ model: 'gpt-image-2', authorization: `api-key ${KEYS.AZURE_OPENAI_API_KEY}` });
    expect(azure.callsFor('az-filtered')).toHaveLength(1);
    // gpt-image-2's token rates for the stand-in's usage (as in the --max-cost test).
    const ledger = await readLedgerEntry(outputDir, 0);
    expect(ledger?.costUsd).toBeCloseTo(0.034754, 6);
  });
});

describe('quota exhausted pauses the provider instead of failing rows', () => {
  it('pauses with the reason shown, keeps the rows, and goes on when resumed', async () => {
    openai.script('qt-row-1', [faults.insufficientQuota()]);
    const { csv, outputDir } = await rowsCsv(['a.png,qt-row-0 x', 'a.png,qt-row-1 x', 'a.png,qt-row-2 x']);
    const input = testInput({ runId: 'prov-quota', inputPath: csv, outputDir, window: 1 });
    const { handle, done, running, progressUntil } = await watchDatasetRun(env, input, workerEnv);
    const progress = await progressUntil((p) => Boolean(p.paused));
    expect(progress?.phase).toBe('paused');
    expect(progress?.paused?.reason).toMatch(/quota/);
    expect(progress?.failed).toBe(0);
    const callsWhilePaused = openai.callsFor('qt-row-').length;
    await new Promise((r) => setTimeout(r, 1000));
    expect(openai.callsFor('qt-row-').length).toBe(callsWhilePaused);
    await handle.signal('resume');
    const summary = await done;
    await running;
    expect(summary).toMatchObject({ total: 3, ok: 3, failed: 0 });
    expect(openai.callsFor('qt-row-1').map((c) => c.status)).toEqual([429, 200]);
  });
});

describe('a quota pause with a reset time lifts itself', () => {
  it('resumes at the reset time when the quota runs out while the window is full (no `atelier resume`)', async () => {
    // Row 1 spends the daily quota while row 0 is still held up: the window is full, so the run is
    // in its untimed wait for room when the pause arrives. The reset is put 2 s away.
    gemini.script('ar-row-0', [geminiFaults.rateLimited(2)]);
    gemini.script('ar-row-1', [geminiFaults.dailyQuota()]);
    const { csv, outputDir } = await rowsCsv(['a.png,ar-row-0 x', 'a.png,ar-row-1 x', 'a.png,ar-row-2 x']);
    const input = testInput({
      runId: 'prov-quota-reset',
      inputPath: csv,
      outputDir,
      backend: 'gemini',
      model: 'gemini-2.5-flash-image',
      window: 2,
    });
    let resets = 0;
    const { handle, done, running, progressUntil } = await watchDatasetRun(env, input, workerEnv, {
      workers: { modelActivityDeps: { quotaResetAt: () => (resets++, new Date(Date.now() + 2000).toISOString()) } },
    });
    const paused = await progressUntil((p) => Boolean(p.paused));
    expect(paused?.paused?.until).toBeDefined();
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error('the pause did not lift at its reset time')), 30_000),
    );
    const summary = await Promise.race([done, timeout]).catch(async (err: unknown) => {
      await handle.terminate('test: the pause did not lift'); // ends the workers' runUntil
      await running;
      throw err;
    });
    await running;
    expect(resets).toBe(1);
    expect(summary).toMatchObject({ total: 3, ok: 3, failed: 0 });
    expect(gemini.callsFor('ar-row-1').map((c) => c.status)).toEqual([429, 200]);
  });
});

describe('pause and resume sent while the run plans', () => {
  it('keeps a pause that arrived during planning, and a resume lifts it', async () => {
    const { csv, outputDir } = await rowsCsv(['a.png,ps-row-0 x', 'a.png,ps-row-1 x']);
    const input = testInput({ runId: 'prov-plan-pause', inputPath: csv, outputDir, window: 2 });
    // The signal is sent before any worker runs the workflow: it reaches the run before it has planned.
    const { handle, done, running, progressUntil } = await watchDatasetRun(env, input, workerEnv, {
      beforeWorkers: (h) => h.signal('pause', { reason: 'held from the start' }),
    });
    const progress = await progressUntil((p) => p.phase === 'paused');
    expect(progress).toMatchObject({ phase: 'paused', total: 2, inFlight: 0, paused: { reason: 'held from the start' } });
    await new Promise((r) => setTimeout(r, 500));
    expect(openai.callsFor('ps-row-')).toHaveLength(0);
    await handle.signal('resume');
    expect(await done).toMatchObject({ total: 2, ok: 2 });
    await running;
  });
});

describe('--max-cost pauses the run when its spend reaches the budget', () => {
  it('pauses with the spend shown, keeps the pause on a plain resume, and goes on with a higher budget', async () => {
    // gpt-image-2 on the stand-in: (50*5 + 323*8 + 1056*30 + 24*10) / 1e6 = $0.034754 a row.
    const perRow = 0.034754;
    const { csv, outputDir } = await rowsCsv(Array.from({ length: 5 }, (_, i) => `a.png,mc-row-${i} x`));
    const input = testInput({ runId: 'prov-max-cost', inputPath: csv, outputDir, model: 'gpt-image-2', window: 1, maxCostUsd: 0.05 });
    const { handle, done, running, progressUntil } = await watchDatasetRun(env, input, workerEnv);
    const pausedProgress = () => progressUntil((p) => Boolean(p.paused) && p.inFlight === 0);
    const first = await pausedProgress();
    // Two rows reach $0.0695 >= $0.05: paused, nothing more dispatched.
    expect(first).toMatchObject({ phase: 'paused', ok: 2, maxCostUsd: 0.05, paused: { budget: true } });
    expect(first.spentUsd).toBeCloseTo(2 * perRow, 6);
    expect(first.paused!.reason).toMatch(/budget reached: \$0\.0695 of \$0\.05 spent/);
    await handle.signal('resume');
    await new Promise((r) => setTimeout(r, 500));
    expect(((await handle.query('progress')) as ProgressSnapshot).paused?.budget).toBe(true);
    expect(openai.callsFor('mc-row-')).toHaveLength(2);
    await handle.signal('budget', { maxCostUsd: 0.1 });
    const second = await pausedProgress();
    expect(second).toMatchObject({ ok: 3, maxCostUsd: 0.1 });
    await handle.signal('budget', { maxCostUsd: 1 });
    const summary = await done;
    await running;
    expect(summary).toMatchObject({ total: 5, ok: 5, failed: 0 });
    expect(summary.costUsd).toBeCloseTo(5 * perRow, 6);
  });
});

describe('OpenAI-compatible diffusion servers (--base-url)', () => {
  it('sends each row its own seed, derived from the base seed as the GPU backend does, with the sampling settings', async () => {
    const { csv, outputDir } = await rowsCsv(['a.png,sd-row-0 x', 'b.png,sd-row-1 y']);
    const params = { seed: 42, numInferenceSteps: 20, guidanceScale: 3.5, negativePrompt: 'blurry' };
    // A user's --base-url server: the stand-in plays an OpenAI-compatible server (it serves any id).
    const server = await startOpenAIStandin({ compatible: { models: ['Qwen/Qwen-Image-Edit-2511'] } });
    const summary = await runWith(
      env,
      testInput({ runId: 'prov-sampling', inputPath: csv, outputDir, model: 'Qwen/Qwen-Image-Edit-2511', params }),
      { ...workerEnv, OPENAI_BASE_URL: server.baseURL },
    ).finally(() => server.close());
    expect(summary).toMatchObject({ ok: 2, failed: 0 });
    for (const index of [0, 1]) {
      expect(server.callsFor(`sd-row-${index}`)[0]!.fields).toMatchObject({
        seed: String(rowSeed(42, index, 0)),
        num_inference_steps: '20',
        guidance_scale: '3.5',
        negative_prompt: 'blurry',
      });
    }
    expect(rowSeed(42, 0, 0)).not.toBe(rowSeed(42, 1, 0));
    // No price for a local model: unknown, not $0.
    expect(summary).toMatchObject({ costUsd: 0, costUnknownRows: 2 });
  });
});

describe('prompt enhancement and keys', () => {
  it('--prompt-enhance rewrites instructions with a chat model and keeps them in instruction_enhanced', async () => {
    const { csv, outputDir } = await rowsCsv(['a.png,pe-row make it nicer']);
    const summary = await run(
      testInput({ runId: 'prov-enhance', inputPath: csv, outputDir, promptEnhance: { model: 'openai/gpt-4.1-mini', withImages: true } }),
    );
    expect(summary.ok).toBe(1);
    const [row] = results(outputDir);
    expect(row!.instruction_enhanced).not.toBe('');
    expect(row!.instruction_enhanced).not.toBe('pe-row make it nicer');
    // The edit was asked with the enhanced text.
    expect(openai.calls.some((c) => c.prompt === row!.instruction_enhanced)).toBe(true);
    // Each part at its own rates: the edit's tokens at gpt-image-2's (50 text + 323 image in, 1056
    // image + 24 text out: $5, $8, $30, $10 per 1M), the enhancer's as its server reported ($0.00002).
    const ledger = await readLedgerEntry(outputDir, 0);
    expect(ledger?.costUsd).toBeCloseTo((50 * 5 + 323 * 8 + 1056 * 30 + 24 * 10) / 1e6 + 0.00002, 9);
    expect(summary.costUsd).toBeCloseTo(ledger!.costUsd!, 9);
  });

  it('no key appears in `temporal workflow show`, the server state or any output', () => {
    const cli = findTemporalCli();
    const address = env.address;
    const show = (id: string) =>
      execFileSync(cli, ['workflow', 'show', '--address', address, '--workflow-id', id, '--output', 'json']).toString();
    const shown = [
      show('prov-gemini'),
      show('prov-gemini/row/0'),
      show('prov-quota/row/1'),
      show('prov-azure/row/1'),
      show('prov-vertex/row/0'),
      show('prov-fal/row/0'),
      show('prov-fal/row/1'),
    ].join('\n');
    // Payloads are base64 in JSON output: decode them so the scan sees what the history holds.
    const decoded = [...shown.matchAll(/"data":\s*"([A-Za-z0-9+/=]+)"/g)]
      .map((m) => Buffer.from(m[1]!, 'base64').toString('utf8'))
      .join('\n');
    const everything = `${shown}\n${decoded}`;
    expect(everything).toContain('gemini-2.5-flash-image'); // the history really is in there
    for (const key of [...Object.values(KEYS), workerEnv.PROMPT_ENHANCE_API_KEY!]) {
      expect(everything).not.toContain(key);
      expect(filesContaining(stateDir, key)).toEqual([]);
    }
  });
});
