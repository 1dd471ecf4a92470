import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureGoBuild, goBuildModule } from '../../lib/goTools';
import { REPO } from './cli';

// deploy/compose-check (compose-go, the loader `docker compose` uses), built on first use into
// ~/.cache/atelier/go/compose-check-<compose-go version>-<source hash>/: a change to the program
// or its go.sum builds a new one, an unchanged one is reused by every clone.

const MODULE = join(REPO, 'deploy', 'compose-check');

export async function composeCheckBinary(): Promise<string> {
  const goMod = readFileSync(join(MODULE, 'go.mod'), 'utf8');
  const version = /github\.com\/compose-spec\/compose-go\/v2 (v\S+)/.exec(goMod)?.[1];
  if (!version) throw new Error('deploy/compose-check/go.mod does not require compose-go/v2');
  const hash = createHash('sha256');
  for (const f of ['go.mod', 'go.sum', 'main.go']) hash.update(readFileSync(join(MODULE, f)));
  const dir = await ensureGoBuild({
    key: `compose-check-${version}-${hash.digest('hex').slice(0, 12)}`,
    binaries: ['compose-check'],
    build: (out) => goBuildModule(MODULE, out, 'compose-check'),
  });
  return join(dir, 'compose-check');
}

export interface CheckResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the checker in `cwd` with only PATH and HOME from this environment (no stray variables). */
export function composeCheck(binary: string, args: string[], cwd: string): Promise<CheckResult> {
  return new Promise((resolve) => {
    execFile(binary, args, { cwd, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' }, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
