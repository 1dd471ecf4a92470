import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBatchActivities, createBatchPlanningActivities, type PlanBatchJobsInput } from '../activities/batch';
import { createOrchestrationActivities } from '../activities/orchestration';
import type { BatchJobSpec, BatchPlan, BatchSubmission } from '../lib/shared/batch';
import { freePort } from '../lib/temporal/devServer';
import { layout } from '../lib/run/runStore';
import { openStorage } from '../storage';
import { startGeminiStandin, type GeminiStandin } from '../activities/providers/gemini/standin';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier, CliProcess, waitUntil } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { testInput } from './helpers/temporalEnv';

// The Gemini stand-in plays the API as of 2026-06-01 (before the 2.5 Flash Image shutdown) so these
// runs keep their 2.5 rates; test/unit/modelCheck.test.ts covers today's refusals.
const BEFORE_SHUTDOWNS = () => new Date('2026-06-01T00:00:00Z');

// A batch is never submitted twice for the same rows: not when the worker is killed and the
// Temporal server restarted while the batch runs (real processes: `atelier server`, `atelier
// worker`, the CLI), and not when a submit attempt dies between creating the batch and recording it.

const API_KEY = 'sk-test-batch-durability-9d8c7b6a';
let standin: OpenAIStandin;
let gemini: GeminiStandin;

beforeAll(async () => {
  gemini = await startGeminiStandin({ batch: { pendingMs: 200, runningMs: 8000 }, now: BEFORE_SHUTDOWNS });
  standin = await startOpenAIStandin({ batch: { validatingMs: 200, inProgressMs: 8000, finalizingMs: 200, concurrency: 4 } });
});
afterAll(async () => {
  await standin?.close();
  await gemini?.close();
});

async function dataset(rows: number, tag: string): Promise<{ csv: string; outputDir: string }> {
  const dir = tempDir(`atelier-batchdur-${tag}-`);
  await writePng(join(dir, 'in.png'));
  const csv = join(dir, 'rows.csv');
  writeText(csv, ['image,instruction', ...Array.from({ length: rows }, (_, i) => `in.png,${tag}-${i} edit`)].join('\n'));
  return { csv, outputDir: join(dir, 'out') };
}

async function startServer(stateDir: string, port: number): Promise<CliProcess> {
  for (let attempt = 1; ; attempt++) {
    let uiPort = await freePort();
    while (uiPort === port) uiPort = await freePort();
    const server = new CliProcess(['server', '--state-dir', stateDir, '--port', String(port), '--ui-port', String(uiPort)], {
      ...process.env,
    });
    try {
      await server.waitForOutput(/address: 127\.0\.0\.1:\d+/);
      return server;
    } catch (err) {
      if (attempt >= 3) throw err;
    }
  }
}

