#!/usr/bin/env node
// The whole test suite, as `npm test` (and so CI) runs it: build, type-check, the TypeScript tests
// (vitest: unit, workflow, CLI and cross-language tests on real dev servers, the compose check and
// the cluster stage on a real Temporal server with PostgreSQL) and the Python GPU
// worker's tests (pytest, CPU, in a cached venv). Ends with one "N passed, N failed" line.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkoutStateEntries, gainedEntries } from './checkoutState.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);

function step(title, command, args, options = {}) {
  process.stdout.write(`\n=== ${title}\n`);
  const started = Date.now();
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit', ...options });
  process.stdout.write(`=== ${title}: exit ${result.status} in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
  return result.status ?? 1;
}

let passed = 0;
let failed = 0;
let skipped = 0;

if (step('build', process.execPath, [join(root, 'scripts', 'build.mjs')]) !== 0) process.exit(1);
if (step('type-check', bin('tsc'), ['-p', 'tsconfig.json', '--noEmit']) !== 0) process.exit(1);
// Lint and format: ESLint (workflow-safety, floating promises, cycles, type imports), Prettier, and
// ruff for the Python GPU workers (a pinned ruff cached under ~/.cache/atelier, like the venv).
if (step('eslint', bin('eslint'), ['.', '--max-warnings', '0']) !== 0) process.exit(1);
if (step('prettier', bin('prettier'), ['--check', '.', '--log-level', 'warn']) !== 0) process.exit(1);
if (step('ruff (gpu-workers)', 'bash', [join(root, 'gpu-workers', 'scripts', 'ruff.sh'), 'check']) !== 0) process.exit(1);
// The cluster and compose tests need Go programs built from modules (the Temporal server and SQL
// tool, ~8 min cold; compose-check, seconds; versitygw and the docker compose CLI, ~3 min each),
// cached under ~/.cache/atelier/go/; building them here, not inside a test's set-up, keeps test
// timings honest.
if (
  step('Go tools (Temporal server, compose-check, versitygw, docker compose)', process.execPath, [
    join(root, 'scripts', 'cluster.mjs'),
    'build',
  ]) !== 0
)
  process.exit(1);
// The compose stack test (test/deploy/stack.test.ts) runs docker-compose.yml on a Docker engine of
// its own: Debian's dockerd (docker.io) and mmdebstrap, which builds the stand-in base images' root
// filesystems from the apt mirror (no image registry is reachable), cached under
// ~/.cache/atelier/docker (about 15 s to install, 2.5 min cold for the root filesystems).
if (spawnSync('sh', ['-c', 'command -v dockerd && command -v mmdebstrap'], { stdio: 'ignore' }).status !== 0) {
  const apt = 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io mmdebstrap';
  if (step('docker.io + mmdebstrap (apt)', 'sh', ['-c', process.getuid?.() === 0 ? apt : `sudo sh -c '${apt}'`]) !== 0) process.exit(1);
}
if (step('stand-in root filesystems (mmdebstrap)', 'bash', [join(root, 'scripts', 'standin-rootfs.sh')]) !== 0) process.exit(1);
if (step('stand-in Python root filesystem (mmdebstrap)', 'bash', [join(root, 'scripts', 'standin-python-rootfs.sh')]) !== 0)
  process.exit(1);
// The compose test builds the GPU image from PyPI's wheels (CUDA torch, ~3 GB, about 2.5 min cold).
if (step('GPU image wheelhouse (pip download)', 'bash', [join(root, 'scripts', 'gpu-wheelhouse.sh')]) !== 0) process.exit(1);
// The cross-language tests need the GPU worker's venv; building it here keeps test timings honest.
// The viewer's browser test drives Debian's chromium (puppeteer-core); installed here if missing.
if (spawnSync('sh', ['-c', 'command -v chromium'], { stdio: 'ignore' }).status !== 0) {
  const apt = 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium';
  if (step('chromium (apt)', 'sh', ['-c', process.getuid?.() === 0 ? apt : `sudo sh -c '${apt}'`]) !== 0) process.exit(1);
}
// The export test loads `atelier export` output with Hugging Face `datasets`, from its own venv.
if (step('datasets venv', 'bash', [join(root, 'scripts', 'setup-datasets-venv.sh')]) !== 0) process.exit(1);
if (step('gpu-workers venv', 'bash', [join(root, 'gpu-workers', 'scripts', 'setup-venv.sh')]) !== 0) process.exit(1);

// Tests keep their run records in temp state dirs: the checkout's .atelier/ must not gain entries.
const stateBefore = checkoutStateEntries(root);
const work = mkdtempSync(join(tmpdir(), 'atelier-test-'));
// Every temp folder the tests make (datasets, output dirs, servers' data) goes under this run's own
// folder, removed at the end: a suite run leaves nothing in /tmp (it left ~1 GB a run before).
const testTmp = join(work, 'tmp');
mkdirSync(testTmp);
// As /tmp itself: the cluster stage runs PostgreSQL as its own user, which must reach its folder.
chmodSync(work, 0o711);
chmodSync(testTmp, 0o1777);
const testEnv = { env: { ...process.env, TMPDIR: testTmp } };
const vitestJson = join(work, 'vitest.json');
const vitestCode = step(
  'vitest',
  bin('vitest'),
  ['run', '--reporter=default', '--reporter=./test/helpers/plainSummaryReporter.ts', '--reporter=json', `--outputFile.json=${vitestJson}`],
  testEnv,
);
try {
  const report = JSON.parse(readFileSync(vitestJson, 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests + (report.numTotalTestSuites > 0 && report.success === false && report.numFailedTests === 0 ? 1 : 0);
  skipped += report.numPendingTests + report.numTodoTests;
} catch {
  failed += 1; // vitest did not report: count it as a failure
}

const gained = gainedEntries(stateBefore, checkoutStateEntries(root));
if (gained.length) {
  process.stdout.write(
    `\n=== the tests wrote into the checkout's .atelier/ (a CLI call without --state-dir?): ${gained.slice(0, 20).join(', ')}${gained.length > 20 ? ` and ${gained.length - 20} more` : ''}\n`,
  );
  failed += 1;
}

const junit = join(work, 'pytest.xml');
const pytestCode = step(
  'pytest (gpu-workers)',
  'bash',
  [join(root, 'gpu-workers', 'scripts', 'test.sh'), '-q', `--junitxml=${junit}`],
  testEnv,
);
try {
  const xml = readFileSync(junit, 'utf8');
  const suite = /<testsuite\b[^>]*>/.exec(xml)?.[0] ?? '';
  const attr = (name) => Number(new RegExp(`${name}="(\\d+)"`).exec(suite)?.[1] ?? 0);
  const pyFailed = attr('failures') + attr('errors');
  const pySkipped = attr('skipped');
  passed += attr('tests') - pyFailed - pySkipped;
  failed += pyFailed;
  skipped += pySkipped;
} catch {
  failed += 1;
}
rmSync(work, { recursive: true, force: true });

const ok = vitestCode === 0 && pytestCode === 0 && failed === 0;
process.stdout.write(`\ntotal: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
process.exit(ok ? 0 : 1);
