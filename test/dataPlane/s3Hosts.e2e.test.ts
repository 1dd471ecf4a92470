import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parse } from 'csv-parse/sync';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { assertBuilt, atelier, BIN, REPO } from '../helpers/cli';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { Host } from '../helpers/hosts';
import { startS3Server, type S3TestServer } from '../../testing/versitygw';
import { startTestServer } from '../helpers/temporalEnv';

// Object storage as the only data plane: the dataset, its images, the plan, ledger, outputs and
// results live in an S3-compatible store (versitygw). The API worker and the GPU worker each run in
// a mount namespace of their own with a private /tmp, so they cannot see the client's files (which
// are all under /tmp): only Temporal and the object store connect them. The GPU worker has no
// storage credentials at all: it reads and writes through presigned URLs.

const API_KEY = 'sk-test-s3hosts-61e0c2d9ab7f4e38';
const PYTHON = join(REPO, 'gpu-workers', 'scripts', 'python.sh');

let env: TestWorkflowEnvironment;
let s3: S3TestServer;
let standin: OpenAIStandin;
let client: S3Client;
let address: string;
let clientDir: string;
let modelDir: string;

async function objectBytes(key: string): Promise<Buffer> {
  const out = await client.send(new GetObjectCommand({ Bucket: 'atelier', Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

async function keys(prefix: string): Promise<string[]> {
  const out = await client.send(new ListObjectsV2Command({ Bucket: 'atelier', Prefix: prefix }));
  return (out.Contents ?? []).map((o) => o.Key!).sort();
}

beforeAll(async () => {
  assertBuilt();
  ({ env } = await startTestServer());
  address = env.connection.options.address;
  s3 = await startS3Server();
  await s3.createBucket('atelier');
  standin = await startOpenAIStandin();
  client = new S3Client({
    region: s3.env.AWS_REGION,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3.env.AWS_SECRET_ACCESS_KEY! },
  });
  // The client's dataset, made on its disk (under /tmp) and uploaded; workers only see the upload.
  clientDir = tempDir('atelier-s3-client-');
  await writePng(join(clientDir, 'imgs', 'a.png'), '#204060', 48);
  await writePng(join(clientDir, 'imgs', 'b.png'), '#c08000', 48);
  writeText(
    join(clientDir, 'rows.csv'),
    [
      'input_images,instruction',
      'imgs/a.png,s3host row 0',
      'imgs/b.png,s3host row 1',
      'imgs/a.png,s3host row 2',
      'imgs/missing.png,s3host row 3',
    ].join('\n'),
  );
  for (const name of ['rows.csv', 'imgs/a.png', 'imgs/b.png']) {
    await client.send(new PutObjectCommand({ Bucket: 'atelier', Key: `data/${name}`, Body: readFileSync(join(clientDir, name)) }));
  }
  // The tiny model lives outside /tmp, where the GPU host can see it (as a real host has its weights).
  modelDir = join(homedir(), '.cache', 'atelier', 'test-area', `tiny-pix2pix-${process.pid}`);
  mkdirSync(modelDir, { recursive: true });
  execFileSync('bash', [PYTHON, '-m', 'tiny_pipelines', 'instruct-pix2pix', modelDir], {
    env: { ...process.env, HF_HUB_OFFLINE: '1' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}, 600_000);

afterAll(async () => {
  client?.destroy();
  await standin?.close();
  await s3?.stop();
  await env?.teardown();
  if (modelDir) rmSync(modelDir, { recursive: true, force: true });
});

describe('s3 → s3 runs with workers on hosts of their own', () => {
  it('runs API and GPU rows with every byte in object storage, then re-runs with no call', async () => {
    const base: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, HF_HUB_OFFLINE: '1', TEMPORAL_ADDRESS: address };
    const storageEnv = { ...s3.env };
    const hidden = { mustNotSee: clientDir };
    const apiHost = new Host(
      [process.execPath, BIN, 'worker'],
      { ...base, ...storageEnv, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL },
      hidden,
    );
    // No AWS_* at all on the GPU host: presigned URLs are its only way to the data.
    const gpuHost = new Host(
      [process.execPath, BIN, 'gpu-worker', '--model', modelDir, '--gpus', 'cpu', '--max-area', '4096', '--warmup-steps', '1'],
      base,
      hidden,
    );
    // The client: neither provider keys nor storage credentials.
    const clientEnv = { ...base };
    const clientState = tempDir('atelier-s3-state-');
    try {
      await apiHost.waitFor(/serving atelier-orchestrator, api-openai/, 60_000);
      await gpuHost.waitFor(/GPU worker ready/, 300_000);

      const apiArgs = [
        'edit',
        '--input',
        's3://atelier/data/rows.csv',
        '--output-dir',
        's3://atelier/out-api',
        '--backend',
        'openai',
        '--model',
        'gpt-image-2',
        '--retry-initial-ms',
        '100',
        // The client's run records in a temp state dir, not the checkout's ./.atelier (its cwd).
        '--state-dir',
        clientState,
      ];
      const gpuArgs = [
        'edit',
        '--input',
        's3://atelier/data/rows.csv',
        '--output-dir',
        's3://atelier/out-gpu',
        '--backend',
        'diffusers',
        '--model',
        modelDir,
        '--num-inference-steps',
        '2',
        '--state-dir',
        clientState,
      ];
      const api = await atelier(apiArgs, clientEnv);
      expect(api.code, api.stdout + api.stderr).toBe(2);
      expect(api.stdout + api.stderr).toMatch(/results: s3:\/\/atelier\/out-api\/results\.csv/);
      const gpu = await atelier(gpuArgs, clientEnv);
      expect(gpu.code, gpu.stdout + gpu.stderr).toBe(2);

      for (const prefix of ['out-api', 'out-gpu']) {
        const rows = parse(await objectBytes(`${prefix}/results.csv`), { columns: true }) as Record<string, string>[];
        expect(rows.map((r) => [r.status, r.output_image])).toEqual([
          ['ok', '000000.png'],
          ['ok', '000001.png'],
          ['ok', '000002.png'],
          ['failed', ''],
        ]);
        expect(rows[3]!.error).toMatch(/InputError: input image not found: s3:\/\/atelier\/data\/imgs\/missing\.png/);
        for (const name of ['000000.png', '000001.png', '000002.png']) {
          await expect(sharp(await objectBytes(`${prefix}/${name}`)).metadata()).resolves.toMatchObject({ format: 'png' });
        }
        // Nothing left behind that the ledger does not account for: no staging, no stored answers.
        expect((await keys(`${prefix}/.atelier/staging/`)).length).toBe(0);
        expect((await keys(`${prefix}/.atelier/answers/`)).length).toBe(0);
      }
      expect(standin.callsFor('s3host')).toHaveLength(3);
      // The GPU worker never held a credential: its results name objects, not signed URLs.
      expect(gpuHost.output).not.toMatch(/X-Amz-Signature/);

      // Re-runs: everything is done; the GPU host is gone and no provider call is made.
      await gpuHost.stop();
      const outputs = await objectBytes('out-gpu/000001.png');
      const apiAgain = await atelier(apiArgs, clientEnv);
      const gpuAgain = await atelier(gpuArgs, clientEnv);
      expect(apiAgain.code, apiAgain.stderr).toBe(2);
      expect(gpuAgain.code, gpuAgain.stderr).toBe(2);
      expect(standin.callsFor('s3host')).toHaveLength(3);
      expect((await objectBytes('out-gpu/000001.png')).equals(outputs)).toBe(true);
    } catch (err) {
      // What the hosts said is the only trace of their side of a failure.
      throw new Error(
        `${(err as Error).message}\n--- API host:\n${apiHost.output.slice(-3000)}\n--- GPU host:\n${gpuHost.output.slice(-3000)}`,
        { cause: err },
      );
    } finally {
      await apiHost.stop();
      await gpuHost.stop();
    }
  });
});
