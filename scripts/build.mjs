#!/usr/bin/env node
// Compiles the TypeScript sources to dist/ and prebuilds the workflow bundle, so workers start
// without running webpack each time.
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));

rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json')], {
  stdio: 'inherit',
  cwd: root,
});
const { bundleWorkflowCode } = require('@temporalio/worker');
const { code } = await bundleWorkflowCode({
  workflowsPath: join(root, 'dist', 'workflows', 'index.js'),
  logger: { info() {}, debug() {}, trace() {}, warn: console.warn, error: console.error, log() {} },
});
writeFileSync(join(root, 'dist', 'workers', 'workflow-bundle.js'), code);
