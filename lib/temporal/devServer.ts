import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { msToTs, optionalTsToMs } from '@temporalio/common/lib/time';
import { writeFileAtomic } from '../../storage/atomicFile';
import { UsageError } from '../shared/errors';
import { devServerSearchAttributeFlags } from '../shared/searchAttributes';
import { tracePhase } from '../phaseTrace';
import { portInUse } from './portOwner';

// The embedded Temporal dev server: `temporal server start-dev` with its SQLite database and log
// under the state dir, so a run's history survives the process and a later `edit` picks it up.

export interface DevServerHandle {
  address: string;
  uiUrl: string | undefined;
  /** Resolves with the exit code when the server process ends. */
  exited: Promise<number>;
  stop(): Promise<void>;
  /**
   * Asks the server to stop and returns at once: its shutdown (about a second of closing task
   * queues) no longer delays the command's exit. The state dir remembers the stopping server, and
   * the next server started on it waits for that one to be gone first (one database, one server).
   */
  release(): Promise<void>;
}

export interface DevServerOptions {
  temporalPath: string;
  stateDir: string;
  port?: number;
  uiPort?: number;
  headless?: boolean;
  namespace?: string;
  startTimeoutMs?: number;
  /** How long finished runs stay visible (the dev server's default is one day). */
  retentionHours?: number;
  /**
   * Who started it: `server` (`atelier server`, in the foreground for others to use) or `edit` (a
   * command's embedded server, which lives and dies with that command).
   */
  owner?: ServerOwner;
  /** Called once the server process is spawned: work that can overlap its start (which takes ~0.5 s). */
  whileStarting?: () => void;
}

export type ServerOwner = 'server' | 'edit';

const DEFAULT_RETENTION_HOURS = 30 * 24;

/** What server.json in a state dir says about the dev server serving it. */
export interface ServerRecord {
  pid: number;
  address: string;
  uiUrl?: string;
  /** Absent in records written before owners were recorded: taken as `server`. */
  owner?: ServerOwner;
  /** The process that started the server (the `edit` command, for an embedded one). */
  ownerPid?: number;
  /**
   * This state dir's own secret: the server was started with the namespace `atelier-own-<token>`,
   * which a server that merely answers on the same port does not have (see isOwnServer).
   * Absent in records written before it was: those are proven by pid instead.
   */
  token?: string;
}

/** The namespace that proves a server is the one a state dir started (never used for runs). */
export function ownNamespace(token: string): string {
  return `atelier-own-${token}`;
}

/** Whether the server at `address` has the namespace `namespace` (false when it does not answer). */
async function hasNamespace(address: string, namespace: string, timeoutMs = 2000): Promise<boolean> {
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ address, connectTimeout: timeoutMs });
    return await namespaceExists(connection, namespace, timeoutMs);
  } catch {
    return false;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}

async function namespaceExists(connection: Connection, namespace: string, timeoutMs: number): Promise<boolean> {
  try {
    await connection.withDeadline(Date.now() + timeoutMs, () => connection.workflowService.describeNamespace({ namespace }));
    return true;
  } catch {
    return false;
  }
}

/** Sets a namespace's retention (UpdateNamespace), unless it already has it. */
async function setRetention(connection: Connection, namespace: string, hours: number, timeoutMs = 10_000): Promise<void> {
  const ms = hours * 3600_000;
  const deadline = Date.now() + timeoutMs;
  const described = await connection.withDeadline(deadline, () => connection.workflowService.describeNamespace({ namespace }));
  if (optionalTsToMs(described.config?.workflowExecutionRetentionTtl) === ms) return;
  await connection.withDeadline(deadline, () =>
    connection.workflowService.updateNamespace({ namespace, config: { workflowExecutionRetentionTtl: msToTs(ms) } }),
  );
}

/**
 * Whether the server a record names is proven to be this state dir's own: it has the record's
 * namespace token, or (records from before tokens) its pid is alive and is the dev server of this
 * state dir's database. A server that only answers on the recorded port is someone else's.
 */
export async function isOwnServer(stateDir: string, record: ServerRecord): Promise<boolean> {
  if (record.token) return hasNamespace(record.address, ownNamespace(record.token));
  return isServerOf(record.pid, stateDir) && (await serverReachable(record.address));
}

export function readServerRecord(stateDir: string): ServerRecord | undefined {
  try {
    return JSON.parse(readFileSync(recordPath(stateDir), 'utf8')) as ServerRecord;
  } catch {
    return undefined;
  }
}

export function processAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * An embedded server whose command is gone (killed with SIGKILL, or interrupted before it could stop
 * it): it serves the state dir's history but no workers, so nothing would ever run on it.
 */
export function isOrphanedEmbeddedServer(record: ServerRecord): boolean {
  return record.owner === 'edit' && !processAlive(record.ownerPid);
}