describe('a batch is submitted once', () => {
  it('killing the worker and restarting the server while the batch runs: the run resumes polling the same batch', async () => {
    assertBuilt();
    const stateDir = tempDir('atelier-batchdur-state-');
    const port = await freePort();
    let server = await startServer(stateDir, port);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      TEMPORAL_ADDRESS: `127.0.0.1:${port}`,
      OPENAI_API_KEY: API_KEY,
      OPENAI_BASE_URL: standin.baseURL,
    };
    let worker = new CliProcess(['worker'], env);
    const { csv, outputDir } = await dataset(40, 'dur');
    const before = standin.batches.all.length;
    try {
      await worker.waitForOutput(/serving atelier-orchestrator/);
      const started = await atelier(
        [
          'edit',
          '--input',
          csv,
          '--output-dir',
          outputDir,
          '--model',
          'gpt-image-2',
          '--state-dir',
          stateDir,
          '--batch',
          '--batch-poll-ms',
          '300',
          '--detach',
        ],
        env,
      );
      expect(started.code, started.stderr).toBe(0);
      const runId = started.stdout.trim().split('\n').pop()!;
      await waitUntil(
        () => standin.batches.all.length > before && standin.batches.all[before]!.status === 'in_progress',
        60_000,
        'the batch in progress',
      );
      worker.child.kill('SIGKILL');
      expect(await server.stop()).toBe(0);
      await sleep(1000);
      server = await startServer(stateDir, port);
      worker = new CliProcess(['worker'], env);
      await worker.waitForOutput(/serving atelier-orchestrator/);

      const watched = await atelier(['watch', runId, '--state-dir', stateDir], env);
      expect(watched.code, `${watched.stderr}\nworker:\n${worker.output.slice(-3000)}`).toBe(0);
      const created = standin.batches.all.slice(before);
      expect(created.map((b) => b.metadata?.atelier_run_id)).toEqual([runId]);
      expect(created[0]!.status).toBe('completed');
      expect(standin.calls.filter((c) => c.prompt.startsWith('dur-') && !c.viaBatch)).toHaveLength(0);
      const rows = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
      expect(rows.filter((r) => r.status === 'ok')).toHaveLength(40);

      // The same command again makes no batch and no call.
      const calls = standin.calls.length;
      const again = await atelier(
        [
          'edit',
          '--input',
          csv,
          '--output-dir',
          outputDir,
          '--model',
          'gpt-image-2',
          '--state-dir',
          stateDir,
          '--batch',
          '--batch-poll-ms',
          '300',
        ],
        env,
      );
      expect(again.code, again.stderr).toBe(0);
      expect(standin.batches.all.length).toBe(before + 1);
      expect(standin.calls.length).toBe(calls);
    } finally {
      await worker.stop();
      await server.stop();
    }
  }, 240_000);

  it.each(['openai', 'gemini'] as const)(
    '%s: a submit attempt that died after creating the batch: the retry finds it by its tag, no second batch',
    async (backend) => {
      const { csv, outputDir } = await dataset(5, `tag-${backend}`);
      const runId = `batch-tag-${backend}`;
      const model = backend === 'openai' ? 'gpt-image-2' : 'gemini-2.5-flash-image';
      const env = new MockActivityEnvironment();
      await env.run(createOrchestrationActivities().planRun, testInput({ runId, inputPath: csv, outputDir, backend, model }));
      const planning: PlanBatchJobsInput = { runId, outputDir, backend, phaseId: 'p1', round: 0, fallback: 'direct' };
      const plan = (await env.run(createBatchPlanningActivities().planBatchJobs, planning)) as BatchPlan;
      expect(plan.jobs).toHaveLength(1);
      const spec: BatchJobSpec = {
        runId,
        outputDir,
        jobId: plan.jobs[0]!.jobId,
        phaseId: 'p1',
        backend,
        model,
        params: {},
        numImages: 1,
        encoding: { jpegQuality: 95, webpQuality: 95 },
        imageCacheDir: join(outputDir, '.atelier', 'image-cache'),
        rows: plan.jobs[0]!.rows,
        fallback: 'direct',
      };
      const baseURL = backend === 'openai' ? standin.baseURL : gemini.baseURL;
      const activities = createBatchActivities({ backend, apiKey: API_KEY, baseURL });
      const created = () => (backend === 'openai' ? standin.batches.all.length : gemini.batches.all.length);
      const before = created();
      const first = (await env.run(activities.submitBatchJob, spec)) as BatchSubmission;
      expect(first).toMatchObject({ rows: 5, requests: 5 });
      // The attempt "died" before its record was written: the record is gone, the batch exists.
      const recordKey = layout.batchJob(spec.jobId, 'submitted');
      await openStorage(outputDir).remove(recordKey);
      // The retry is the activity's next attempt.
      const retry = await new MockActivityEnvironment({ attempt: 2 }).run(activities.submitBatchJob, spec);
      expect(retry).toMatchObject({ batchId: first.batchId, found: true, rows: 5 });
      expect(created()).toBe(before + 1);
    },
    60_000,
  );

  it('a submit attempt that went past its heartbeat timeout without a beat (a frozen worker) creates no batch; the current attempt does (issue 23)', async () => {
    // Uploads answer after 1.5 s; the attempt's heartbeat timeout is 0.5 s and it beats every 5 s:
    // when it reaches the paid step it has gone longer without a heartbeat than the server allows,
    // so the server has given the job to another attempt, as with a worker stopped mid-submit.
    const slow = await startOpenAIStandin({ batch: { validatingMs: 50, inProgressMs: 100, uploadDelayMs: 1500 } });
    try {
      const { csv, outputDir } = await dataset(3, 'fence');
      const runId = 'batch-fence';
      const env = new MockActivityEnvironment();
      await env.run(
        createOrchestrationActivities().planRun,
        testInput({ runId, inputPath: csv, outputDir, backend: 'openai', model: 'gpt-image-2' }),
      );
      const planning: PlanBatchJobsInput = { runId, outputDir, backend: 'openai', phaseId: 'p1', round: 0, fallback: 'direct' };
      const plan = (await env.run(createBatchPlanningActivities().planBatchJobs, planning)) as BatchPlan;
      const spec: BatchJobSpec = {
        runId,
        outputDir,
        jobId: plan.jobs[0]!.jobId,
        phaseId: 'p1',
        backend: 'openai',
        model: 'gpt-image-2',
        params: {},
        numImages: 1,
        encoding: { jpegQuality: 95, webpQuality: 95 },
        imageCacheDir: join(outputDir, '.atelier', 'image-cache'),
        rows: plan.jobs[0]!.rows,
        fallback: 'direct',
      };
      const activities = createBatchActivities({ backend: 'openai', apiKey: API_KEY, baseURL: slow.baseURL });
      const stale = await new MockActivityEnvironment({ attempt: 1, heartbeatTimeoutMs: 500 }).run(activities.submitBatchJob, spec).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(stale?.message).toMatch(
        /^stale attempt 1 of batch job .+: it went \d+\.\d s without a heartbeat \(timeout 0\.5 s\); the batch submit not made$/,
      );
      expect(slow.batches.all).toHaveLength(0);
      // The next (current) attempt submits once.
      const current = (await new MockActivityEnvironment({ attempt: 2, heartbeatTimeoutMs: 60_000 }).run(
        activities.submitBatchJob,
        spec,
      )) as BatchSubmission;
      expect(current).toMatchObject({ rows: 3, requests: 3 });
      expect(slow.batches.all).toHaveLength(1);
    } finally {
      await slow.close();
    }
  }, 60_000);
});
