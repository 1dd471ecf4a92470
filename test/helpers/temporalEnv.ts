import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, type Worker } from '@temporalio/worker';
import { ORCHESTRATOR_QUEUE } from '../../lib/shared/constants';
import type { DatasetRunSummary, DatasetWorkflowInput } from '../../lib/shared/types';
import { createWorkers, runWorkersUntil } from '../../workers';
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
