import { join, resolve } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { startDevServer, type DevServerHandle } from '../lib/devServer';
import { installWorkerLogging } from '../lib/logging';
import { findTemporalCli } from '../lib/temporalCli';
import { createWorkers } from '../workers';

// How a CLI command reaches Temporal: TEMPORAL_ADDRESS (and TEMPORAL_NAMESPACE) when set, else an
// embedded dev server whose state lives under --state-dir. With the embedded server, the workers run
// in this process; with an external server they run in `atelier worker` unless --with-workers.

export interface SessionOptions {
  stateDir: string;
  withWorkers: boolean;
  /** Queues for in-process workers (default: all). */
  queues?: readonly string[];
  concurrency?: number;
  log: (line: string) => void;
}

export interface Session {
  client: Client;
  namespace: string;
  uiUrl: string | undefined;
  embedded: boolean;
  /** In-process workers (empty when external workers serve the queues). */
  workers: Worker[];
  /** Resolves when the in-process workers stop, rejects if one crashes; undefined without them. */
  workersDone: Promise<void> | undefined;
  close(): Promise<void>;
}

export async function openSession(options: SessionOptions): Promise<Session> {
  const stateDir = resolve(options.stateDir);
  const external = process.env.TEMPORAL_ADDRESS;
  const namespace = process.env.TEMPORAL_NAMESPACE || 'default';
  let server: DevServerHandle | undefined;
  let address: string;
  if (external) {
    address = external;
  } else {
    server = await startDevServer({ temporalPath: findTemporalCli(), stateDir, namespace });
    address = server.address;
  }
  const runWorkers = !external || options.withWorkers;
  if (runWorkers) installWorkerLogging({ file: join(stateDir, 'logs', 'worker.log') });

  const cleanups: Array<() => Promise<void>> = [];
  try {
    const connection = await Connection.connect({ address });
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace });
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
        workerOptions: { shutdownGraceTime: '5 seconds' },
      });
      const running = Promise.all(workers.map((w) => w.run())).then(() => undefined);
      workersDone = running;
      // Shutting down before close: stop polling, let in-flight tasks finish within the grace time.
      cleanups.unshift(async () => {
        for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
        await running.catch(() => undefined);
      });
    }
    return {
      client,
      namespace,
      uiUrl: server?.uiUrl,
      embedded: server !== undefined,
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
