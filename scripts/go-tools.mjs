#!/usr/bin/env node
// Go-built tools the test suite runs (an S3-compatible server, ...), installed once from the Go
// module proxy into ~/.cache/atelier/go/<name>-<version>/ and reused: never into the repo, never at
// test time. `node scripts/go-tools.mjs` installs what is missing; `toolPath(name)` finds one.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const GO_TOOLS = {
  // S3-compatible server with real SigV4, presigning and conditional writes (If-None-Match).
  versitygw: { module: 'github.com/versity/versitygw/cmd/versitygw', version: 'v1.8.0', binary: 'versitygw' },
};

export function toolsCache() {
  return process.env.ATELIER_CACHE_DIR || join(homedir(), '.cache', 'atelier');
}

export function toolPath(name) {
  const tool = GO_TOOLS[name];
  return join(toolsCache(), 'go', `${name}-${tool.version}`, tool.binary);
}

export function installGoTool(name) {
  const tool = GO_TOOLS[name];
  const target = toolPath(name);
  if (existsSync(target)) return target;
  const dir = join(toolsCache(), 'go', `${name}-${tool.version}`);
  const staging = `${dir}.partial-${process.pid}`;
  mkdirSync(staging, { recursive: true });
  process.stdout.write(`installing ${name} ${tool.version} (go install, a few minutes the first time)\n`);
  const started = Date.now();
  const result = spawnSync('go', ['install', '-ldflags=-s -w', `${tool.module}@${tool.version}`], {
    stdio: 'inherit',
    env: { ...process.env, GOBIN: staging, GOFLAGS: process.env.GOFLAGS ?? '-buildvcs=false' },
  });
  if (result.status !== 0) {
    rmSync(staging, { recursive: true, force: true });
    throw new Error(`go install ${tool.module}@${tool.version} failed (exit ${result.status})`);
  }
  // Renamed into place whole, so an interrupted build is never taken for a finished one.
  mkdirSync(dir, { recursive: true });
  renameSync(join(staging, tool.binary), target);
  rmSync(staging, { recursive: true, force: true });
  process.stdout.write(`installed ${name} in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
  return target;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const name of process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(GO_TOOLS)) installGoTool(name);
}
