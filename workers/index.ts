import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createModelActivities, type ModelActivityDeps } from '../activities/editRow';
import { createGpuRowActivities } from '../activities/gpuRow';
import { createOrchestrationActivities } from '../activities/orchestration';
import { createAzureOpenAIProvider } from '../activities/providers/azure';
import { createVertexProvider } from '../activities/providers/vertex';
import { createFalProvider } from '../activities/providers/fal';
import { createGeminiProvider } from '../activities/providers/gemini';
import { createModelScopeProvider } from '../activities/providers/modelscope';
import { createOpenAIProvider } from '../activities/providers/openai';
import { createOpenRouterProvider } from '../activities/providers/openrouter';
import { createPromptEnhancer, type PromptEnhancer } from '../activities/providers/promptEnhance';
import { createJudgeClient } from '../activities/judge/client';
import { createJudgeActivities, createJudgeListActivities, JUDGE_QUEUE } from '../activities/judge/activities';
import type { ImageEditProvider } from '../activities/providers/provider';
import { ORCHESTRATOR_QUEUE, providerQueue } from '../lib/constants';
import { UsageError } from '../lib/errors';
import type { ApiBackend } from '../lib/types';
import { workflowCodeOption } from './bundle';

/** Cloud backends served here (diffusers is served by the Python GPU workers). */
export const BACKENDS: readonly ApiBackend[] = ['openai', 'gemini', 'openrouter', 'modelscope', 'azure', 'vertex', 'fal'];

/** Where each backend's key and base URL come from (the worker's environment, nowhere else). */
export const BACKEND_ENV: Record<ApiBackend, { keys: string[]; baseUrl: string }> = {
  openai: { keys: ['OPENAI_API_KEY'], baseUrl: 'OPENAI_BASE_URL' },
  gemini: { keys: ['GEMINI_API_KEY', 'GOOGLE_API_KEY'], baseUrl: 'GEMINI_BASE_URL' },
  openrouter: { keys: ['OPENROUTER_API_KEY'], baseUrl: 'OPENROUTER_BASE_URL' },
  modelscope: { keys: ['MODELSCOPE_API_KEY'], baseUrl: 'MODELSCOPE_BASE_URL' },
  // The "base URL" is the resource endpoint, which Azure needs (no default); OPENAI_API_VERSION too.
  azure: { keys: ['AZURE_OPENAI_API_KEY'], baseUrl: 'AZURE_OPENAI_ENDPOINT' },
  // Express mode (an API key) or a project with Application Default Credentials. Not GOOGLE_API_KEY:
  // that one already selects the Gemini API, and one key must not start two backends.
  vertex: { keys: ['VERTEX_API_KEY', 'GOOGLE_CLOUD_PROJECT'], baseUrl: 'VERTEX_BASE_URL' },
  // FAL_KEY is the name fal's own clients read.
  fal: { keys: ['FAL_KEY'], baseUrl: 'FAL_BASE_URL' },
};

/** Names of every queue `atelier worker` can serve. */
export const ALL_QUEUES: readonly string[] = [ORCHESTRATOR_QUEUE, ...BACKENDS.map(providerQueue), JUDGE_QUEUE];

/** The judge's key and base URL (`atelier judge`): its own, so judging bills apart from editing. */
export const JUDGE_ENV = { key: 'ATELIER_JUDGE_API_KEY', baseUrl: 'ATELIER_JUDGE_BASE_URL' } as const;

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
}

