import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { repoRoot } from '../lib/temporal/temporalCli';

// Go programs the test suite and the cluster benchmark build from modules (the Temporal server and
// its SQL tool, the compose validator): built once into ~/.cache/atelier/go/<name>-<version>/,
// never inside the repository, and reused by every clone on the machine. A build goes to a
// temporary folder that is renamed into place only when complete, so a killed build never leaves
// a half-written binary behind, and a second process waits for the first instead of building twice.

const run = promisify(execFile);

/** ~/.cache/atelier/go (or $ATELIER_CACHE_DIR/go), where built Go tools live. */
export function goToolsDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.ATELIER_CACHE_DIR || join(homedir(), '.cache', 'atelier'), 'go');
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export interface GoBuild {
  /** Cache folder name, e.g. `temporal-server-v1.32.1`: the version is part of the key. */
  key: string;
  /** Binary names the build leaves in the folder. */
  binaries: readonly string[];
  /** Builds into `outDir` (already created, empty). */
  build(outDir: string): Promise<void>;
  log?: (line: string) => void;
  /** How long to wait for another process's build of the same key (default 30 min). */
  waitMs?: number;
}

/** Returns the cache folder holding `binaries`, building them first if they are missing. */
export async function ensureGoBuild(spec: GoBuild): Promise<string> {
  const dir = join(goToolsDir(), spec.key);
  const complete = () => spec.binaries.every((b) => executable(join(dir, b)));
  if (complete()) return dir;
  mkdirSync(goToolsDir(), { recursive: true });
  const lock = `${dir}.lock`;
  const deadline = Date.now() + (spec.waitMs ?? 30 * 60_000);
  for (;;) {
    try {
      mkdirSync(lock); // atomic: exactly one process builds a key at a time
      break;
    } catch {
      if (complete()) return dir;
      if (Date.now() > deadline)
        throw new Error(`waited too long for another build of ${spec.key} (remove ${lock} if no build is running)`);
      await sleep(2000);
    }
  }
  try {
    if (complete()) return dir;
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    const started = Date.now();
    spec.log?.(`building ${spec.key} into ${dir} (first time only)...`);
    try {
      await spec.build(tmp);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
    const missing = spec.binaries.filter((b) => !executable(join(tmp, b)));
    if (missing.length > 0) throw new Error(`building ${spec.key} did not produce ${missing.join(', ')}`);
    // An empty or partial folder left by an interrupted build of another tool is replaced.
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    spec.log?.(`built ${spec.key} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return dir;
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** `go install pkg@version ...` with GOBIN pointed at `outDir` (stripped binaries). */
export async function goInstall(outDir: string, packages: readonly string[]): Promise<void> {
  await run('go', ['install', '-ldflags=-s -w', ...packages], {
    env: { ...process.env, GOBIN: outDir, GOFLAGS: [process.env.GOFLAGS, '-buildvcs=false'].filter(Boolean).join(' ') },
    maxBuffer: 64 * 1024 * 1024,
  });
}

/** `go build` of a module in the repository (go.mod/go.sum committed) into `outDir/name`. */
export async function goBuildModule(moduleDir: string, outDir: string, name: string): Promise<void> {
  await run('go', ['build', '-mod=readonly', '-trimpath', '-ldflags=-s -w', '-o', join(outDir, name), '.'], {
    cwd: moduleDir,
    env: { ...process.env, GOFLAGS: [process.env.GOFLAGS, '-buildvcs=false'].filter(Boolean).join(' ') },
    maxBuffer: 64 * 1024 * 1024,
  });
}

/** The module cache folder of a module version (schemas and sample configs ship inside it). */
export async function goModuleDir(modulePath: string, version: string): Promise<string> {
  const { stdout } = await run('go', ['env', 'GOMODCACHE']);
  return join(stdout.trim(), `${modulePath}@${version}`);
}

/**
 * deploy/compose-check (compose-go, the loader `docker compose` uses), built into
 * compose-check-<compose-go version>-<source hash>/: a change to the program or its go.sum builds
 * a new one, an unchanged one is reused by every clone. Returns the binary's path.
 */
export async function ensureComposeCheck(log?: (line: string) => void): Promise<string> {
  const moduleDir = join(repoRoot(), 'deploy', 'compose-check');
  const goMod = readFileSync(join(moduleDir, 'go.mod'), 'utf8');
  const version = /github\.com\/compose-spec\/compose-go\/v2 (v\S+)/.exec(goMod)?.[1];
  if (!version) throw new Error('deploy/compose-check/go.mod does not require compose-go/v2');
  const hash = createHash('sha256');
  for (const f of ['go.mod', 'go.sum', 'main.go']) hash.update(readFileSync(join(moduleDir, f)));
  const dir = await ensureGoBuild({
    key: `compose-check-${version}-${hash.digest('hex').slice(0, 12)}`,
    binaries: ['compose-check'],
    build: (out) => goBuildModule(moduleDir, out, 'compose-check'),
    ...(log ? { log } : {}),
  });
  return join(dir, 'compose-check');
}

/** versitygw's release: the S3-compatible server of the storage tests (real SigV4, presigning, If-None-Match). */
export const VERSITYGW_VERSION = 'v1.8.0';

/** Path of the versitygw binary the storage tests start, in the Go tools cache. */
export function versitygwPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(goToolsDir(env), `versitygw-${VERSITYGW_VERSION}`, 'versitygw');
}

/** Builds versitygw from its module (about 3 min cold on 2 cores, 59 MiB) unless it is cached. */
export async function ensureVersitygw(log?: (line: string) => void): Promise<string> {
  const dir = await ensureGoBuild({
    key: `versitygw-${VERSITYGW_VERSION}`,
    binaries: ['versitygw'],
    build: (out) => goInstall(out, [`github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}`]),
    ...(log ? { log } : {}),
  });
  return join(dir, 'versitygw');
}
