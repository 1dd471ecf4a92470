import { execFile, spawn, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Connection, isGrpcServiceError } from '@temporalio/client';
import { ensureGoBuild, goInstall } from './goTools';
import { findTemporalCli } from '../lib/temporal/temporalCli';

// A real Temporal cluster on this machine, for the cluster test stage and the scaling benchmark:
// the Temporal server and temporal-sql-tool built from Go modules (cached under
// ~/.cache/atelier/go/temporal-server-<version>/), Debian's PostgreSQL started on loopback in a
// temporary folder, both schemas set up with the SQL tool, the server started with a config derived
// from the module's own development-postgres12.yaml (every port moved to a free one), and the
// namespace created. Unlike the dev server, persistence and visibility are PostgreSQL, the store
// production clusters use; everything listens on 127.0.0.1 only, and every process is tied to the
// caller's life (it ends when the caller's stdin pipe to it closes, even if the caller is killed).

const run = promisify(execFile);

/** v1.32.2 needs Go 1.26.10; this project's machines have 1.26.8 (GOTOOLCHAIN=local). */
export const TEMPORAL_SERVER_VERSION = 'v1.32.1';
const MODULE = 'go.temporal.io/server';

export interface TemporalServerTools {
  server: string;
  sql: string;
  /** The module's source folder: schemas and sample configs. */
  moduleDir: string;
}

/** Builds (first time, ~8 min on 2 cores) or finds the server and SQL tool binaries. */
export async function ensureTemporalServer(log?: (line: string) => void): Promise<TemporalServerTools> {
  const dir = await ensureGoBuild({
    key: `temporal-server-${TEMPORAL_SERVER_VERSION}`,
    binaries: ['server', 'sql'],
    build: (out) =>
      goInstall(out, [`${MODULE}/cmd/server@${TEMPORAL_SERVER_VERSION}`, `${MODULE}/cmd/tools/sql@${TEMPORAL_SERVER_VERSION}`]),
    ...(log ? { log } : {}),
  });
  // The schemas ship in the module; `go mod download` finds it (or fetches it if the module cache
  // was cleaned since the binaries were built).
  const { stdout } = await run('go', ['mod', 'download', '-json', `${MODULE}@${TEMPORAL_SERVER_VERSION}`], { maxBuffer: 4 * 1024 * 1024 });
  const moduleDir = (JSON.parse(stdout) as { Dir: string }).Dir;
  return { server: join(dir, 'server'), sql: join(dir, 'sql'), moduleDir };
}

/** Debian's PostgreSQL binaries (initdb, postgres): $ATELIER_PG_BIN, else the newest under /usr/lib/postgresql. */
export function postgresBinDir(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = [env.ATELIER_PG_BIN, '/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin'].filter(
    (d): d is string => Boolean(d),
  );
  const found = candidates.find((d) => existsSync(join(d, 'initdb')) && existsSync(join(d, 'postgres')));
  if (!found)
    throw new Error(`no PostgreSQL server binaries found (looked in ${candidates.join(', ')}); install postgresql or set ATELIER_PG_BIN`);
  return found;
}

export interface TiedProcess {
  child: ChildProcess;
  exited: Promise<number | null>;
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts `command` behind a small shell that sends it SIGTERM when the shell's stdin closes: when
 * this process ends for any reason, the OS closes the pipe, so nothing outlives a killed test. The
 * shell leads its own process group, so a stop that times out kills the whole group.
 */
export function spawnTied(
  command: string,
  args: string[],
  options: { logFile: string; env?: NodeJS.ProcessEnv; asUser?: string },
): TiedProcess {
  const argv = options.asUser
    ? ['setpriv', `--reuid=${options.asUser}`, `--regid=${options.asUser}`, '--init-groups', command, ...args]
    : [command, ...args];
  // Background jobs of a non-interactive shell get /dev/null as stdin (and ignore SIGINT), so the
  // watcher reads the pipe through fd 3, and the signal is TERM, which every child here handles.
  const script = 'exec 3<&0; "$@" </dev/null & child=$!; (cat <&3 >/dev/null; kill -TERM $child 2>/dev/null) & wait $child';
  const logFd = openSync(options.logFile, 'a');
  const child = spawn('sh', ['-c', script, 'sh', ...argv], {
    stdio: ['pipe', logFd, logFd],
    env: options.env ?? process.env,
    detached: true,
  });
  closeSync(logFd);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    exited,
    async stop(graceMs = 20_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin?.end(); // the watcher sends SIGTERM
        const done = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
        if (done) return;
      }
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // the group is already gone
      }
      await exited;
    },
  };
}