/** Stops a dev server by pid (SIGTERM, then SIGKILL after the grace time) and forgets its record. */
export async function stopServerByPid(stateDir: string, pid: number, graceMs = 10_000): Promise<void> {
  const deadline = Date.now() + graceMs;
  if (processAlive(pid)) process.kill(pid, 'SIGTERM');
  while (processAlive(pid) && Date.now() < deadline) await sleep(100);
  if (processAlive(pid)) process.kill(pid, 'SIGKILL');
  while (processAlive(pid)) await sleep(50);
  await rm(recordPath(stateDir), { force: true });
}

/**
 * A loopback port nothing listens on, for a server this process starts next. Between this answer
 * and that server's bind, any other process's bind(0) may be handed the same port (the kernel
 * deals released ports out again at random), and the server then dies on "address already in
 * use", at start or, for the dev server's UI, after the frontend already answers. So the port is
 * left in TIME_WAIT, as Temporal's own freeport does: a connection to it is closed from the
 * listening side first, and for the TIME_WAIT period (60 s on Linux) bind(0) does not hand the
 * port out while an explicit bind with SO_REUSEADDR (Node's and Go's listeners) still takes it.
 */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.once('connection', (accepted) => {
      accepted.on('error', () => undefined);
      // The listening side's end closes first, so the TIME_WAIT entry holds this port.
      accepted.end();
    });
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      const client = connect({ host: '127.0.0.1', port });
      client.on('error', reject);
      client.on('end', () => client.end());
      client.on('close', () => server.close(() => resolve(port)));
    });
  });
}

export async function serverReachable(address: string, timeoutMs = 2000): Promise<boolean> {
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ address, connectTimeout: timeoutMs });
    await connection.workflowService.getSystemInfo({});
    return true;
  } catch {
    return false;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}

/** Whether something accepts TCP connections on the loopback port (refused at once otherwise). */
function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** A server that was asked to stop and may still be shutting down (see DevServerHandle.release). */
function stoppingPath(stateDir: string): string {
  return join(stateDir, 'server-stopping.json');
}

/**
 * Whether `pid` is still the dev server of this state dir: a pid can be reused once its process is
 * gone, and an unrelated process must be neither waited for nor killed. Where /proc cannot tell,
 * a live pid is taken to be the server.
 */
function isServerOf(pid: number, stateDir: string): boolean {
  if (!processAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(join(stateDir, 'temporal.db'));
  } catch {
    return process.platform !== 'linux';
  }
}

