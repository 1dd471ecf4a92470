// @temporalio/worker (and its native core) loads when workers are created, not with this module:
// the CLI imports this module for every command, and loading it can overlap the dev server's start.
import type { NativeConnection, Worker, WorkerOptions } from '@temporalio/worker';
import { createBatchActivities, createBatchPlanningActivities } from '../activities/batch';
import { createModelActivities, type ModelActivityDeps } from '../activities/editRow';
import { createGpuRowActivities } from '../activities/gpuRow';
import { createOrchestrationActivities } from '../activities/orchestration';
import { createPromptEnhancer, type PromptEnhancer } from '../activities/providers/promptEnhance';
import { createJudgeClient } from '../activities/judge/client';
import { createJudgeActivities, createJudgeListActivities, JUDGE_QUEUE } from '../activities/judge/activities';
import { createModelCheckActivities } from '../activities/providers/modelCheck';
import { API_BACKEND_NAMES, API_BACKENDS, isBatchBackend, providerFromEnv, type ApiBackend } from '../activities/providers/registry';
import { JUDGE_ENV, ORCHESTRATOR_QUEUE, providerQueue } from '../lib/shared/constants';
import { endpointTag } from '../lib/temporal/endpoint';
import { UsageError } from '../lib/shared/errors';
import { workflowCodeOption } from './bundle';

/** Names of every queue `atelier worker` can serve. */
export const ALL_QUEUES: readonly string[] = [ORCHESTRATOR_QUEUE, ...API_BACKEND_NAMES.map((b) => providerQueue(b)), JUDGE_QUEUE];

/**
 * The endpoint queue a worker serves for `backend`: that of its own base URL (OPENAI_BASE_URL, ...)
 * when it has one. Runs started with that `--base-url` use it; see providerQueue.
 */
export function endpointQueueOf(backend: ApiBackend, env: NodeJS.ProcessEnv): string | undefined {
  const url = env[API_BACKENDS[backend].baseUrl];
  return url ? providerQueue(backend, endpointTag(url)) : undefined;
}

/** `api-<backend>@<tag>`: the backend of an endpoint queue, or undefined for any other name. */
function endpointQueueBackend(queue: string): ApiBackend | undefined {
  const match = /^api-([a-z]+)@[0-9a-f]{12}$/.exec(queue);
  return match && (API_BACKEND_NAMES as readonly string[]).includes(match[1]!) ? (match[1] as ApiBackend) : undefined;
}

/** The judge's key and base URL (`atelier judge`): its own, so judging bills apart from editing. */
export { JUDGE_ENV };

export interface WorkerSetOptions {
  connection: NativeConnection;
  namespace: string;
  /** Queues to serve; default: orchestration and the providers whose keys are in `env`. */
  queues?: readonly string[];
  /** Where provider keys and base URLs come from: the worker's own environment. */
  env: NodeJS.ProcessEnv;
  /** Model calls in flight per provider worker. */
  concurrency?: number;
  /** Model calls per second for each provider queue, enforced by the server for all its workers. */
  rateLimitPerSecond?: number;
  /** Extra Worker options (tests shorten shutdown grace, for instance). */
  workerOptions?: Partial<WorkerOptions>;
  /** Overrides of the model activities' dependencies (tests move a quota's reset time near). */
  modelActivityDeps?: Partial<ModelActivityDeps>;
  /** Where provider model lists are cached (a state dir); in memory only when absent. */
  modelListCacheDir?: string;
}

/** The model check (is the model in the provider's own list?), keyed from the worker environment. */
export function modelCheckActivitiesFromEnv(backend: ApiBackend, env: NodeJS.ProcessEnv, cacheDir?: string) {
  const names = API_BACKENDS[backend];
  const apiKey = names.keys.map((k) => env[k]).find((v) => v) ?? '';
  return createModelCheckActivities({ backend, apiKey, baseURL: env[names.baseUrl] || undefined, ...(cacheDir ? { cacheDir } : {}) });
}

/**
 * `--batch`: the provider batch activities of a backend that has a batch API, keyed from the
 * worker environment like the provider itself; none for other backends.
 */
export function batchActivitiesFromEnv(
  backend: ApiBackend,
  env: NodeJS.ProcessEnv,
): ReturnType<typeof createBatchActivities> | Record<string, never> {
  if (!isBatchBackend(backend)) return {};
  const names = API_BACKENDS[backend];
  const apiKey = names.keys.map((k) => env[k]).find((v) => v);
  if (!apiKey) return {};
  return createBatchActivities({ backend, apiKey, baseURL: env[names.baseUrl] || undefined });
}

/** The optional prompt enhancer: an OpenAI-compatible chat model, keyed from the worker environment. */
export function promptEnhancerFromEnv(model: string, env: NodeJS.ProcessEnv): PromptEnhancer {
  const apiKey = env.PROMPT_ENHANCE_API_KEY || env.OPENROUTER_API_KEY || env.OPENAI_API_KEY;
  if (!apiKey) {
    throw new UsageError(
      '--prompt-enhance needs PROMPT_ENHANCE_API_KEY (or OPENROUTER_API_KEY / OPENAI_API_KEY) in the worker environment',
    );
  }
  const baseURL =
    env.PROMPT_ENHANCE_BASE_URL ||
    (env.PROMPT_ENHANCE_API_KEY
      ? undefined
      : env.OPENROUTER_API_KEY
        ? env.OPENROUTER_BASE_URL || 'https://openrouter.ai/api/v1'
        : env.OPENAI_BASE_URL) ||
    undefined;
  return createPromptEnhancer({ apiKey, baseURL, model });
}

