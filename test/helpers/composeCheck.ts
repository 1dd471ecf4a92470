import { execFile } from 'node:child_process';

// Runs deploy/compose-check (built on first use by testing/goTools' ensureComposeCheck, which
// `npm test` runs in an earlier step).

export { ensureComposeCheck as composeCheckBinary } from '../../testing/goTools';
export interface CheckResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the checker in `cwd` with only PATH and HOME from this environment (no stray variables). */
export function composeCheck(binary: string, args: string[], cwd: string): Promise<CheckResult> {
  return new Promise((resolve) => {
    execFile(
      binary,
      args,
      { cwd, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' }, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
