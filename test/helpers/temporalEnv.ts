import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import type { WorkflowHandle } from '@temporalio/client';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { ORCHESTRATOR_QUEUE } from '../../lib/shared/constants';
import type { DatasetRunSummary, DatasetWorkflowInput, ProgressSnapshot } from '../../lib/shared/types';
import { createWorkers, runWorkersUntil, type WorkerSetOptions } from '../../workers';
import { tempDir } from './fixtures';
import { temporalCliPath } from './temporal';

let runtimeInstalled = false;

/** A real dev server (the pinned CLI, SQLite under `stateDir`) for one test file. */
export async function startTestServer(): Promise<{ env: TestWorkflowEnvironment; stateDir: string }> {
  if (!runtimeInstalled) {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    runtimeInstalled = true;
  }
  const stateDir = tempDir('atelier-state-');
  const env = await TestWorkflowEnvironment.createLocal({
    server: { executable: { type: 'existing-path', path: temporalCliPath() }, dbFilename: join(stateDir, 'temporal.db') },
  });
  return { env, stateDir };
}

/**
 * A worker on `taskQueue` for a test's own workflow file (`test/helpers/<file>`, bundled from source)
 * and activities, running until `stop`.
 */
export async function startTestWorker(
  env: TestWorkflowEnvironment,
  options: { taskQueue: string; workflowsPath: string; activities: object },
): Promise<{ stop(): Promise<void> }> {
  const worker = await Worker.create({ connection: env.nativeConnection, namespace: env.namespace ?? 'default', ...options });
  const running = worker.run();
  return {
    async stop() {
      worker.shutdown();
      await running.catch(() => undefined);
    },
  };
}

/** Runs one dataset workflow with the project's real workers, waiting for them to shut down. */
export async function runDataset(
  env: TestWorkflowEnvironment,
  input: DatasetWorkflowInput,
  workerEnv: NodeJS.ProcessEnv,
): Promise<DatasetRunSummary> {
  const workers: Worker[] = await createWorkers({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    env: workerEnv,
    workerOptions: { shutdownGraceTime: '1 second' },
  });
  const result = env.client.workflow.execute('datasetWorkflow', {
    taskQueue: ORCHESTRATOR_QUEUE,
    workflowId: input.runId,
    args: [input],
  }) as Promise<DatasetRunSummary>;
  return runWorkersUntil(workers, result);
}

/** A dataset run started with the project's real workers, for tests that watch it while it runs. */
export interface WatchedRun {
  handle: WorkflowHandle;
  /** The run's summary (rejects if the run fails or is cancelled). */
  done: Promise<DatasetRunSummary>;
  /** Settles once the workers have shut down, which they do when the run ends. */
  running: Promise<unknown>;
  /** Polls the progress query until `ready` holds; throws (with the last progress) after `timeoutMs`. */
  progressUntil(ready: (p: ProgressSnapshot) => boolean, timeoutMs?: number): Promise<ProgressSnapshot>;
  /** Cancels the run and waits for the workers to stop. */
  stop(): Promise<void>;
}

/**
 * Starts a dataset workflow and the real workers serving it. `beforeWorkers` runs between the
 * start and the workers (a signal that must reach the run before it plans).
 */
export async function watchDatasetRun(
  env: TestWorkflowEnvironment,
  input: DatasetWorkflowInput,
  workerEnv: NodeJS.ProcessEnv,
  options: { workers?: Partial<WorkerSetOptions>; beforeWorkers?: (handle: WorkflowHandle) => Promise<void> } = {},
): Promise<WatchedRun> {
  const handle = await env.client.workflow.start('datasetWorkflow', {
    taskQueue: ORCHESTRATOR_QUEUE,
    workflowId: input.runId,
    args: [input],
  });
  await options.beforeWorkers?.(handle);
  const workers: Worker[] = await createWorkers({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    env: workerEnv,
    workerOptions: { shutdownGraceTime: '1 second' },
    ...options.workers,
  });
  const done = handle.result() as Promise<DatasetRunSummary>;
  const ended = done.catch(() => undefined);
  const running = Promise.allSettled(workers.map((w) => w.runUntil(ended)));
  return {
    handle,
    done,
    running,
    async progressUntil(ready, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const p = (await handle.query('progress')) as ProgressSnapshot;
        if (ready(p)) return p;
        if (Date.now() > deadline) throw new Error(`the run did not get there in ${timeoutMs} ms: ${JSON.stringify(p)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      await handle.cancel();
      await running;
    },
  };
}

/** Defaults for a test run's workflow input. */
export function testInput(
  overrides: Partial<DatasetWorkflowInput> & Pick<DatasetWorkflowInput, 'runId' | 'inputPath' | 'outputDir'>,
): DatasetWorkflowInput {
  return {
    backend: 'openai',
    model: 'gpt-image-2',
    params: {},
    instructionKey: 'instruction',
    numImages: 1,
    encoding: { jpegQuality: 95, webpQuality: 95 },
    window: 4,
    retry: { maxAttempts: 3, initialIntervalMs: 100, maximumIntervalMs: 500 },
    ...overrides,
  };
}
