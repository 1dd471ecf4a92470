import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { VERSITYGW_VERSION, versitygwPath } from '../../testing/goTools';
import { ensureTemporalServer, TEMPORAL_SERVER_VERSION } from '../../testing/localCluster';
import { findTemporalCli, repoRoot } from '../../lib/temporal/temporalCli';
import type { DockerEngine } from './dockerEngine';
import { tempDir } from './fixtures';

// The images docker-compose.yml and deploy/*.Dockerfile start from, built locally because no
// image registry is reachable here (users pull the real ones). Each is a Dockerfile under
// test/deploy/standins/ on a root filesystem made of Debian packages (scripts/standin-rootfs.sh,
// mmdebstrap, cached by its key), with the binaries the other tests build from Go modules, tagged
// with the name and tag the compose file asks for:
//   node:20-bookworm-slim             this machine's Node 20 + npm, and an offline npm cache
//   postgres:15                       Debian's PostgreSQL 15 (compose: POSTGRES_VERSION=15)
//   temporalio/server:<v>             temporal-server from go.temporal.io/server <v>
//   temporalio/admin-tools:<v>        temporal-sql-tool <v>, the module's schemas, the Temporal CLI
//   versity/versitygw:<v>             versitygw <v>
//   python:3.11-slim-bookworm         Debian's Python 3.11 and pip (scripts/standin-python-rootfs.sh)
// An image is rebuilt only when its key (Dockerfile, rootfs and inputs) changes; the key is a label.

const STANDINS = join(repoRoot(), 'test', 'deploy', 'standins');
const LABEL = 'atelier.standin.key';

/** The Temporal version the stand-ins carry, as an image tag (compose: TEMPORAL_VERSION and TEMPORAL_ADMINTOOLS_VERSION). */
export const STANDIN_TEMPORAL_TAG = TEMPORAL_SERVER_VERSION.replace(/^v/, '');
export const STANDIN_POSTGRES_TAG = '15';

/** The rootfs folder scripts/standin-rootfs.sh made; building it downloads packages, so the test does not. */
function rootfsDir(): string {
  const script = join(repoRoot(), 'scripts', 'standin-rootfs.sh');
  const dir = execFileSync('bash', [script, '--print'], { encoding: 'utf8' }).trim();
  if (!existsSync(join(dir, 'node.tar')) || !existsSync(join(dir, 'tools.tar')))
    throw new Error(`${dir} is missing: run scripts/standin-rootfs.sh (npm test does)`);
  return dir;
}

/** The rootfs folder scripts/standin-python-rootfs.sh made (the GPU image's base). */
function pythonRootfsDir(): string {
  const script = join(repoRoot(), 'scripts', 'standin-python-rootfs.sh');
  const dir = execFileSync('bash', [script, '--print'], { encoding: 'utf8' }).trim();
  if (!existsSync(join(dir, 'python.tar'))) throw new Error(`${dir} is missing: run scripts/standin-python-rootfs.sh (npm test does)`);
  return dir;
}

/** Identity of a file or folder for the key: path, size and mtime (hashing 150 MB binaries each run is slow). */
function fingerprint(path: string): string {
  const s = statSync(path);
  if (!s.isDirectory()) return `${path}:${s.size}:${s.mtimeMs}`;
  return readdirSync(path)
    .sort()
    .map((n) => fingerprint(join(path, n)))
    .join('\n');
}

/** A build context of hard links (copies across filesystems) to `files`, named by their keys. */
function context(files: Record<string, string>): string {
  const dir = tempDir('atelier-standin-ctx-');
  for (const [name, source] of Object.entries(files)) {
    const target = join(dir, name);
    if (statSync(source).isDirectory()) cpSync(source, target, { recursive: true });
    else
      try {
        linkSync(source, target);
      } catch {
        cpSync(source, target);
      }
  }
  return dir;
}

async function labelOf(engine: DockerEngine, image: string): Promise<string | undefined> {
  try {
    const { stdout } = await engine.docker(['image', 'inspect', '-f', `{{index .Config.Labels "${LABEL}"}}`, image], 30_000);
    return stdout.trim();
  } catch {
    return undefined;
  }
}