/**
 * A free loopback port below 32768: the server stores membership ports in a PostgreSQL smallint,
 * so the kernel's ephemeral range (32768 and up, what port 0 gives) makes it fail at start.
 */
export async function freeLowPort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const ok = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port between 20000 and 32000 on 127.0.0.1');
}

function tail(file: string, lines = 20): string {
  try {
    // Server log lines carry stack traces: keep the start of each.
    return readFileSync(file, 'utf8')
      .split('\n')
      .slice(-lines)
      .map((l) => (l.length > 400 ? `${l.slice(0, 400)}...` : l))
      .join('\n');
  } catch {
    return '';
  }
}

export interface LocalCluster {
  address: string;
  namespace: string;
  dir: string;
  serverLog: string;
  close(): Promise<void>;
}

export interface LocalClusterOptions {
  namespace?: string;
  log?: (line: string) => void;
  startTimeoutMs?: number;
}

/** Every port in the sample config, moved to a free one; throws if the sample no longer has it. */
function serverConfig(
  sample: string,
  ports: { pg: number; frontend: number },
  dynamicConfigPath: string,
  next: () => Promise<number>,
): Promise<string> {
  const replace = (text: string, pattern: RegExp, value: string) => {
    if (!pattern.test(text)) throw new Error(`development-postgres12.yaml no longer contains ${pattern}: update testing/localCluster.ts`);
    return text.replace(pattern, value);
  };
  return (async () => {
    let text = sample;
    text = replace(text, /127\.0\.0\.1:5432/g, `127.0.0.1:${ports.pg}`);
    text = replace(text, /grpcPort: 7233\b/, `grpcPort: ${ports.frontend}`);
    text = replace(text, /rpcAddress: "localhost:7233"/, `rpcAddress: "127.0.0.1:${ports.frontend}"`);
    for (const key of ['grpcPort', 'membershipPort', 'httpPort']) {
      const re = new RegExp(`${key}: (\\d+)\\b`, 'g');
      const matches = [...text.matchAll(re)].map((m) => m[1]!).filter((p) => !(key === 'grpcPort' && p === String(ports.frontend)));
      for (const port of matches) text = text.replace(new RegExp(`${key}: ${port}\\b`), `${key}: ${await next()}`);
    }
    text = replace(text, /port: 7936\b/, `port: ${await next()}`);
    text = replace(text, /listenAddress: "127\.0\.0\.1:8000"/, `listenAddress: "127.0.0.1:${await next()}"`);
    text = replace(text, /level: info/, 'level: warn');
    text = replace(text, /filepath: "config\/dynamicconfig\/development-sql\.yaml"/, `filepath: "${dynamicConfigPath}"`);
    return text;
  })();
}

