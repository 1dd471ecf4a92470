import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { S3TestServer } from '../../testing/versitygw';
import { assertBuilt, atelier, CliProcess, waitUntil } from '../helpers/cli';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { GPU_PYTHON, readBucketObject, startGpuS3Testbed } from '../helpers/gpuS3Testbed';

// URLs only for the attempt the server runs now (issue 23), end to end: the real Python GPU worker
// (the tiny model on CPU, outputs in versitygw) is frozen (SIGSTOP: a suspended VM, a long pause)
// with its polls open, so the row's first GPU attempt is handed to it; the attempt times out on its
// heartbeat and the server schedules the next. Woken (SIGCONT), the worker goes on with attempt 1
// and asks the row workflow for its URLs: refused (mintGpuUrls asks the server which attempt runs).
// The worker then takes the current attempt, whose URLs are granted, and the row is made by it.

let env: TestWorkflowEnvironment;
let s3: S3TestServer;
let client: S3Client;
let modelDir: string;
const processes: CliProcess[] = [];
let gpu: ChildProcess | undefined;

beforeAll(async () => {
  assertBuilt();
  ({ env, s3, client, modelDir } = await startGpuS3Testbed('atelier-stale-gpu-model-'));
}, 600_000);

afterAll(async () => {
  if (gpu && gpu.exitCode === null) {
    gpu.kill('SIGCONT');
    gpu.kill('SIGTERM');
    await new Promise((r) => gpu!.once('close', r));
  }
  for (const p of processes.reverse()) await p.stop('SIGINT');
  client?.destroy();
  await s3?.stop();
  await env?.teardown();
});

type Failure = temporal.api.failure.v1.IFailure | null | undefined;

/** A failure's message and its causes' (an activity's failure comes as the cause of the update's), or undefined. */
function failureText(failure: Failure): string | undefined {
  if (!failure) return undefined;
  const cause = failureText(failure.cause);
  return cause ? `${failure.message ?? ''} / ${cause}` : (failure.message ?? '');
}

/** The one row workflow of the server (the run has one row). */
async function rowWorkflow(): Promise<{ workflowId: string; runId: string }> {
  let found: { workflowId: string; runId: string } | undefined;
  await waitUntil(
    async () => {
      for await (const wf of env.client.workflow.list({ query: "WorkflowType = 'rowWorkflow'" })) found = wf;
      return found !== undefined;
    },
    120_000,
    'the row workflow',
  );
  return found!;
}

describe('GPU URLs for the current attempt only', () => {
  it('a GPU worker woken with a superseded attempt asks for its URLs and is refused; the current attempt makes the row', async () => {
    const address = env.connection.options.address;
    const base: NodeJS.ProcessEnv = { ...process.env, HF_HUB_OFFLINE: '1', TEMPORAL_ADDRESS: address };
    const withStorage = { ...base, ...s3.env };
    const dir = tempDir('atelier-stale-gpu-data-');
    await writePng(join(dir, 'a.png'), '#204060', 48);
    writeText(join(dir, 'rows.csv'), ['image,instruction', 'a.png,make it blue'].join('\n'));

    const orchestrator = new CliProcess(['worker', '--queues', 'atelier-orchestrator'], withStorage);
    processes.push(orchestrator);
    await orchestrator.waitForOutput(/serving atelier-orchestrator/);
    // The Python worker itself (python.sh execs it), so the signals reach the process that polls.
    const worker = spawn(
      'bash',
      [
        GPU_PYTHON,
        '-m',
        'atelier_gpu.worker',
        '--address',
        address,
        '--model',
        modelDir,
        '--gpus',
        'cpu',
        '--max-area',
        '4096',
        '--warmup-steps',
        '1',
      ],
      { env: { ...base, PYTHONUNBUFFERED: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    gpu = worker;
    let output = '';
    worker.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    worker.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    await waitUntil(async () => /"event": ?"ready"/.test(output), 300_000, 'the GPU worker to be ready');
    const taskQueue = (JSON.parse(output.split('\n').find((l) => /"event": ?"ready"/.test(l))!) as { task_queue: string }).task_queue;
    // Frozen once the server lists its polls (a poll lives about a minute): the row's first attempt goes to one.
    await waitUntil(
      async () => {
        const { pollers } = await env.client.workflowService.describeTaskQueue({
          namespace: 'default',
          taskQueue: { name: taskQueue },
          taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        });
        return (pollers ?? []).some((p) => p.identity?.includes(`:${worker.pid}:`));
      },
      60_000,
      'the GPU worker to poll',
    );
    worker.kill('SIGSTOP');

    const run = atelier(
      [
        'edit',
        '--input',
        join(dir, 'rows.csv'),
        '--output-dir',
        's3://atelier/stale-out',
        '--backend',
        'diffusers',
        '--model',
        modelDir,
        '--num-inference-steps',
        '2',
        '--seed',
        '7',
        '--heartbeat-timeout',
        '3',
        '--max-retries',
        '3',
        '--state-dir',
        tempDir('atelier-stale-gpu-state-'),
      ],
      withStorage,
    );
    // Attempt 1 was handed to the frozen worker and timed out: the server now runs (or waits to run) attempt 2.
    const row = await rowWorkflow();
    const handle = env.client.workflow.getHandle(row.workflowId, row.runId);
    await waitUntil(
      async () => {
        const { raw } = await handle.describe();
        return (raw.pendingActivities ?? []).some((a) => a.activityType?.name === 'editImageGpu' && (a.attempt ?? 0) >= 2);
      },
      120_000,
      'attempt 1 to time out',
    );
    worker.kill('SIGCONT');

    const done = await run;
    const trace = `${done.stdout}\n${done.stderr}\n--- GPU worker:\n${output.slice(-3000)}`;
    expect(done.code, trace).toBe(0);
    const results = parse(await readBucketObject(client, 'stale-out/results.csv'), { columns: true }) as Record<string, string>[];
    expect(results.map((r) => r.status)).toEqual(['ok']);

    // The row workflow's URL requests (its `gpuUrls` updates, one id per attempt and use): attempt 1's
    // was refused, naming the attempt the server runs; every granted one was for a later attempt.
    const history = await handle.fetchHistory();
    const outcomes = new Map<string, { failure?: string }>();
    for (const event of history.events ?? []) {
      const completed = event.workflowExecutionUpdateCompletedEventAttributes;
      if (completed?.meta?.updateId) outcomes.set(completed.meta.updateId, { failure: failureText(completed.outcome?.failure) });
    }
    const stale = [...outcomes].filter(([id]) => /^gpu-urls-.+-1-(get|put)$/.test(id));
    expect(stale.length, trace).toBeGreaterThan(0);
    for (const [, outcome] of stale)
      expect(outcome.failure).toMatch(
        /no URLs for attempt 1 of row 0's GPU activity .*: (the server runs attempt [2-9]|the activity is not pending)/,
      );
    const granted = [...outcomes].filter(([, o]) => o.failure === undefined).map(([id]) => id);
    expect(granted.length).toBeGreaterThan(0);
    for (const id of granted) expect(id).not.toMatch(/-1-(get|put)$/);
  }, 600_000);
});