async function importRootfs(engine: DockerEngine, tar: string, image: string, log: (l: string) => void): Promise<void> {
  // Imports under an older key (a changed rootfs script) are never used again.
  const [repository] = image.split(':');
  const { stdout: tags } = await engine.docker(['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', repository!], 30_000);
  for (const stale of tags.split('\n').filter((t) => t && t !== image))
    await engine.docker(['rmi', stale], 120_000).catch((err: unknown) => log(`kept ${stale}: ${String(err)}`));
  const { stdout } = await engine.docker(['image', 'ls', '-q', image], 30_000);
  if (stdout.trim()) return;
  const started = Date.now();
  await engine.docker(['import', tar, image], 10 * 60_000);
  log(`imported ${basename(tar)} as ${image} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

interface Standin {
  tag: string;
  dockerfile: string;
  rootfs: string;
  /** The build context: a folder, or files to gather into one. */
  context: string | (() => Record<string, string>);
  /** What else the image depends on (input files' fingerprints). */
  inputs: () => string;
}

/** Builds (or finds up to date) every stand-in image in `engine`. */
export async function ensureStandinImages(engine: DockerEngine, log: (line: string) => void = () => undefined): Promise<void> {
  const rootfs = rootfsDir();
  const key = basename(rootfs).replace(/^rootfs-/, '');
  const nodeRootfs = `atelier-standin/node-rootfs:${key}`;
  const toolsRootfs = `atelier-standin/tools-rootfs:${key}`;
  await importRootfs(engine, join(rootfs, 'node.tar'), nodeRootfs, log);
  await importRootfs(engine, join(rootfs, 'tools.tar'), toolsRootfs, log);
  const pythonDir = pythonRootfsDir();
  const pythonRootfs = `atelier-standin/python-rootfs:${basename(pythonDir).replace(/^rootfs-python-/, '')}`;
  await importRootfs(engine, join(pythonDir, 'python.tar'), pythonRootfs, log);

  const temporal = await ensureTemporalServer(log);
  const npmCache = join(homedir(), '.npm');
  const standins: Standin[] = [
    {
      tag: 'node:20-bookworm-slim',
      dockerfile: 'node.Dockerfile',
      rootfs: nodeRootfs,
      context: npmCache,
      // The host's npm cache holds what `npm ci` fetched for this lockfile.
      inputs: () => readFileSync(join(repoRoot(), 'package-lock.json'), 'utf8'),
    },
    {
      tag: `postgres:${STANDIN_POSTGRES_TAG}`,
      dockerfile: 'postgres.Dockerfile',
      rootfs: toolsRootfs,
      context: STANDINS,
      inputs: () => readFileSync(join(STANDINS, 'postgres-entrypoint.sh'), 'utf8'),
    },
    {
      tag: `temporalio/server:${STANDIN_TEMPORAL_TAG}`,
      dockerfile: 'temporal-server.Dockerfile',
      rootfs: toolsRootfs,
      context: () => ({
        'temporal-server': temporal.server,
        'entrypoint.sh': join(temporal.moduleDir, 'docker', 'scripts', 'sh', 'entrypoint.sh'),
      }),
      inputs: () => fingerprint(temporal.server),
    },
    {
      tag: `temporalio/admin-tools:${STANDIN_TEMPORAL_TAG}`,
      dockerfile: 'temporal-admin-tools.Dockerfile',
      rootfs: toolsRootfs,
      context: () => ({
        temporal: findTemporalCli(),
        'temporal-sql-tool': temporal.sql,
        schema: join(temporal.moduleDir, 'schema'),
      }),
      inputs: () => `${fingerprint(temporal.sql)}\n${fingerprint(findTemporalCli())}`,
    },
    {
      tag: `versity/versitygw:${VERSITYGW_VERSION}`,
      dockerfile: 'versitygw.Dockerfile',
      rootfs: toolsRootfs,
      context: () => ({ versitygw: versitygwPath() }),
      inputs: () => fingerprint(versitygwPath()),
    },
    {
      tag: 'python:3.11-slim-bookworm',
      dockerfile: 'python.Dockerfile',
      rootfs: pythonRootfs,
      context: () => ({}),
      inputs: () => '',
    },
  ];
  for (const s of standins) {
    if (!existsSync(join(STANDINS, s.dockerfile))) throw new Error(`missing ${s.dockerfile}`);
    const hash = createHash('sha256')
      .update(readFileSync(join(STANDINS, s.dockerfile)))
      .update(s.rootfs)
      .update(s.inputs())
      .digest('hex')
      .slice(0, 16);
    if ((await labelOf(engine, s.tag)) === hash) continue;
    const started = Date.now();
    const dir = typeof s.context === 'string' ? s.context : context(s.context());
    mkdirSync(dir, { recursive: true });
    await engine.docker(
      [
        'build',
        '-q',
        '--label',
        `${LABEL}=${hash}`,
        '--build-arg',
        `ROOTFS=${s.rootfs}`,
        '-f',
        join(STANDINS, s.dockerfile),
        '-t',
        s.tag,
        dir,
      ],
      10 * 60_000,
    );
    log(`built stand-in ${s.tag} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }
}
