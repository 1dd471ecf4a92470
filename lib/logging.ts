import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { LogEntry } from '@temporalio/worker';
import pino from 'pino';

// Worker and SDK logs go to a file under the state dir (or stderr for long-running workers), so the
// CLI's own output stays readable. Messages are ours or the SDK's; provider errors reach them only
// after redaction (lib/redact.ts).

let installed = false;

export interface LoggingOptions {
  /** Log file; stderr when absent. */
  file?: string;
  level?: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
}

/**
 * Routes the Temporal runtime's logs (TS and native core) to pino. Once per process. Async: it loads
 * @temporalio/worker, which the CLI's commands do not load at start-up.
 */
export async function installWorkerLogging(options: LoggingOptions): Promise<void> {
  if (installed) return;
  installed = true;
  const { DefaultLogger, Runtime } = await import('@temporalio/worker');
  if (options.file) mkdirSync(dirname(options.file), { recursive: true });
  const destination = options.file ? pino.destination({ dest: options.file, sync: false, mkdir: true }) : pino.destination(2);
  const level = options.level ?? 'INFO';
  const log = pino({ level: level.toLowerCase(), base: { pid: process.pid } }, destination);
  const logger = new DefaultLogger(level, (entry: LogEntry) => {
    const method = entry.level === 'TRACE' ? 'trace' : (entry.level.toLowerCase() as 'debug' | 'info' | 'warn' | 'error');
    log[method](entry.meta ?? {}, entry.message);
  });
  Runtime.install({
    logger,
    telemetryOptions: { logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} } },
  });
}
