import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createModelActivities } from '../activities/editRow';
import { createGpuRowActivities } from '../activities/gpuRow';
import { createOrchestrationActivities } from '../activities/orchestration';
import { createOpenAIProvider } from '../activities/providers/openai';
import type { ImageEditProvider } from '../activities/providers/provider';
import { ORCHESTRATOR_QUEUE, providerQueue } from '../lib/constants';
import { UsageError } from '../lib/errors';
import type { ApiBackend } from '../lib/types';
import { workflowCodeOption } from './bundle';

/** Cloud backends served here (diffusers is served by the Python GPU workers). */
export const BACKENDS: readonly ApiBackend[] = ['openai'];

/** Names of every queue `atelier worker` can serve. */
export const ALL_QUEUES: readonly string[] = [ORCHESTRATOR_QUEUE, ...BACKENDS.map(providerQueue)];

export interface WorkerSetOptions {
  connection: NativeConnection;
  namespace: string;
  /** Queues to serve; default all. */
  queues?: readonly string[];
  /** Where provider keys and base URLs come from: the worker's own environment. */
  env: NodeJS.ProcessEnv;
  /** Model calls in flight per provider worker. */
  concurrency?: number;
  /** Extra Worker options (tests shorten shutdown grace, for instance). */
  workerOptions?: Partial<WorkerOptions>;
}

/** Builds the provider adapter for a backend from the worker environment (keys never leave it). */
export function providerFromEnv(backend: ApiBackend, env: NodeJS.ProcessEnv): ImageEditProvider {
  switch (backend) {
    case 'openai': {
      const apiKey = env.OPENAI_API_KEY;
      if (!apiKey) {
        throw new UsageError(
          'OPENAI_API_KEY is not set in the worker environment; export it (and OPENAI_BASE_URL for an OpenAI-compatible server) before starting the worker, or run `npx atelier demo` to try the bundled stand-in',
        );
      }
      return createOpenAIProvider({ apiKey, baseURL: env.OPENAI_BASE_URL || undefined });
    }
    default:
      throw new UsageError(`backend ${backend} is not available in this version`);
  }
}

/** Creates the workers for the chosen queues; run them with `Promise.all(workers.map(w => w.run()))`. */
export async function createWorkers(options: WorkerSetOptions): Promise<Worker[]> {
  const queues = options.queues ?? ALL_QUEUES;
  const unknown = queues.filter((q) => !ALL_QUEUES.includes(q));
  if (unknown.length > 0) {
    throw new UsageError(`unknown queue(s): ${unknown.join(', ')}; known queues are ${ALL_QUEUES.join(', ')}`);
  }
  // Resolve providers first so a missing key fails before anything starts polling.
  const providers = BACKENDS.filter((b) => queues.includes(providerQueue(b))).map((b) => providerFromEnv(b, options.env));
  const common = { connection: options.connection, namespace: options.namespace, ...options.workerOptions };
  const workers: Worker[] = [];
  if (queues.includes(ORCHESTRATOR_QUEUE)) {
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: ORCHESTRATOR_QUEUE,
        ...workflowCodeOption(),
        activities: { ...createOrchestrationActivities(), ...createGpuRowActivities() },
      }),
    );
  }
  for (const provider of providers) {
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: providerQueue(provider.backend),
        activities: createModelActivities(provider),
        maxConcurrentActivityTaskExecutions: options.concurrency ?? 16,
      }),
    );
  }
  return workers;
}