/** Starts PostgreSQL, sets up the schemas, starts the server and creates the namespace. */
export async function startLocalCluster(options: LocalClusterOptions = {}): Promise<LocalCluster> {
  const log = options.log ?? (() => undefined);
  const namespace = options.namespace ?? 'default';
  const tools = await ensureTemporalServer(log);
  const pgBin = postgresBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'atelier-cluster-'));
  // PostgreSQL refuses to run as root: then its folder belongs to, and it runs as, user postgres.
  const asUser = process.getuid?.() === 0 ? 'postgres' : undefined;
  const pgData = join(dir, 'pg');
  mkdirSync(pgData);
  if (asUser) {
    const { stdout } = await run('id', ['-u', asUser]);
    const { stdout: gid } = await run('id', ['-g', asUser]);
    chmodSync(dir, 0o755);
    chownSync(pgData, Number(stdout), Number(gid));
  }
  const processes: TiedProcess[] = [];
  const close = async () => {
    for (const p of processes.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const started = Date.now();
    const pgPort = await freeLowPort();
    const initdb = [join(pgBin, 'initdb'), '-D', pgData, '-U', 'temporal', '--auth=trust', '--no-sync', '-E', 'UTF8'];
    await run(
      asUser ? 'setpriv' : initdb[0]!,
      asUser ? [`--reuid=${asUser}`, `--regid=${asUser}`, '--init-groups', ...initdb] : initdb.slice(1),
    );
    const pgLog = join(dir, 'postgres.log');
    // fsync off: a test cluster is thrown away with its folder, durability across power loss is moot.
    const pg = spawnTied(
      join(pgBin, 'postgres'),
      [
        '-D',
        pgData,
        '-p',
        String(pgPort),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        `unix_socket_directories=${pgData}`,
        '-c',
        'fsync=off',
        '-c',
        'max_connections=200',
      ],
      { logFile: pgLog, ...(asUser ? { asUser } : {}) },
    );
    processes.push(pg);
    const sql = (...args: string[]) =>
      run(tools.sql, ['--plugin', 'postgres12', '--ep', '127.0.0.1', '-p', String(pgPort), '-u', 'temporal', '--pw', 'temporal', ...args], {
        maxBuffer: 16 * 1024 * 1024,
      });
    // Ready when its log says so (the SQL tool's own errors would then be real ones).
    for (let i = 0; !/database system is ready to accept connections/.test(tail(pgLog, 50)); i++) {
      if (pg.child.exitCode !== null || i > 300) throw new Error(`PostgreSQL did not start:\n${tail(pgLog)}`);
      await sleep(100);
    }
    for (const [db, schema] of [
      ['temporal', 'temporal'],
      ['temporal_visibility', 'visibility'],
    ] as const) {
      await sql('--db', db, 'create');
      await sql('--db', db, 'setup-schema', '-v', '0.0');
      await sql('--db', db, 'update-schema', '-d', join(tools.moduleDir, 'schema', 'postgresql', 'v12', schema, 'versioned'));
    }
    log(`PostgreSQL on 127.0.0.1:${pgPort}, schemas ready (${((Date.now() - started) / 1000).toFixed(1)} s)`);

    const dynamicConfig = join(dir, 'dynamicconfig.yaml');
    writeFileSync(
      dynamicConfig,
      `${readFileSync(join(tools.moduleDir, 'config', 'dynamicconfig', 'development-sql.yaml'), 'utf8')}\n` +
        '# Atelier: one partition per task queue, so a queue rate limit (--rpm) is one limiter, as on its dev servers.\n' +
        'matching.numTaskqueueReadPartitions:\n  - value: 1\nmatching.numTaskqueueWritePartitions:\n  - value: 1\n',
    );
    const config = join(dir, 'temporal.yaml');
    let serverLog = '';
    const deadline = Date.now() + (options.startTimeoutMs ?? 120_000);
    let address = '';
    let connection: Connection | undefined;
    // The ports are free when picked, but another process (a parallel test file) can bind one before
    // the server does: the server then exits with "address already in use", and starts again on
    // newly picked ones.
    for (let start = 1; !connection; start++) {
      const frontend = await freeLowPort();
      serverLog = join(dir, start === 1 ? 'temporal-server.log' : `temporal-server-${start}.log`);
      writeFileSync(
        config,
        await serverConfig(
          readFileSync(join(tools.moduleDir, 'config', 'development-postgres12.yaml'), 'utf8'),
          { pg: pgPort, frontend },
          dynamicConfig,
          freeLowPort,
        ),
      );
      const server = spawnTied(tools.server, ['--config-file', config, '--allow-no-auth', 'start'], { logFile: serverLog });
      processes.push(server);
      address = `127.0.0.1:${frontend}`;
      while (!connection) {
        if (server.child.exitCode !== null) {
          const why = tail(serverLog);
          if (/address already in use/.test(why) && start < 4) {
            log(`the Temporal server met a port taken meanwhile; starting it again on other ports`);
            break;
          }
          throw new Error(`the Temporal server exited while starting:\n${why}`);
        }
        try {
          connection = await Connection.connect({ address, connectTimeout: 1000 });
          await connection.workflowService.getSystemInfo({});
        } catch {
          await connection?.close().catch(() => undefined);
          connection = undefined;
          if (Date.now() > deadline) throw new Error(`the Temporal server did not answer on ${address}:\n${tail(serverLog)}`);
          await sleep(250);
        }
      }
    }
    try {
      // As an operator would: the Temporal CLI (the project's pinned copy).
      await run(findTemporalCli(), [
        'operator',
        'namespace',
        'create',
        '--namespace',
        namespace,
        '--retention',
        '24h',
        '--address',
        address,
      ]);
      // The frontend learns new namespaces from its cache refresh (seconds): wait until it serves it.
      for (;;) {
        try {
          await connection.workflowService.listWorkflowExecutions({ namespace, pageSize: 1 });
          break;
        } catch (err) {
          if (!isGrpcServiceError(err) || Date.now() > deadline) throw err;
          await sleep(250);
        }
      }
    } finally {
      await connection.close();
    }
    log(
      `Temporal ${TEMPORAL_SERVER_VERSION} on ${address} (PostgreSQL), namespace ${namespace} (${((Date.now() - started) / 1000).toFixed(1)} s)`,
    );
    return { address, namespace, dir, serverLog, close };
  } catch (err) {
    await close();
    throw err;
  }
}
