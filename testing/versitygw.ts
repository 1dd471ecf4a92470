import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
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
  /**
   * The requests the server received, from its own access log (with `accessLog: true`), in order.
   * Counting here, not in our client, sees every request the SDK really sent (retries included).
   */
  requests(): S3AccessLogEntry[];
  /**
   * Stops the server and starts it again on the same port and folder, its root secret `secretKey`
   * (default: the one in `env`): a store whose credentials changed under its clients, and back.
   */
  restart(secretKey?: string): Promise<void>;
  stop(): Promise<void>;
}

/** One line of versitygw's access log (the S3 server access log format). */
export interface S3AccessLogEntry {
  bucket: string;
  /** As the log names it, e.g. `s3_GetObject`, `s3_PutObject`, `s3_HeadObject`, `s3_ListObjectsV2`. */
  operation: string;
  key: string;
  status: number;
}

const ACCESS_LINE = /^\S+ (\S+) \[[^\]]+\] \S+ \S+ \S+ (\S+) (\S+) \S+ (\d{3}) /;

export function parseAccessLog(text: string): S3AccessLogEntry[] {
  const entries: S3AccessLogEntry[] = [];
  for (const line of text.split('\n')) {
    const m = ACCESS_LINE.exec(line);
    if (m) entries.push({ bucket: m[1]!, operation: m[2]!, key: m[3]!, status: Number(m[4]) });
  }
  return entries;
}

export async function startS3Server(options: { accessLog?: boolean } = {}): Promise<S3TestServer> {
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
  // The log lives beside the buckets' folder, not in it (a file there would read as a bucket).
  const accessLog = options.accessLog ? `${dir}.access.log` : undefined;
  const args = ['--port', `127.0.0.1:${port}`, '--quiet', ...(accessLog ? ['--access-log', accessLog] : []), 'posix', dir];
  const launch = async (secretKey: string): Promise<ChildProcess> => {
    const child: ChildProcess = spawn(binary, args, {
      env: { ...process.env, ROOT_ACCESS_KEY: env.AWS_ACCESS_KEY_ID, ROOT_SECRET_KEY: secretKey },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += String(d)));
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        await fetch(env.AWS_ENDPOINT_URL_S3);
        return child;
      } catch {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`versitygw did not start: ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  const exit = async (child: ChildProcess) => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  };
  let child = await launch(env.AWS_SECRET_ACCESS_KEY);
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
    requests() {
      if (!accessLog) throw new Error('startS3Server({ accessLog: true }) keeps an access log; this server has none');
      return existsSync(accessLog) ? parseAccessLog(readFileSync(accessLog, 'utf8')) : [];
    },
    async restart(secretKey = env.AWS_SECRET_ACCESS_KEY) {
      await exit(child);
      child = await launch(secretKey);
    },
    async stop() {
      client.destroy();
      await exit(child);
    },
  };
}
