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
  /** `text`: one readable line per entry (time, level, message, key=value); `json` (default): pino's JSON lines. */
  format?: 'text' | 'json';
}

/** Metadata shown first in a text line, when present (which run, row and activity a line is about). */
const LEADING_KEYS = ['workflowId', 'workflowType', 'activityType', 'taskQueue', 'attempt'];

function metaValue(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return /[\s"=]/.test(value) ? JSON.stringify(value) : value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value instanceof Error) return JSON.stringify(value.message);
  const text = JSON.stringify(value);
  return text && text.length <= 200 ? text : undefined; // long structures belong in the JSON format
}

/**
 * One log entry as a person reads it: `12:03:04.567 WARN  message  workflowId=... attempt=2`.
 * Metadata with long structured values is left out (`--log-format json` keeps everything).
 */
export function formatLogLine(entry: Pick<LogEntry, 'level' | 'message' | 'meta' | 'timestampNanos'>): string {
  const time = new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString().slice(11, 23);
  const meta = entry.meta ?? {};
  const keys = [
    ...LEADING_KEYS.filter((k) => k in meta),
    ...Object.keys(meta)
      .filter((k) => !LEADING_KEYS.includes(k))
      .sort(),
  ];
  const pairs = keys.flatMap((k) => {
    const v = metaValue(meta[k]);
    return v === undefined ? [] : [`${k}=${v}`];
  });
  return [`${time} ${entry.level.padEnd(5)} ${entry.message.replace(/\s*\n\s*/g, ' ')}`, ...pairs].join('  ');
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
    if (options.format === 'text') return void destination.write(`${formatLogLine(entry)}\n`);
    const method = entry.level === 'TRACE' ? 'trace' : (entry.level.toLowerCase() as 'debug' | 'info' | 'warn' | 'error');
    log[method](entry.meta ?? {}, entry.message);
  });
  Runtime.install({
    logger,
    telemetryOptions: { logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} } },
  });
}
