import { join, resolve } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { isOrphanedEmbeddedServer, readServerRecord, serverReachable, startDevServer, stopServerByPid, type DevServerHandle, type ServerRecord } from '../lib/devServer';
import { UsageError } from '../lib/errors';
import { installWorkerLogging } from '../lib/logging';
import { ALL_SEARCH_ATTRIBUTES } from '../lib/searchAttributes';
import { findTemporalCli } from '../lib/temporalCli';
import { createWorkers } from '../workers';
import { spawnGpuWorker } from './gpuWorker';

// How a CLI command reaches Temporal: TEMPORAL_ADDRESS (and TEMPORAL_NAMESPACE) when set; else the
// dev server `atelier server` runs for this state dir; else (for commands that run rows) an
// embedded dev server whose state lives under --state-dir, stopped when the command ends.

export interface SessionOptions {
  stateDir: string;
  /** Run workers in this process (always, with an embedded server). */
  withWorkers: boolean;
  /** May start an embedded server when none is running. */
  mayStartServer: boolean;
  queues?: readonly string[];
  concurrency?: number;
  rateLimitPerSecond?: number;
  /** Python GPU worker processes to start with the in-process workers (`--backend diffusers`). */
  gpuWorker?: { args: string[]; processes: number };
  log?: (line: string) => void;
}

export interface Session {
  client: Client;
  namespace: string;
  address: string;
  uiUrl: string | undefined;
  /** True when this command started the server (it stops with the command). */
  embedded: boolean;
  /** Whether the project's search attributes are registered on the server. */
  searchAttributes: boolean;
  /** In-process workers (empty when external workers serve the queues). */
  workers: Worker[];
  /** Resolves when the in-process workers stop, rejects if one crashes; undefined without them. */
  workersDone: Promise<void> | undefined;
  close(): Promise<void>;
}

/** The server `atelier server` (or a running `edit`) keeps for this state dir, if it answers. */
export async function runningServer(stateDir: string): Promise<ServerRecord | undefined> {
  const record = readServerRecord(stateDir);
  return record && (await serverReachable(record.address)) ? record : undefined;
}

/** Checks (and, where allowed, registers) the project's search attributes on an external server. */
async function ensureSearchAttributes(client: Client, namespace: string): Promise<boolean> {
  try {
    const { customAttributes } = await client.connection.operatorService.listSearchAttributes({ namespace });
    const missing = ALL_SEARCH_ATTRIBUTES.filter((key) => !(customAttributes && key.name in customAttributes));
    if (missing.length === 0) return true;
    await client.connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((key) => [key.name, key.type === 'INT' ? 2 : 1])),
    });
    return true;
  } catch {
    return false;
  }
}

export async function openSession(options: SessionOptions): Promise<Session> {
  const stateDir = resolve(options.stateDir);
  const external = process.env.TEMPORAL_ADDRESS;
  const namespace = process.env.TEMPORAL_NAMESPACE || 'default';
  let server: DevServerHandle | undefined;
  let address: string;
  let uiUrl: string | undefined;
  if (external) {
    address = external;
  } else {
    let running = await runningServer(stateDir);
    if (running && options.mayStartServer && isOrphanedEmbeddedServer(running)) {
      // Left behind by an `edit` that was killed: no workers serve it. Started afresh on the same
      // database, the run's history is all there and the rows resume.
      options.log?.(`stopping the embedded Temporal server an earlier command left running (pid ${running.pid}); starting it afresh`);
      await stopServerByPid(stateDir, running.pid);
      running = undefined;
    }
    if (running) {
      address = running.address;
      uiUrl = running.uiUrl;
    } else if (options.mayStartServer) {
      server = await startDevServer({ temporalPath: findTemporalCli(), stateDir, namespace });
      address = server.address;
      uiUrl = server.uiUrl;
    } else {
      throw new UsageError(
        `no Temporal server is running for state dir ${stateDir}: set TEMPORAL_ADDRESS, or start one with \`npx atelier server --state-dir ${options.stateDir}\``,
      );
    }
  }
  const runWorkers = server !== undefined || options.withWorkers;
  if (runWorkers) installWorkerLogging({ file: join(stateDir, 'logs', 'worker.log') });

  const cleanups: Array<() => Promise<void>> = [];
  try {
    const connection = await Connection.connect({ address });
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace });
    // Project-started dev servers register them at start; other servers are checked.
    const searchAttributes = external ? await ensureSearchAttributes(client, namespace) : true;
    let workers: Worker[] = [];
    let workersDone: Promise<void> | undefined;
    if (runWorkers) {
      const nativeConnection = await NativeConnection.connect({ address });
      cleanups.unshift(() => nativeConnection.close());
      workers = await createWorkers({
        connection: nativeConnection,
        namespace,
        env: process.env,
        ...(options.queues ? { queues: options.queues } : {}),
        ...(options.concurrency ? { concurrency: options.concurrency } : {}),
        ...(options.rateLimitPerSecond ? { rateLimitPerSecond: options.rateLimitPerSecond } : {}),
        workerOptions: { shutdownGraceTime: '5 seconds' },
      });
      const running = Promise.all(workers.map((w) => w.run())).then(() => undefined);
      workersDone = running;
      if (options.gpuWorker) {
        const gpu = spawnGpuWorker(
          ['--address', address, '--namespace', namespace, ...options.gpuWorker.args],
          process.env,
          options.log ?? (() => undefined),
          options.gpuWorker.processes,
        );
        cleanups.unshift(() => gpu.stop());
        options.log?.('starting the GPU worker (loading and warming up the model)...');
        await gpu.ready;
        workersDone = Promise.race([running, gpu.exited.then(() => undefined)]);
      }
      // Shutting down before close: stop polling, let in-flight tasks finish within the grace time.
      cleanups.unshift(async () => {
        for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
        await running.catch(() => undefined);
      });
    }
    return {
      client,
      namespace,
      address,
      uiUrl,
      embedded: server !== undefined,
      searchAttributes,
      workers,
      workersDone,
      async close() {
        for (const cleanup of cleanups) await cleanup().catch(() => undefined);
        await server?.stop();
      },
    };
  } catch (err) {
    for (const cleanup of cleanups) await cleanup().catch(() => undefined);
    await server?.stop();
    throw err;
  }
}

export function workflowUiUrl(session: Session, workflowId: string): string | undefined {
  if (!session.uiUrl) return undefined;
  return `${session.uiUrl}/namespaces/${encodeURIComponent(session.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}

/**
 * Sets a provider queue's rate limit on the server (UpdateTaskQueueConfig), so every worker of the
 * queue, on any machine, shares one limit. Returns false where the server does not support it (the
 * in-process workers then enforce the limit with maxTaskQueueActivitiesPerSecond).
 */
export async function setQueueRateLimit(session: Session, taskQueue: string, requestsPerSecond: number): Promise<boolean> {
  try {
    await session.client.workflowService.updateTaskQueueConfig({
      namespace: session.namespace,
      identity: 'atelier-cli',
      taskQueue,
      taskQueueType: 2, // TASK_QUEUE_TYPE_ACTIVITY
      updateQueueRateLimit: { rateLimit: { requestsPerSecond }, reason: `atelier --rpm ${Math.round(requestsPerSecond * 60)}` },
    });
    return true;
  } catch {
    return false;
  }
}
