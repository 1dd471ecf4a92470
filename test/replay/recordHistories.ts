import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Connection, Client, type WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ORCHESTRATOR_QUEUE } from '../../lib/shared/constants';
import { freePort } from '../../lib/temporal/devServer';
import { gpuTaskQueue } from '../../lib/gpuContract';
import { ALL_SEARCH_ATTRIBUTES } from '../../lib/shared/searchAttributes';
import type { DatasetRunSummary, DatasetWorkflowInput, ProgressSnapshot } from '../../lib/shared/types';
import { geminiFaults, startGeminiStandin, type GeminiStandin } from '../../activities/providers/gemini/standin';
import { startJudgeStandin } from '../../standins/judge';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { createWorkers } from '../../workers';
import { atelier, CliProcess, REPO } from '../helpers/cli';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { temporalCliPath } from '../helpers/temporal';
import { testInput } from '../helpers/temporalEnv';
import { S3_REFUSALS, startS3FaultProxy } from '../../testing/s3FaultProxy';
import { startS3Server } from '../../testing/versitygw';

// Records the workflow histories that test/replay/replay.test.ts replays: one run per workflow path
// (plain, continue-as-new with hand-over, quota pause lifted at its reset, retry update, cancel,
// GPU, a --max-cost pause with search attributes on, a pause heard while planning, the judge
// workflow), with the workflow code of the commit that records them. `-t <name>` records only some
// of them (a patch's new branch, say: see workflows/patches.ts). Not part of the suite; run it when
// the workflow code changes on purpose, as
//   ATELIER_FIXTURE_TAG=<short commit> npx vitest run --config test/replay/vitest.record.mts
// and commit the new files (old fixtures stay: the code must keep replaying them).

const TAG = process.env.ATELIER_FIXTURE_TAG ?? 'dev';
const OUT = join(__dirname, 'fixtures', TAG);
const KEYS = { OPENAI_API_KEY: 'sk-record-openai', GEMINI_API_KEY: 'AIzaRecordGemini0123456789abcdefghij' };

let env: TestWorkflowEnvironment;
let openai: OpenAIStandin;
let gemini: GeminiStandin;
let workerEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  // The project's search attributes are registered, as `atelier server` does, so runs recorded
  // with `searchAttributes: true` take the search-attribute paths (and their patches).
  env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: temporalCliPath() },
      dbFilename: join(tempDir('atelier-rec-state-'), 'temporal.db'),
      searchAttributes: [...ALL_SEARCH_ATTRIBUTES],
    },
  });
  [openai, gemini] = await Promise.all([startOpenAIStandin(), startGeminiStandin()]);
  workerEnv = { ...KEYS, OPENAI_BASE_URL: openai.baseURL, GEMINI_BASE_URL: gemini.baseURL };
  mkdirSync(OUT, { recursive: true });
});
afterAll(async () => {
  await Promise.all([openai?.close(), gemini?.close()]);
  await env?.teardown();
});

async function rowsCsv(name: string, rows: string[]): Promise<{ csv: string; outputDir: string }> {
  const dir = tempDir(`atelier-rec-${name}-`);
  await writePng(join(dir, 'a.png'), '#336699');
  writeText(join(dir, 'rows.csv'), ['input_images,instruction', ...rows].join('\n'));
  return { csv: join(dir, 'rows.csv'), outputDir: join(dir, 'out') };
}

/** Every run of a workflow id (continue-as-new makes several), oldest first, and the named children. */
async function save(client: Client, name: string, workflowId: string, children: string[] = []): Promise<void> {
  const runs: string[] = [];
  for await (const execution of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) runs.push(execution.runId);
  runs.reverse();
  const write = async (file: string, handle: WorkflowHandle) => {
    const history = await handle.fetchHistory();
    writeFileSync(join(OUT, file), temporal.api.history.v1.History.encode(temporal.api.history.v1.History.fromObject(history)).finish());
  };
  for (const [i, runId] of runs.entries()) await write(`${name}.datasetWorkflow-${i}.binpb`, client.workflow.getHandle(workflowId, runId));
  for (const child of children) await write(`${name}.rowWorkflow-${child.split('/').pop()}.binpb`, client.workflow.getHandle(child));
}

