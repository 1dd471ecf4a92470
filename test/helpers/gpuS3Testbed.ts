import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { startS3Server, type S3TestServer } from '../../testing/versitygw';
import { REPO } from './cli';
import { tempDir } from './fixtures';
import { startTestServer } from './temporalEnv';

// What the GPU end-to-end tests over object storage share: a dev server, versitygw with the bucket
// `atelier`, an S3 client with the store's own credentials (to read, or forge, what the workers
// wrote) and the tiny pix2pix model made on the spot (CPU, offline).

export const GPU_PYTHON = join(REPO, 'gpu-workers', 'scripts', 'python.sh');
export const GPU_BUCKET = 'atelier';

export interface GpuS3Testbed {
  env: TestWorkflowEnvironment;
  s3: S3TestServer;
  client: S3Client;
  /** The tiny model's folder (`--model`). */
  modelDir: string;
}

export async function startGpuS3Testbed(modelDirPrefix: string): Promise<GpuS3Testbed> {
  const { env } = await startTestServer();
  const s3 = await startS3Server();
  await s3.createBucket(GPU_BUCKET);
  const client = new S3Client({
    region: s3.env.AWS_REGION,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3.env.AWS_SECRET_ACCESS_KEY! },
  });
  const modelDir = join(tempDir(modelDirPrefix), 'tiny-pix2pix');
  execFileSync('bash', [GPU_PYTHON, '-m', 'tiny_pipelines', 'instruct-pix2pix', modelDir], {
    env: { ...process.env, HF_HUB_OFFLINE: '1' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return { env, s3, client, modelDir };
}

/** An object of the bucket, whole. */
export async function readBucketObject(client: S3Client, key: string): Promise<Buffer> {
  const answer = await client.send(new GetObjectCommand({ Bucket: GPU_BUCKET, Key: key }));
  return Buffer.from(await answer.Body!.transformToByteArray());
}
