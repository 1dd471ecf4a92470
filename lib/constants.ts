import type { Backend } from './types';

/** Task queue of the dataset and row workflows and of the file-handling activities. */
export const ORCHESTRATOR_QUEUE = 'atelier-orchestrator';

/** Each provider has its own task queue so its rate and concurrency are set in one place. */
export function providerQueue(backend: Backend): string {
  return `api-${backend}`;
}

/** Folder inside the output dir that holds the plan and the row ledger. */
export const RUN_META_DIR = '.atelier';

/** Output file name of a row: the dataset index zero-padded to 6 digits. */
export function outputNameForIndex(index: number): string {
  return `${String(index).padStart(6, '0')}.png`;
}

export const IMAGE_COLUMN_CANDIDATES = ['input_images', 'image_url', 'image'] as const;