async function withWorkers<T>(
  work: (start: (input: DatasetWorkflowInput) => Promise<WorkflowHandle>) => Promise<T>,
  deps = {},
): Promise<T> {
  const workers = await createWorkers({
    connection: env.nativeConnection,
    namespace: 'default',
    env: workerEnv,
    workerOptions: { shutdownGraceTime: '1 second' },
    modelActivityDeps: deps,
  });
  const running = workers.map((w) => w.run());
  try {
    return await work((input) =>
      env.client.workflow.start('datasetWorkflow', { taskQueue: ORCHESTRATOR_QUEUE, workflowId: input.runId, args: [input] }),
    );
  } finally {
    workers.forEach((w) => w.shutdown());
    await Promise.allSettled(running);
  }
}

/** Polls the run's progress query until `done` holds (generous: the machine may be loaded). */
async function progressUntil(handle: WorkflowHandle, done: (p: ProgressSnapshot) => boolean): Promise<ProgressSnapshot> {
  for (let i = 0; i < 1200; i++) {
    const p = (await handle.query('progress')) as ProgressSnapshot;
    if (done(p)) return p;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${handle.workflowId}: the awaited progress never came`);
}

describe('record workflow histories', () => {
  it('plain: ok rows, a refused row, a retried row', async () => {
    openai.script('pl-blocked', [faults.moderationBlocked()], { repeat: true });
    openai.script('pl-busy', [faults.rateLimited(0)]);
    const { csv, outputDir } = await rowsCsv('plain', ['a.png,pl-0 x', 'a.png,pl-blocked x', 'a.png,pl-busy x', 'a.png,pl-3 x']);
    await withWorkers(async (start) => (await start(testInput({ runId: 'rec-plain', inputPath: csv, outputDir, window: 2 }))).result());
    await save(env.client, 'plain', 'rec-plain', ['rec-plain/row/1', 'rec-plain/row/2']);
  });

  it('continue-as-new with rows handed over', async () => {
    const rows = Array.from({ length: 60 }, (_, i) => `a.png,can-${i}${i % 6 === 0 ? '-slow' : ''} x`);
    for (let i = 0; i < 60; i += 6) openai.script(`can-${i}-slow`, [faults.rateLimited(1)]);
    const { csv, outputDir } = await rowsCsv('can', rows);
    await withWorkers(async (start) =>
      (await start(testInput({ runId: 'rec-can', inputPath: csv, outputDir, window: 6, maxHistoryEvents: 200 }))).result(),
    );
    await save(env.client, 'can', 'rec-can', ['rec-can/row/6']);
  });

  it('quota pause that lifts itself at the reset time', async () => {
    gemini.script('qp-0', [geminiFaults.rateLimited(1)]);
    gemini.script('qp-1', [geminiFaults.dailyQuota()]);
    const { csv, outputDir } = await rowsCsv('quota', ['a.png,qp-0 x', 'a.png,qp-1 x', 'a.png,qp-2 x']);
    const input = testInput({
      runId: 'rec-quota',
      inputPath: csv,
      outputDir,
      backend: 'gemini',
      model: 'gemini-2.5-flash-image',
      window: 2,
    });
    await withWorkers(async (start) => (await start(input)).result(), { quotaResetAt: () => new Date(Date.now() + 1500).toISOString() });
    await save(env.client, 'quota', 'rec-quota', ['rec-quota/row/1']);
  });

  it('retry update while the run is open', async () => {
    openai.script('ru-blocked', [faults.moderationBlocked()]);
    openai.script('ru-slow', [faults.rateLimited(2)]);
    const { csv, outputDir } = await rowsCsv('retry', ['a.png,ru-blocked x', 'a.png,ru-slow x', 'a.png,ru-2 x']);
    await withWorkers(async (start) => {
      const handle = await start(testInput({ runId: 'rec-retry', inputPath: csv, outputDir, window: 3 }));
      while (openai.callsFor('ru-blocked').length === 0) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 300));
      await handle.executeUpdate('retryRows', { args: [{ errorTypes: ['Blocked'] }] });
      return (await handle.result()) as DatasetRunSummary;
    });
    await save(env.client, 'retry', 'rec-retry', ['rec-retry/row/0']);
  });

  it('cancel with rows in flight', async () => {
    openai.script('cx-slow', [faults.rateLimited(30)], { repeat: true });
    const { csv, outputDir } = await rowsCsv('cancel', ['a.png,cx-0 x', 'a.png,cx-slow x', 'a.png,cx-slow y']);
    await withWorkers(async (start) => {
      const handle = await start(testInput({ runId: 'rec-cancel', inputPath: csv, outputDir, window: 3 }));
      while (openai.callsFor('cx-slow').length < 2) await new Promise((r) => setTimeout(r, 50));
      await handle.cancel();
      await handle.result().catch(() => undefined);
    });
    await save(env.client, 'cancel', 'rec-cancel', ['rec-cancel/row/1']);
  });

  it('GPU rows through the Python worker (tiny random weights, CPU)', async () => {
    const offline = { ...process.env, HF_HUB_OFFLINE: '1' };
    const modelDir = join(tempDir('atelier-rec-model-'), 'tiny-pix2pix');
    execFileSync('bash', [join(REPO, 'gpu-workers', 'scripts', 'python.sh'), '-m', 'atelier_gpu.tiny', 'instruct-pix2pix', modelDir], {
      env: offline,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const dir = tempDir('atelier-rec-gpu-');
    await writePng(join(dir, 'a.png'), '#aa3366', 48);
    writeText(
      join(dir, 'rows.csv'),
      ['index,image,instruction', '0,a.png,make it blue', '1,a.png,add snow', '2,missing.png,never runs'].join('\n'),
    );
    const stateDir = join(dir, 'state');
    const port = await freePort();
    const server = new CliProcess(
      ['server', '--state-dir', stateDir, '--port', String(port), '--ui-port', String(await freePort())],
      offline,
    );
    const cliEnv = { ...offline, TEMPORAL_ADDRESS: `127.0.0.1:${port}` };
    await server.waitForOutput(/address: /);
    const gpu = new CliProcess(['gpu-worker', '--model', modelDir, '--gpus', 'cpu', '--max-area', '4096', '--warmup-steps', '1'], cliEnv);
    const worker = new CliProcess(['worker', '--queues', 'atelier-orchestrator'], cliEnv);
    try {
      await gpu.waitForOutput(new RegExp(`GPU worker ready: .* on ${gpuTaskQueue(modelDir)}`), 300_000);
      await worker.waitForOutput(/serving atelier-orchestrator/);
      const run = await atelier(
        [
          'edit',
          '--input',
          join(dir, 'rows.csv'),
          '--output-dir',
          join(dir, 'out'),
          '--backend',
          'diffusers',
          '--model',
          modelDir,
          '--num-inference-steps',
          '2',
          '--run-id',
          'rec-gpu',
          '--state-dir',
          stateDir,
        ],
        cliEnv,
      );
      if (run.code !== 2) throw new Error(`the GPU run ended ${run.code}: ${run.stderr}`);
      const connection = await Connection.connect({ address: `127.0.0.1:${port}` });
      await save(new Client({ connection }), 'gpu', 'rec-gpu', ['rec-gpu/row/0']);
      await connection.close();
    } finally {
      await worker.stop();
      await gpu.stop('SIGTERM');
      await server.stop();
    }
  });

  it('budget: --max-cost pauses the run, a higher budget lets it finish (search attributes on)', async () => {
    // gpt-image-2 on the stand-in costs $0.034754 a row: two rows reach the $0.05 budget.
    const { csv, outputDir } = await rowsCsv('budget', ['a.png,bu-0 x', 'a.png,bu-1 x', 'a.png,bu-2 x', 'a.png,bu-3 x']);
    await withWorkers(async (start) => {
      const handle = await start(
        testInput({ runId: 'rec-budget', inputPath: csv, outputDir, window: 1, maxCostUsd: 0.05, searchAttributes: true }),
      );
      await progressUntil(handle, (p) => p.paused?.budget === true && p.inFlight === 0);
      await handle.signal('budget', { maxCostUsd: 1 });
      return (await handle.result()) as DatasetRunSummary;
    });
    await save(env.client, 'budget', 'rec-budget', ['rec-budget/row/0']);
  });

  it('reserve: --max-cost with a window of 4 reserves the rows in flight, then a higher budget lets it finish', async () => {
    const { csv, outputDir } = await rowsCsv(
      'reserve',
      Array.from({ length: 8 }, (_, i) => `a.png,rs-${i} x`),
    );
    await withWorkers(async (start) => {
      const handle = await start(testInput({ runId: 'rec-reserve', inputPath: csv, outputDir, window: 4, maxCostUsd: 0.1 }));
      await progressUntil(handle, (p) => p.paused?.budget === true && p.inFlight === 0);
      await handle.signal('budget', { maxCostUsd: 1 });
      return (await handle.result()) as DatasetRunSummary;
    });
    await save(env.client, 'reserve', 'rec-reserve');
  });

  it('unreachable: rows failing to connect pause the run; resumed, the last row fails and the run ends', async () => {
    const { csv, outputDir } = await rowsCsv(
      'unreachable',
      Array.from({ length: 7 }, (_, i) => `a.png,ur-${i} x`),
    );
    const reachable = workerEnv;
    workerEnv = { ...reachable, OPENAI_BASE_URL: `http://127.0.0.1:${await freePort()}/v1` };
    try {
      await withWorkers(async (start) => {
        const handle = await start(testInput({ runId: 'rec-unreachable', inputPath: csv, outputDir, window: 2 }));
        await progressUntil(handle, (p) => p.paused?.unreachable === true && p.inFlight === 0);
        await handle.signal('resume');
        return (await handle.result()) as DatasetRunSummary;
      });
    } finally {
      workerEnv = reachable;
    }
    await save(env.client, 'unreachable', 'rec-unreachable');
  });

  it('store: a page and the final tables failing on the store pause the run; its probes lift the pauses', async () => {
    const s3 = await startS3Server();
    const proxy = await startS3FaultProxy(s3.endpoint);
    const saved = { process: { ...process.env }, worker: workerEnv };
    const direct = new S3Client({ region: s3.env.AWS_REGION, endpoint: s3.endpoint, forcePathStyle: true });
    try {
      // The workers' S3 requests go through the proxy, which answers as a store whose bucket is gone.
      Object.assign(process.env, s3.env, { AWS_ENDPOINT_URL_S3: proxy.endpoint, AWS_ENDPOINT_URL: proxy.endpoint });
      workerEnv = { ...process.env, ...workerEnv };
      const bucket = 'rec-store';
      await s3.createBucket(bucket);
      const { csv } = await rowsCsv('store', ['a.png,st-0 x', 'a.png,st-1 x', 'a.png,st-2 x']);
      await direct.send(new PutObjectCommand({ Bucket: bucket, Key: 'data/rows.csv', Body: readFileSync(csv) }));
      await direct.send(new PutObjectCommand({ Bucket: bucket, Key: 'data/a.png', Body: readFileSync(join(dirname(csv), 'a.png')) }));
      const gone = { answer: S3_REFUSALS.noSuchBucket, times: Infinity };
      const pages = { ...gone, method: 'GET', path: new RegExp(`^/${bucket}/out/\\.atelier/plan\\.(idx|jsonl)`) };
      const probes = { ...gone, method: 'PUT', path: new RegExp(`^/${bucket}/out/\\.atelier/store-probe\\.json`) };
      const tables = { ...gone, method: 'PUT', path: new RegExp(`^/${bucket}/out/results\\.(csv|jsonl|parquet)`) };
      [pages, probes, tables].forEach((rule) => proxy.refuse(rule));
      const probesMade = () => proxy.requests.filter((r) => probes.path.test(r.url)).length;
      await withWorkers(async (start) => {
        const handle = await start(
          testInput({ runId: 'rec-store', inputPath: `s3://${bucket}/data/rows.csv`, outputDir: `s3://${bucket}/out`, window: 2 }),
        );
        await progressUntil(handle, (p) => p.paused?.store === true);
        // One probe refused, then the pages and probes answer: the pause lifts by itself.
        while (probesMade() < 1) await new Promise((r) => setTimeout(r, 200));
        proxy.clearFaults();
        proxy.refuse(tables);
        await progressUntil(handle, (p) => p.ok === 3 && p.paused?.store === true);
        proxy.clearFaults();
        return (await handle.result()) as DatasetRunSummary;
      });
    } finally {
      direct.destroy();
      for (const key of Object.keys(process.env)) if (!(key in saved.process)) delete process.env[key];
      Object.assign(process.env, saved.process);
      workerEnv = saved.worker;
      await proxy.close();
      await s3.stop();
    }
    await save(env.client, 'store', 'rec-store');
  });

  it('early: a pause signalled with the start, heard while planning, holds the run until resumed', async () => {
    const { csv, outputDir } = await rowsCsv('early', ['a.png,ea-0 x', 'a.png,ea-1 x']);
    await withWorkers(async () => {
      const input = testInput({ runId: 'rec-early', inputPath: csv, outputDir, window: 2 });
      const handle = await env.client.workflow.signalWithStart('datasetWorkflow', {
        taskQueue: ORCHESTRATOR_QUEUE,
        workflowId: input.runId,
        args: [input],
        signal: 'pause',
        signalArgs: [{ reason: 'held from the start' }],
      });
      await progressUntil(handle, (p) => p.phase !== 'planning' && p.paused !== null);
      if (openai.callsFor('ea-').length > 0) throw new Error('a row was called while the run was held');
      await handle.signal('resume');
      return (await handle.result()) as DatasetRunSummary;
    });
    await save(env.client, 'early', 'rec-early');
  });

  it('judge: the done rows of a run scored by the judge workflow (one row judged low)', async () => {
    const judge = await startJudgeStandin();
    const { csv, outputDir } = await rowsCsv('judge', ['a.png,ju-0 x', 'a.png,ju-1 judge-low x']);
    const judgeEnv = { ATELIER_JUDGE_API_KEY: 'sk-record-judge', ATELIER_JUDGE_BASE_URL: judge.baseURL };
    const saved = workerEnv;
    workerEnv = { ...workerEnv, ...judgeEnv };
    try {
      await withWorkers(async (start) => {
        await (await start(testInput({ runId: 'rec-judge', inputPath: csv, outputDir, window: 2 }))).result();
        const handle = await env.client.workflow.start('judgeWorkflow', {
          taskQueue: ORCHESTRATOR_QUEUE,
          workflowId: 'rec-judge/judge',
          args: [{ runId: 'rec-judge', outputDir, model: 'gpt-4.1-mini', window: 2, maxAttempts: 2 }],
        });
        return handle.result();
      });
    } finally {
      workerEnv = saved;
      await judge.close();
    }
    const history = await env.client.workflow.getHandle('rec-judge/judge').fetchHistory();
    writeFileSync(
      join(OUT, 'judge.judgeWorkflow-0.binpb'),
      temporal.api.history.v1.History.encode(temporal.api.history.v1.History.fromObject(history)).finish(),
    );
  });
});
