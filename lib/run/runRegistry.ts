import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../storage/atomicFile';
import type { DatasetWorkflowInput } from '../shared/types';

// The state dir remembers each run's workflow input (paths and settings, never keys), so `retry`,
// `status` and `watch` work on a run long after the Temporal server's retention dropped it.

export interface RegisteredRun {
  input: DatasetWorkflowInput;
  createdAt: string;
}

function registryPath(stateDir: string, runId: string): string {
  return join(stateDir, 'runs', `${runId}.json`);
}

export async function registerRun(stateDir: string, input: DatasetWorkflowInput): Promise<void> {
  const { carried: _carried, retryOnly: _retryOnly, ...kept } = input;
  const entry: RegisteredRun = { input: kept, createdAt: new Date().toISOString() };
  await writeFileAtomic(registryPath(stateDir, input.runId), JSON.stringify(entry, null, 2));
}

export async function findRun(stateDir: string, runId: string): Promise<RegisteredRun | undefined> {
  try {
    return JSON.parse(await readFile(registryPath(stateDir, runId), 'utf8')) as RegisteredRun;
  } catch {
    return undefined;
  }
}
