#!/usr/bin/env node
// The real-cluster tooling (testing/localCluster, testing/goTools), from the compiled output:
//   node scripts/cluster.mjs build   builds what the cluster, compose and storage tests need, if
//                                    missing: the Temporal server + SQL tool (v1.32.1, ~8 min cold
//                                    on 2 cores), deploy/compose-check and versitygw (~3 min cold),
//                                    under ~/.cache/atelier/go/
//   node scripts/cluster.mjs start   a Temporal server on PostgreSQL on loopback, until Ctrl-C
//                                    (prints the TEMPORAL_ADDRESS to use)
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));
const log = (line) => process.stderr.write(`[cluster] ${line}\n`);
const { ensureComposeCheck, ensureVersitygw } = require(join(root, 'dist', 'testing', 'goTools.js'));
const { ensureTemporalServer, startLocalCluster } = require(join(root, 'dist', 'testing', 'localCluster.js'));

const command = process.argv[2];
if (command === 'build') {
  const started = Date.now();
  const tools = await ensureTemporalServer(log);
  const check = await ensureComposeCheck(log);
  const s3 = await ensureVersitygw(log);
  log(`ready in ${((Date.now() - started) / 1000).toFixed(0)} s: ${tools.server}, ${tools.sql}, ${check}, ${s3}`);
} else if (command === 'start') {
  const cluster = await startLocalCluster({ log });
  process.stdout.write(`export TEMPORAL_ADDRESS=${cluster.address}\n`);
  log('Ctrl-C stops the server and PostgreSQL and removes their data');
  const stop = () => cluster.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  process.stderr.write('usage: node scripts/cluster.mjs build|start\n');
  process.exit(2);
}
