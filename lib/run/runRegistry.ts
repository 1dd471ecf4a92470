import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../storage/atomicFile';
import type { DatasetWorkflowInput } from '../shared/types';

// The state dir remembers each run's workflow input (paths and settings, never keys), so `retry`,
// `status` and `watch` work on a run long after the Temporal server's retention dropped it.

export interface RegisteredRun {
  input: DatasetWorkflowInput;
  createdAt: string;
  /**
   * `--base-url`, which the workflow input names only by its tag (input.endpoint): kept here, on
   * this machine, so `retry` can point its in-process workers at it and name it in advice.
   */
  baseUrl?: string;
}

function registryPath(stateDir: string, runId: string): string {
  return join(stateDir, 'runs', `${runId}.json`);
}

export async function registerRun(stateDir: string, input: DatasetWorkflowInput, baseUrl?: string): Promise<void> {
  const { carried: _carried, retryOnly: _retryOnly, ...kept } = input;
  const entry: RegisteredRun = { input: kept, createdAt: new Date().toISOString(), ...(baseUrl ? { baseUrl } : {}) };
  await writeFileAtomic(registryPath(stateDir, input.runId), JSON.stringify(entry, null, 2));
}

export async function findRun(stateDir: string, runId: string): Promise<RegisteredRun | undefined> {
  try {
    return JSON.parse(await readFile(registryPath(stateDir, runId), 'utf8')) as RegisteredRun;
  } catch {
    return undefined;
  }
}

/** Every run the state dir records, newest first (`atelier list` with no server up). */
export async function listRuns(stateDir: string): Promise<RegisteredRun[]> {
  const names = await readdir(join(stateDir, 'runs')).catch(() => [] as string[]);
  const runs = await Promise.all(names.filter((n) => n.endsWith('.json')).map((n) => findRun(stateDir, n.slice(0, -'.json'.length))));
  return runs.filter((r): r is RegisteredRun => r !== undefined).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
}
