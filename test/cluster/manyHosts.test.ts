import { ListObjectsV2Command, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../testing/localCluster';
import { startS3Server, type S3TestServer } from '../../testing/versitygw';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { assertBuilt, BIN, CliProcess, waitUntil } from '../helpers/cli';
import { tempDir, writePng } from '../helpers/fixtures';
import { Host } from '../helpers/hosts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

// Many hosts on one machine: the Temporal server and its database (PostgreSQL), the object store,
// two API worker hosts and the client are separate as far as the data goes. Each worker host is a
// mount and PID namespace of its own with a private /tmp and no view of the client's files, so only
// Temporal and the object store connect them. Mid-run one worker host dies: every process on it is
// killed at once. The run must complete with every row exactly once, one output per row, and no
// more provider calls than rows plus the rows that host had in flight.

const ROWS = 300;
const CONCURRENCY = 8;
let cluster: LocalCluster;
let s3: S3TestServer;
let standin: OpenAIStandin;
let client: S3Client;

beforeAll(async () => {
  assertBuilt();
  cluster = await startLocalCluster({ log: (l) => process.stderr.write(`[cluster] ${l}\n`) });
  s3 = await startS3Server();
  await s3.createBucket('hosts');
  standin = await startOpenAIStandin({ latencyMs: 300 });
  client = new S3Client({
    region: s3.env.AWS_REGION,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3.env.AWS_SECRET_ACCESS_KEY! },
  });
}, 30 * 60_000);

afterAll(async () => {
  client?.destroy();
  await standin?.close();
  await s3?.stop();
  await cluster?.close();
}, 120_000);

async function allKeys(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: 'hosts', Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) keys.push(o.Key!);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

describe('a run across hosts that share only Temporal and the object store', () => {
  it("survives the death of a worker host: every row once, one output each, calls ≤ rows + that host's rows in flight", async () => {
    // The client's dataset, on its own disk (under /tmp), uploaded; the hosts see only the upload.
    const clientDir = tempDir('atelier-hosts-client-');
    await writePng(join(clientDir, 'in.png'), '#306090', 32);
    const csv = ['input_images,instruction', ...Array.from({ length: ROWS }, (_, i) => `in.png,hosts row ${i}`)].join('\n');
    await client.send(new PutObjectCommand({ Bucket: 'hosts', Key: 'data/rows.csv', Body: csv }));
    await client.send(new PutObjectCommand({ Bucket: 'hosts', Key: 'data/in.png', Body: readFileSync(join(clientDir, 'in.png')) }));

    const temporalEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      TEMPORAL_ADDRESS: cluster.address,
      TEMPORAL_NAMESPACE: cluster.namespace,
    };
    const workerEnv = { ...temporalEnv, ...s3.env, OPENAI_API_KEY: 'sk-hosts-test', OPENAI_BASE_URL: standin.baseURL };
    const hostOptions = { pidNamespace: true, mustNotSee: clientDir };
    const workerArgs = [process.execPath, BIN, 'worker', '--concurrency', String(CONCURRENCY)];
    const hostA = new Host(workerArgs, workerEnv, hostOptions);
    const hostB = new Host(workerArgs, workerEnv, hostOptions);
    // The client: no provider key, no storage credentials.
    const run = new CliProcess(
      [
        'edit',
        '--input',
        's3://hosts/data/rows.csv',
        '--output-dir',
        's3://hosts/out',
        '--backend',
        'openai',
        '--model',
        'gpt-image-2',
        '--window',
        '32',
        '--heartbeat-timeout',
        '5',
        '--state-dir',
        join(clientDir, 'state'),
      ],
      temporalEnv,
    );
    let callsAtKill: number | undefined;
    try {
      await hostA.waitFor(/serving atelier-orchestrator, api-openai/, 60_000);
      await hostB.waitFor(/serving atelier-orchestrator, api-openai/, 60_000);
      await waitUntil(() => standin.callsFor('hosts row').length >= ROWS / 3, 120_000, 'a third of the calls');
      callsAtKill = standin.callsFor('hosts row').length;
      await hostA.stop('SIGKILL');
      const code = await run.exited;
      expect(code, run.output).toBe(0);
    } finally {
      await run.stop();
      await hostA.stop('SIGKILL');
      await hostB.stop();
    }

    const results = parse(
      Buffer.from(
        await (await client.send(new GetObjectCommand({ Bucket: 'hosts', Key: 'out/results.csv' }))).Body!.transformToByteArray(),
      ),
      {
        columns: true,
      },
    ) as Record<string, string>[];
    expect(results).toHaveLength(ROWS);
    expect(results.every((r) => r.status === 'ok')).toBe(true);
    expect(new Set(results.map((r) => r.instruction)).size).toBe(ROWS);
    expect(new Set(results.map((r) => r.output_image)).size).toBe(ROWS);
    const outputs = (await allKeys('out/')).filter((k) => !k.startsWith('out/.atelier/') && k.endsWith('.png'));
    expect(outputs.sort()).toEqual(results.map((r) => `out/${r.output_image}`).sort());
    const calls = standin.callsFor('hosts row');
    expect(new Set(calls.map((c) => c.prompt)).size).toBe(ROWS);
    expect(calls.length).toBeLessThanOrEqual(ROWS + CONCURRENCY);
    process.stderr.write(`many hosts: host A killed after ${callsAtKill} calls; ${calls.length} calls for ${ROWS} rows\n`);
  });
});
