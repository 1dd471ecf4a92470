import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnTied, type TiedProcess } from '../../testing/localCluster';

// A Docker engine of the test's own: Debian's dockerd (package docker.io, 20.10) on a private data
// root, exec root and socket, never the machine's default /var/run/docker.sock. It has no default
// bridge, no iptables rules and no masquerading (--bridge=none --iptables=false --ip-masq=false):
// containers reach only the networks the test creates, the host's address on those networks and
// each other; published ports are served by docker-proxy on loopback. Builds use the classic
// builder (there is no buildx here), whose RUN steps then see only loopback: nothing in a build or
// a container can reach the internet.
//
// The data root is persistent (~/.cache/atelier/docker/engine) so the imported stand-in base
// images and the layer cache (the worker image's `npm ci` layer) survive between runs; a lock
// folder makes a second test process wait instead of starting a second daemon on it.

const exec = (file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number, input?: string) =>
  new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
    const child = execFile(file, args, { env, maxBuffer: 64 * 1024 * 1024, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file.split('/').pop()} ${args.join(' ')} failed: ${err.message}\n${stderr.slice(-4000)}`));
      else resolve({ stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
  });

export interface DockerEngine {
  /** DOCKER_HOST and friends for `docker` and `docker-compose`. */
  env: NodeJS.ProcessEnv;
  docker(args: string[], timeoutMs?: number): Promise<{ stdout: string; stderr: string }>;
  stop(): Promise<void>;
}

/** ~/.cache/atelier/docker (or $ATELIER_CACHE_DIR/docker): rootfs tarballs and the engine's data root. */
export function dockerCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.ATELIER_CACHE_DIR || join(homedir(), '.cache', 'atelier'), 'docker');
}

async function takeLock(lock: string, waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      return;
    } catch {
      // A lock whose owner is gone (a test killed before its teardown) is taken over.
      let owner = 0;
      try {
        owner = Number(readFileSync(join(lock, 'pid'), 'utf8'));
      } catch {
        // being created right now
      }
      let alive = true;
      try {
        if (owner > 0) process.kill(owner, 0);
      } catch {
        alive = false;
      }
      if (!alive) {
        rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`the Docker engine's data root is in use by process ${owner} (${lock})`);
      await sleep(2000);
    }
  }
}

export interface DockerEngineOptions {
  /**
   * The upstream DNS server of the containers' embedded resolver (see startNoSuchNameDns). Names
   * of other containers are answered by the engine itself; anything else is forwarded, and with no
   * route out every such query waits 20 s for its timeout: the Temporal CLI's gRPC connection
   * then misses its deadline although `temporal` resolves.
   */
  dns?: string;
  log?: (line: string) => void;
}

/** Starts dockerd with its socket and exec root under `runDir` and waits until it answers. */
export async function startDockerEngine(runDir: string, options: DockerEngineOptions = {}): Promise<DockerEngine> {
  const log = options.log ?? (() => undefined);
  if (!existsSync('/usr/sbin/dockerd') && !existsSync('/usr/bin/dockerd'))
    throw new Error('dockerd is missing: apt-get install docker.io (npm test installs it)');
  const dataRoot = join(dockerCacheDir(), 'engine');
  mkdirSync(dataRoot, { recursive: true });
  const lock = `${dataRoot}.lock`;
  await takeLock(lock, 20 * 60_000);
  const socket = join(runDir, 'docker.sock');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DOCKER_HOST: `unix://${socket}`,
    // No buildx here: the classic builder, which compose uses too when BuildKit is off.
    DOCKER_BUILDKIT: '0',
    // The CLIs' own config (auth, contexts, plugins) stays in the run folder, not in ~/.docker.
    DOCKER_CONFIG: join(runDir, 'docker-config'),
    COMPOSE_PROGRESS: 'plain',
  };
  mkdirSync(env.DOCKER_CONFIG!, { recursive: true });
  const config = join(runDir, 'daemon.json');
  writeFileSync(config, '{}\n'); // not /etc/docker/daemon.json: only the flags below apply
  let daemon: TiedProcess | undefined;
  const docker = (args: string[], timeoutMs = 10 * 60_000) => exec('docker', args, env, timeoutMs);
  try {
    daemon = spawnTied(
      'dockerd',
      [
        '--config-file',
        config,
        '--data-root',
        dataRoot,
        '--exec-root',
        join(runDir, 'exec'),
        '--pidfile',
        join(runDir, 'dockerd.pid'),
        '-H',
        env.DOCKER_HOST!,
        '--bridge=none',
        '--iptables=false',
        '--ip6tables=false',
        '--ip-masq=false',
        '--userland-proxy=true',
        ...(options.dns ? ['--dns', options.dns] : []),
      ],
      { logFile: join(runDir, 'dockerd.log') },
    );
    const started = Date.now();
    for (;;) {
      try {
        await docker(['version', '--format', '{{.Server.Version}}'], 10_000);
        break;
      } catch (err) {
        if (daemon.child.exitCode !== null || Date.now() - started > 60_000)
          throw new Error(`dockerd did not start: ${String(err)}\n${readFileSync(join(runDir, 'dockerd.log'), 'utf8').slice(-3000)}`, {
            cause: err,
          });
        await sleep(250);
      }
    }
    log(`dockerd on ${socket} (data root ${dataRoot}) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (err) {
    await daemon?.stop(60_000);
    rmSync(lock, { recursive: true, force: true });
    throw err;
  }
  const tied = daemon;
  return {
    env,
    docker,
    async stop() {
      // Containers first (a test's teardown removed its own; this catches any left), then the
      // daemon, given time to unmount; the data root stays for the next run.
      try {
        const { stdout } = await docker(['ps', '-aq'], 60_000);
        const ids = stdout.split('\n').filter(Boolean);
        if (ids.length > 0) await docker(['rm', '-f', '-v', ...ids], 120_000);
        // Old builds of the compose images (the label marks a final image compose built; the GPU
        // image's are 6 GB). Other dangling images are the worker's build stage, i.e. its layer
        // cache (`npm ci`, the compiled sources): kept for a week, so that an unchanged tree does
        // not rebuild it (pruning them cost a 4-6 min rebuild per run under load).
        await docker(['image', 'prune', '-f', '--filter', 'label=com.docker.compose.project'], 120_000);
        await docker(['image', 'prune', '-f', '--filter', 'until=168h'], 120_000);
      } finally {
        await tied.stop(60_000);
        rmSync(lock, { recursive: true, force: true });
      }
    },
  };
}

/**
 * A DNS server on `address`:53 (UDP) that answers every query "no such name" at once: the
 * containers' only resolver outside the engine, so a name that is not a container fails fast, as
 * it would on a host with a working resolver. Needs root (port 53), as the engine does.
 */
export async function startNoSuchNameDns(address: string): Promise<{ close(): Promise<void> }> {
  const socket = createSocket('udp4');
  socket.on('message', (query, peer) => {
    if (query.length < 12) return;
    // Header and the question only (the query's EDNS record is not echoed).
    let end = 12;
    while (end < query.length && query[end] !== 0) end += query[end]! + 1;
    end = Math.min(end + 5, query.length);
    const answer = Buffer.from(query.subarray(0, end));
    answer[2] = 0x80 | (query[2]! & 0x79); // a response; opcode and "recursion desired" kept
    answer[3] = 0x80 | 3; // recursion available, NXDOMAIN
    answer.writeUInt16BE(Math.min(query.readUInt16BE(4), 1), 4);
    answer.fill(0, 6, 12); // no answer, authority or additional records
    socket.send(answer, peer.port, peer.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(53, address, () => resolve());
  });
  return { close: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}