/** Waits for a server released by an earlier command to finish stopping (SIGKILL after the grace time). */
export async function waitForStoppingServer(stateDir: string, graceMs = 10_000): Promise<void> {
  let pid: number | undefined;
  try {
    pid = (JSON.parse(readFileSync(stoppingPath(stateDir), 'utf8')) as { pid?: number }).pid;
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (pid && isServerOf(pid, stateDir) && Date.now() < deadline) await sleep(25);
  if (pid && isServerOf(pid, stateDir)) {
    process.kill(pid, 'SIGKILL');
    while (processAlive(pid)) await sleep(25);
  }
  await rm(stoppingPath(stateDir), { force: true });
}

function recordPath(stateDir: string): string {
  return join(stateDir, 'server.json');
}

function logTail(logFile: string): string {
  try {
    return readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}

async function stopProcess(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Starts the dev server for a state dir, or reuses the one already serving it. */
export async function startDevServer(options: DevServerOptions): Promise<DevServerHandle> {
  mkdirSync(options.stateDir, { recursive: true });
  await waitForStoppingServer(options.stateDir);
  // A port someone else holds is refused, naming the holder: a server already answering there would
  // otherwise pass for the one this command started.
  for (const [given, what] of [
    [options.port, 'port'],
    [options.headless ? undefined : options.uiPort, 'UI port'],
  ] as const) {
    const taken = given ? await portInUse(given, what) : undefined;
    if (taken) throw new UsageError(taken);
  }
  const port = options.port ?? (await freePort());
  const uiPort = options.uiPort ?? (await freePort());
  const token = randomBytes(8).toString('hex');
  const address = `127.0.0.1:${port}`;
  const logFile = join(options.stateDir, 'temporal-server.log');
  const args = [
    'server',
    'start-dev',
    '--db-filename',
    join(options.stateDir, 'temporal.db'),
    '--ip',
    '127.0.0.1',
    '--port',
    String(port),
    '--namespace',
    options.namespace ?? 'default',
    '--namespace',
    ownNamespace(token),
    '--log-level',
    'warn',
    // WAL with synchronous=NORMAL: no fsync per transaction, yet a crash of the server (or of this
    // machine's processes) loses nothing committed; only a power loss can drop the last moments.
    '--sqlite-pragma',
    'journal_mode=WAL',
    '--sqlite-pragma',
    'synchronous=NORMAL',
    // One partition per task queue: a queue's rate limit (--rpm) is then enforced by one limiter
    // instead of being split across four, each with its own burst.
    '--dynamic-config-value',
    'matching.numTaskqueueReadPartitions=1',
    '--dynamic-config-value',
    'matching.numTaskqueueWritePartitions=1',
    // Activities on the workflow's own queue (planning, pages, results) go straight back to the
    // worker that schedules them, in the workflow task's reply, instead of through matching.
    '--dynamic-config-value',
    'system.enableActivityEagerExecution=true',
    ...devServerSearchAttributeFlags(),
  ];
  if (options.headless) args.push('--headless');
  else args.push('--ui-ip', '127.0.0.1', '--ui-port', String(uiPort));

  const logFd = openSync(logFile, 'a');
  // Its own process group: Ctrl-C in a terminal signals the whole foreground group, and the server
  // must outlive that signal until the workers have drained and the rows in flight have reported
  // (else they wait out their heartbeat timeout on the next run). The command stops it afterwards.
  const child = spawn(options.temporalPath, args, { stdio: ['ignore', logFd, logFd], detached: true });
  closeSync(logFd);
  options.whileStarting?.();
  // However this process ends (a second Ctrl-C exits at once), its server ends with it; only a
  // SIGKILL can leave it behind, and the next command for the state dir recognises that orphan.
  const stopOnExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  process.once('exit', stopOnExit);
  void child.once('exit', () => process.removeListener('exit', stopOnExit));
  let exitCode: number | null = null;
  const exited = new Promise<number>((resolve) =>
    child.once('exit', (code, signal) => {
      exitCode = code ?? (signal ? 128 : 0);
      resolve(exitCode);
    }),
  );

  const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
  for (;;) {
    if (exitCode !== null) {
      throw new UsageError(
        `the Temporal dev server exited (code ${exitCode}) while starting; its log (${logFile}) ends with:\n${logTail(logFile)}`,
      );
    }
    // A cheap TCP probe first: a gRPC connect to a port not yet open waits out its whole timeout,
    // which once cost every start about a second.
    if ((await portOpen(port)) && (await serverReachable(address, 1000))) break;
    if (Date.now() > deadline) {
      await stopProcess(child);
      throw new UsageError(`the Temporal dev server did not answer on ${address} in time; see ${logFile}`);
    }
    await sleep(25);
  }

  tracePhase('server answers');
  // One connection for both steps below (each connect is a round trip of the start-up).
  const connection = await Connection.connect({ address, connectTimeout: 5000 }).catch(() => undefined);
  try {
    // What answers must be the process just started (a port can be taken between the check above and
    // its bind): only it has this start's namespace.
    if (!connection || !(await namespaceExists(connection, ownNamespace(token), 5000))) {
      await stopProcess(child);
      throw new UsageError(
        `another server answers on ${address}, not the one just started${logTail(logFile) ? `; its log (${logFile}) ends with:\n${logTail(logFile)}` : ''}`,
      );
    }
    // Keep finished runs visible in the UI for weeks, not the dev server's default day. Through the
    // gRPC API (what `temporal operator namespace update --retention` sends), not a second CLI
    // process: that spawn cost 0.3-0.7 s of every start.
    try {
      await setRetention(connection, options.namespace ?? 'default', options.retentionHours ?? DEFAULT_RETENTION_HOURS);
    } catch (err) {
      await stopProcess(child);
      throw new UsageError(`could not set the namespace retention on the dev server: ${(err as Error).message}`);
    }
  } finally {
    await connection?.close().catch(() => undefined);
  }

  const uiUrl = options.headless ? undefined : `http://127.0.0.1:${uiPort}`;
  const record: ServerRecord = {
    pid: child.pid!,
    address,
    ...(uiUrl ? { uiUrl } : {}),
    owner: options.owner ?? 'edit',
    ownerPid: process.pid,
    token,
  };
  await writeFileAtomic(recordPath(options.stateDir), JSON.stringify(record, null, 2));
  return {
    address,
    uiUrl,
    exited,
    async stop() {
      await stopProcess(child);
      await rm(recordPath(options.stateDir), { force: true });
    },
    async release() {
      if (child.exitCode !== null || child.signalCode !== null) return void (await rm(recordPath(options.stateDir), { force: true }));
      await writeFileAtomic(stoppingPath(options.stateDir), JSON.stringify({ pid: child.pid }));
      await rm(recordPath(options.stateDir), { force: true });
      child.kill('SIGTERM');
      // Its own process group, no pipes: it finishes shutting down after this process has exited.
      child.unref();
    },
  };
}