/** Builds the provider adapter for a backend from the worker environment (keys never leave it). */
export function providerFromEnv(backend: ApiBackend, env: NodeJS.ProcessEnv): ImageEditProvider {
  const names = BACKEND_ENV[backend];
  const apiKey = names.keys.map((k) => env[k]).find((v) => v);
  if (!apiKey) {
    throw new UsageError(
      `${names.keys.join(' or ')} is not set in the worker environment; export it (and ${names.baseUrl} to reach another server) before starting the worker` +
        (backend === 'openai' ? ', or run `npx atelier demo` to try the bundled stand-in' : ''),
    );
  }
  const baseURL = env[names.baseUrl] || undefined;
  switch (backend) {
    case 'openai':
      return createOpenAIProvider({ apiKey, baseURL });
    case 'gemini':
      return createGeminiProvider({ apiKey, baseURL });
    case 'openrouter':
      return createOpenRouterProvider({ apiKey, baseURL });
    case 'modelscope': {
      // How often a submitted task is polled (ModelScope suggests a few seconds).
      const poll = Number(env.MODELSCOPE_POLL_INTERVAL_MS);
      return createModelScopeProvider({ apiKey, baseURL, ...(poll > 0 ? { pollIntervalMs: poll } : {}) });
    }
    case 'azure': {
      const apiVersion = env.OPENAI_API_VERSION;
      if (!baseURL || !apiVersion) {
        throw new UsageError('Azure OpenAI needs AZURE_OPENAI_ENDPOINT (https://<resource>.openai.azure.com) and OPENAI_API_VERSION in the worker environment, besides AZURE_OPENAI_API_KEY');
      }
      return createAzureOpenAIProvider({ apiKey, endpoint: baseURL, apiVersion });
    }
    case 'vertex':
      // GOOGLE_CLOUD_PROJECT is not a key: it selects project mode (ADC) when VERTEX_API_KEY is absent.
      return createVertexProvider({ apiKey: env.VERTEX_API_KEY || undefined, project: env.GOOGLE_CLOUD_PROJECT, location: env.GOOGLE_CLOUD_LOCATION, baseURL });
    case 'fal': {
      // How often a submitted request is polled.
      const poll = Number(env.FAL_POLL_INTERVAL_MS);
      return createFalProvider({ apiKey, baseURL, ...(poll > 0 ? { pollIntervalMs: poll } : {}) });
    }
  }
}

/** The optional prompt enhancer: an OpenAI-compatible chat model, keyed from the worker environment. */
export function promptEnhancerFromEnv(model: string, env: NodeJS.ProcessEnv): PromptEnhancer {
  const apiKey = env.PROMPT_ENHANCE_API_KEY || env.OPENROUTER_API_KEY || env.OPENAI_API_KEY;
  if (!apiKey) {
    throw new UsageError('--prompt-enhance needs PROMPT_ENHANCE_API_KEY (or OPENROUTER_API_KEY / OPENAI_API_KEY) in the worker environment');
  }
  const baseURL = env.PROMPT_ENHANCE_BASE_URL || (env.PROMPT_ENHANCE_API_KEY ? undefined : env.OPENROUTER_API_KEY ? env.OPENROUTER_BASE_URL || 'https://openrouter.ai/api/v1' : env.OPENAI_BASE_URL) || undefined;
  return createPromptEnhancer({ apiKey, baseURL, model });
}

/** Creates the workers for the chosen queues; run them with `Promise.all(workers.map(w => w.run()))`. */
export async function createWorkers(options: WorkerSetOptions): Promise<Worker[]> {
  // By default: orchestration plus every provider whose key this worker has.
  const queues = options.queues ?? [
    ORCHESTRATOR_QUEUE,
    ...BACKENDS.filter((b) => BACKEND_ENV[b].keys.some((k) => options.env[k])).map(providerQueue),
    ...(options.env[JUDGE_ENV.key] ? [JUDGE_QUEUE] : []),
  ];
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
        activities: { ...createOrchestrationActivities(), ...createGpuRowActivities(), ...createJudgeListActivities() },
      }),
    );
  }
  for (const provider of providers) {
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: providerQueue(provider.backend),
        activities: createModelActivities(provider, { enhancer: (model) => promptEnhancerFromEnv(model, options.env), ...options.modelActivityDeps }),
        maxConcurrentActivityTaskExecutions: options.concurrency ?? 16,
        ...(options.rateLimitPerSecond ? { maxTaskQueueActivitiesPerSecond: options.rateLimitPerSecond } : {}),
      }),
    );
  }
  if (queues.includes(JUDGE_QUEUE)) {
    const apiKey = options.env[JUDGE_ENV.key];
    if (!apiKey) throw new UsageError(`${JUDGE_ENV.key} is not set in the worker environment; export it (and ${JUDGE_ENV.baseUrl} for a server other than OpenAI's) to serve the judge queue`);
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: JUDGE_QUEUE,
        activities: createJudgeActivities(createJudgeClient({ apiKey, baseURL: options.env[JUDGE_ENV.baseUrl] || undefined })),
        maxConcurrentActivityTaskExecutions: options.concurrency ?? 16,
        ...(options.rateLimitPerSecond ? { maxTaskQueueActivitiesPerSecond: options.rateLimitPerSecond } : {}),
      }),
    );
  }
  return workers;
}

/** Runs workers until `done` settles, waits for all of them to shut down, then returns its outcome. */
export async function runWorkersUntil<T>(workers: Worker[], done: Promise<T>): Promise<T> {
  const settled = await Promise.allSettled([done, ...workers.map((w) => w.runUntil(done))]);
  const failure = settled.find((s) => s.status === 'rejected');
  if (failure) throw (failure as PromiseRejectedResult).reason;
  return (settled[0] as PromiseFulfilledResult<T>).value;
}
