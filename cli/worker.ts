import { resolve } from 'node:path';
import { UsageError } from '../lib/shared/errors';
import { installWorkerLogging } from '../lib/logging';
import { connectNative, describeTarget, temporalTargetFromEnv } from '../lib/temporal/temporalConnection';
import type { Command } from 'commander';
import type { CliIO, CommandContext } from './io';
import { addExamples, addOptions, Opt, type OptionsOf } from './options';
import { WORKERS } from './optionGroups';

export const WORKER_OPTIONS = {
  queues: Opt.text('--queues <list>', 'comma-separated task queues to serve (default: all)'),
  concurrency: WORKERS.concurrency,
  logFormat: Opt.text('--log-format <format>', 'text (readable lines, the default) or json (one JSON object a line)')
    .choices(['text', 'json'])
    .default('text'),
};

export type WorkerOptions = OptionsOf<typeof WORKER_OPTIONS>;

/** `atelier worker`: long-lived workers for an external Temporal server (TEMPORAL_ADDRESS). */
export async function runWorker(options: WorkerOptions, io: CliIO): Promise<number> {
  // Readable lines by default (a person watches this terminal); JSON for a log collector.
  const format = options.logFormat;
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
  await installWorkerLogging({ format, ...(process.env.ATELIER_WORKER_LOG ? { file: resolve(process.env.ATELIER_WORKER_LOG) } : {}) });
  const connection = await connectNative(target);
  try {
    const queues = options.queues
      ?.split(',')
      .map((q) => q.trim())
      .filter(Boolean);
    // The activities (and the SDKs they use) load when this command runs, not with every command.
    const { createWorkers } = await import('../workers');
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

export function registerWorker(program: Command, { io, setExit }: CommandContext): void {
  const cmd = program.command('worker').description('run long-lived workers against TEMPORAL_ADDRESS (orchestration and provider queues)');
  addOptions(cmd, WORKER_OPTIONS).action(async (opts: WorkerOptions) => setExit(await runWorker(opts, io)));
  addExamples(cmd, [
    ['TEMPORAL_ADDRESS=127.0.0.1:7233 OPENAI_API_KEY=sk-... atelier worker', 'serve every queue whose key is set'],
    ['TEMPORAL_ADDRESS=host:7233 atelier worker --queues api-openai --concurrency 32', 'only the OpenAI queue, 32 calls at a time'],
  ]);
}
