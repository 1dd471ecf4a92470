import type { ApiBackend } from './backends';

/** Task queue of the dataset and row workflows and of the file-handling activities. */
export const ORCHESTRATOR_QUEUE = 'atelier-orchestrator';

/** The judge's task queue. */
export const JUDGE_QUEUE = 'judge';

/** The judge's key and base URL, read from the workers' environment (never from a workflow input). */
export const JUDGE_ENV = { key: 'ATELIER_JUDGE_API_KEY', baseUrl: 'ATELIER_JUDGE_BASE_URL' } as const;

/**
 * Each provider has its own task queue so its rate and concurrency are set in one place. A run
 * that names its endpoint (`--base-url`) has a queue of its own for it, `api-<backend>@<tag>` (tag:
 * lib/temporal/endpoint.ts), which only workers configured for that endpoint poll: its rows can never
 * be served by a worker pointed elsewhere.
 */
export function providerQueue(backend: ApiBackend, endpoint?: string): string {
  return endpoint ? `api-${backend}@${endpoint}` : `api-${backend}`;
}

/** Folder inside the output dir that holds the plan and the row ledger. */
export const RUN_META_DIR = '.atelier';

export const IMAGE_COLUMN_CANDIDATES = ['input_images', 'image_url', 'image'] as const;
