import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort } from '../lib/temporal/devServer';
import { versitygwPath } from './goTools';

// A real S3-compatible server for tests and benchmarks: versitygw over a temp folder (objects are
// plain files under <dir>/<bucket>/), with real SigV4, presigned URLs and conditional writes. The
// binary is built once by `node scripts/cluster.mjs build` (npm test does it) into
// ~/.cache/atelier/go.

export interface S3TestServer {
  /** The AWS_* variables a process needs to reach the server. */
  env: Record<string, string>;
  endpoint: string;
  /** The folder versitygw keeps buckets in (bucket b's objects are under <dir>/b/). */
  dir: string;
  createBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startS3Server(): Promise<S3TestServer> {
  // The SDK's Node-22 notice says nothing actionable for the pinned release (see storage/s3.ts).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const binary = versitygwPath();
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run \`node scripts/cluster.mjs build\` (npm test does)`);
  const dir = mkdtempSync(join(tmpdir(), 'atelier-s3-'));
  const port = await freePort();
  const env = {
    AWS_ACCESS_KEY_ID: 'atelier-test',
    AWS_SECRET_ACCESS_KEY: 'atelier-test-secret',
    AWS_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`,
  };
  const child: ChildProcess = spawn(binary, ['--port', `127.0.0.1:${port}`, '--quiet', 'posix', dir], {
    env: { ...process.env, ROOT_ACCESS_KEY: env.AWS_ACCESS_KEY_ID, ROOT_SECRET_KEY: env.AWS_SECRET_ACCESS_KEY },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await fetch(env.AWS_ENDPOINT_URL_S3);
      break;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`versitygw did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const client = new S3Client({
    region: env.AWS_REGION,
    endpoint: env.AWS_ENDPOINT_URL_S3,
    forcePathStyle: true,
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
  });
  return {
    env,
    endpoint: env.AWS_ENDPOINT_URL_S3,
    dir,
    async createBucket(name) {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    async stop() {
      client.destroy();
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    },
  };
}
