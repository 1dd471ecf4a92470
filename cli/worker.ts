import { resolve } from 'node:path';
import { UsageError } from '../lib/shared/errors';
import { installWorkerLogging } from '../lib/logging';
import { connectNative, describeTarget, temporalTargetFromEnv } from '../lib/temporal/temporalConnection';
import { createWorkers } from '../workers';
import type { CliIO } from './io';

/** `atelier worker`: long-lived workers for an external Temporal server (TEMPORAL_ADDRESS). */
export async function runWorker(options: { queues?: string; concurrency: number; logFormat?: string }, io: CliIO): Promise<number> {
  // Readable lines by default (a person watches this terminal); JSON for a log collector.
  const format = options.logFormat ?? 'text';
  if (format !== 'text' && format !== 'json') throw new UsageError(`--log-format ${format}: choose text or json`);
  const address = process.env.TEMPORAL_ADDRESS;
  if (!address) {
    throw new UsageError(
      'TEMPORAL_ADDRESS is not set: `atelier worker` serves an external Temporal server (e.g. TEMPORAL_ADDRESS=127.0.0.1:7233)',
    );
  }
  // TLS, client certificates and the API key come from the same environment settings as the CLI's.
  const target = temporalTargetFromEnv(process.env, address);
  const namespace = target.namespace;
  installWorkerLogging({ format, ...(process.env.ATELIER_WORKER_LOG ? { file: resolve(process.env.ATELIER_WORKER_LOG) } : {}) });
  const connection = await connectNative(target);
  try {
    const queues = options.queues
      ?.split(',')
      .map((q) => q.trim())
      .filter(Boolean);
    const workers = await createWorkers({
      connection,
      namespace,
      env: process.env,
      concurrency: options.concurrency,
      ...(queues ? { queues } : {}),
    });
    const served = workers.map((w) => w.options.taskQueue);
    // Endpoint queues (api-<backend>@<tag>) serve the runs started with this worker's base URL as --base-url.
    const endpointQueues = served.filter((q) => q.includes('@'));
    io.err(
      `serving ${served.filter((q) => !q.includes('@')).join(', ')} on ${describeTarget(target)}${endpointQueues.length ? `; for runs with --base-url set to this worker's base URL: ${endpointQueues.join(', ')}` : ''}; Ctrl-C to stop`,
    );
    // Ctrl-C asks the workers to stop; `run()` below returns once they have.
    void io.interrupted.then(() => {
      io.err('shutting down: in-flight tasks get a grace period, then are retried elsewhere');
      for (const w of workers) w.shutdown();
    });
    await Promise.all(workers.map((w) => w.run()));
    return 0;
  } finally {
    await connection.close();
  }
}