/** Creates the workers for the chosen queues; run them with `Promise.all(workers.map(w => w.run()))`. */
export async function createWorkers(options: WorkerSetOptions): Promise<Worker[]> {
  // By default: orchestration plus every provider whose key this worker has.
  // A provider with a base URL also serves the runs that asked for that endpoint (--base-url).
  const queues = options.queues ?? [
    ORCHESTRATOR_QUEUE,
    ...API_BACKEND_NAMES.filter((b) => API_BACKENDS[b].keys.some((k) => options.env[k])).flatMap((b) => {
      const own = endpointQueueOf(b, options.env);
      return own ? [providerQueue(b), own] : [providerQueue(b)];
    }),
    ...(options.env[JUDGE_ENV.key] ? [JUDGE_QUEUE] : []),
  ];
  const unknown = queues.filter((q) => !ALL_QUEUES.includes(q) && !endpointQueueBackend(q));
  if (unknown.length > 0) {
    throw new UsageError(
      `unknown queue(s): ${unknown.join(', ')}; known queues are ${ALL_QUEUES.join(', ')} and api-<backend>@<endpoint tag>`,
    );
  }
  // An endpoint queue is served only by a worker whose own base URL is that endpoint.
  for (const queue of queues) {
    const backend = endpointQueueBackend(queue);
    if (backend && endpointQueueOf(backend, options.env) !== queue) {
      const name = API_BACKENDS[backend].baseUrl;
      throw new UsageError(
        `queue ${queue} is for another endpoint than this worker's ${name} (${options.env[name] ? `${options.env[name]} is ${endpointQueueOf(backend, options.env)}` : 'unset'}): set ${name} to the run's --base-url`,
      );
    }
  }
  // Resolve providers first so a missing key fails before anything starts polling.
  const providerQueues = queues.filter((q) => q.startsWith('api-'));
  const providers = await Promise.all(
    API_BACKEND_NAMES.filter((b) => providerQueues.some((q) => q === providerQueue(b) || endpointQueueBackend(q) === b)).map((b) =>
      providerFromEnv(b, options.env),
    ),
  );
  const { Worker: WorkerClass } = await import('@temporalio/worker');
  const common = { connection: options.connection, namespace: options.namespace, ...options.workerOptions };
  // Created concurrently: each validates the namespace with the server, and the orchestrator's loads
  // the workflow bundle into its threads; one after the other, their waits added up.
  const workers: Array<Promise<Worker>> = [];
  if (queues.includes(ORCHESTRATOR_QUEUE)) {
    workers.push(
      WorkerClass.create({
        ...common,
        taskQueue: ORCHESTRATOR_QUEUE,
        ...workflowCodeOption(),
        activities: {
          ...createOrchestrationActivities(),
          ...createGpuRowActivities(),
          ...createJudgeListActivities(),
          ...createBatchPlanningActivities(),
        },
      }),
    );
  }
  for (const [provider, taskQueue] of providers.flatMap((p) =>
    providerQueues.filter((q) => q === providerQueue(p.backend) || endpointQueueBackend(q) === p.backend).map((q) => [p, q] as const),
  )) {
    workers.push(
      WorkerClass.create({
        ...common,
        taskQueue,
        activities: {
          ...createModelActivities(provider, {
            enhancer: (model) => promptEnhancerFromEnv(model, options.env),
            ...options.modelActivityDeps,
          }),
          ...batchActivitiesFromEnv(provider.backend, options.env),
          ...modelCheckActivitiesFromEnv(provider.backend, options.env, options.modelListCacheDir),
        },
        // No more slots than the provider account runs at once (fal): the rest wait in Temporal's queue.
        maxConcurrentActivityTaskExecutions: Math.min(options.concurrency ?? 16, provider.maxConcurrentCalls ?? Infinity),
        ...(options.rateLimitPerSecond ? { maxTaskQueueActivitiesPerSecond: options.rateLimitPerSecond } : {}),
      }),
    );
  }
  if (queues.includes(JUDGE_QUEUE)) {
    const apiKey = options.env[JUDGE_ENV.key];
    if (!apiKey)
      throw new UsageError(
        `${JUDGE_ENV.key} is not set in the worker environment; export it (and ${JUDGE_ENV.baseUrl} for a server other than OpenAI's) to serve the judge queue`,
      );
    workers.push(
      WorkerClass.create({
        ...common,
        taskQueue: JUDGE_QUEUE,
        activities: createJudgeActivities(createJudgeClient({ apiKey, baseURL: options.env[JUDGE_ENV.baseUrl] || undefined })),
        maxConcurrentActivityTaskExecutions: options.concurrency ?? 16,
        ...(options.rateLimitPerSecond ? { maxTaskQueueActivitiesPerSecond: options.rateLimitPerSecond } : {}),
      }),
    );
  }
  return Promise.all(workers);
}

/** Runs workers until `done` settles, waits for all of them to shut down, then returns its outcome. */
export async function runWorkersUntil<T>(workers: Worker[], done: Promise<T>): Promise<T> {
  const settled = await Promise.allSettled([done, ...workers.map((w) => w.runUntil(done))]);
  const failure = settled.find((s) => s.status === 'rejected');
  if (failure) throw (failure as PromiseRejectedResult).reason;
  return (settled[0] as PromiseFulfilledResult<T>).value;
}
