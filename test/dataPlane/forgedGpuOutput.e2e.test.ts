import { join } from 'node:path';
import { HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parse } from 'csv-parse/sync';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { URL_GRANT_LIFETIME_S } from '../../activities/gpuRow';
import type { GpuEditRequest } from '../../lib/gpuContract';
import type { S3TestServer } from '../../testing/versitygw';
import { assertBuilt, atelier, CliProcess, waitUntil } from '../helpers/cli';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { readBucketObject, startGpuS3Testbed } from '../helpers/gpuS3Testbed';

// Outputs are what the GPU worker made (issue 23). Anyone who can read a run's history could read a
// GPU row's upload URL out of it (a presigned PUT valid for hours) and supply the row's output. Now
// the request in the history names staged objects and no URL: the GPU worker asks the row workflow
// for its URLs as it uses them, valid for minutes, for its own attempt alone. Here a real run (the
// tiny model on CPU, outputs in versitygw) is read from the history before any GPU worker runs: no
// URL. A forger racing the worker to the attempt's own staged name (written here with the store's
// credentials, as a reader of the URL the instant it was minted would) is refused at commit, which
// checks the staged object against the digest the worker reports. Once the run is over, the URLs its
// attempts were given (now in the history) are valid for minutes and name objects nothing reads: a
// forgery through them changes nothing a re-run publishes.

let env: TestWorkflowEnvironment;
let s3: S3TestServer;
let client: S3Client;
let modelDir: string;
const processes: CliProcess[] = [];

beforeAll(async () => {
  assertBuilt();
  ({ env, s3, client, modelDir } = await startGpuS3Testbed('atelier-forge-model-'));
}, 600_000);

afterAll(async () => {
  for (const p of processes.reverse()) await p.stop(p.child.spawnargs.includes('gpu-worker') ? 'SIGTERM' : 'SIGINT');
  client?.destroy();
  await s3?.stop();
  await env?.teardown();
});

async function exists(key: string): Promise<boolean> {
  try {
    await client.send(new HeadObjectCommand({ Bucket: 'atelier', Key: key }));
    return true;
  } catch {
    return false;
  }
}

/** The first GPU request scheduled by a row workflow of the server: read from the history, as anyone with read access could. */
async function gpuRequestFromHistory(seen: Set<string> = new Set()): Promise<GpuEditRequest> {
  let request: GpuEditRequest | undefined;
  await waitUntil(
    async () => {
      for await (const wf of env.client.workflow.list({ query: "WorkflowType = 'rowWorkflow'" })) {
        if (seen.has(wf.runId)) continue;
        const history = await env.client.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
        for (const event of history.events ?? []) {
          const scheduled = event.activityTaskScheduledEventAttributes;
          if (scheduled?.activityType?.name !== 'editImageGpu') continue;
          request = defaultPayloadConverter.fromPayload<GpuEditRequest>(scheduled.input!.payloads![0]!);
          seen.add(wf.runId);
          return true;
        }
      }
      return false;
    },
    120_000,
    'the GPU request in the history',
  );
  return request!;
}

/** Every presigned URL in the histories of the server's row workflows, as anyone with read access could find them. */
async function presignedUrlsInHistories(): Promise<string[]> {
  const urls: string[] = [];
  for await (const wf of env.client.workflow.list({ query: "WorkflowType = 'rowWorkflow'" })) {
    const history = await env.client.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
    const text = Buffer.from(temporal.api.history.v1.History.encode(history).finish()).toString('latin1');
    urls.push(...(text.match(/https?:\/\/[^"\s\\]*X-Amz-Signature=[^"\s\\]*/g) ?? []));
  }
  // Each appears twice: the activity's result and the update's outcome.
  return [...new Set(urls)];
}

describe('outputs are what the GPU worker made', () => {
  it('the history holds no upload URL; one minted for an attempt is minutes long, checked at commit, dead once the attempt ends', async () => {
    const address = env.connection.options.address;
    const base: NodeJS.ProcessEnv = { ...process.env, HF_HUB_OFFLINE: '1', TEMPORAL_ADDRESS: address };
    const withStorage = { ...base, ...s3.env };
    const dir = tempDir('atelier-forge-data-');
    await writePng(join(dir, 'a.png'), '#204060', 48);
    writeText(join(dir, 'rows.csv'), ['image,instruction', 'a.png,make it blue'].join('\n'));
    const args = [
      'edit',
      '--input',
      join(dir, 'rows.csv'),
      '--output-dir',
      's3://atelier/forge-out',
      '--backend',
      'diffusers',
      '--model',
      modelDir,
      '--num-inference-steps',
      '2',
      '--seed',
      '7',
      // The run's record goes to a state dir of the test's own, not the checkout's ./.atelier.
      '--state-dir',
      tempDir('atelier-forge-state-'),
    ];

    const orchestrator = new CliProcess(['worker', '--queues', 'atelier-orchestrator'], withStorage);
    processes.push(orchestrator);
    await orchestrator.waitForOutput(/serving atelier-orchestrator/);
    // No GPU worker yet: the row's GPU activity waits in its queue, its request in the history.
    const run = atelier(args, withStorage);
    const seen = new Set<string>();
    const request = await gpuRequestFromHistory(seen);
    // The request names staged objects; the history holds no URL to them (it held a PUT URL valid for 3 h).
    expect(request.output_path).toMatch(/^staged:out_0\.[0-9a-f]{12}\.png$/);
    expect(request.input_images.every((ref) => ref.startsWith('staged:'))).toBe(true);
    expect(await presignedUrlsInHistories()).toEqual([]);

    const magenta = await sharp({ create: { width: 48, height: 48, channels: 3, background: '#ff00ff' } })
      .png()
      .toBuffer();
    // A forger who won the race to attempt 1's own staged name, the instant its URL was minted.
    const attemptOne = `forge-out/.atelier/staging/000000/${request.output_path.slice('staged:'.length).replace(/\.png$/, '.a1.png')}`;
    await client.send(new PutObjectCommand({ Bucket: 'atelier', Key: attemptOne, Body: magenta, IfNoneMatch: '*' }));
    const forge = (url: string) =>
      fetch(url, { method: 'PUT', headers: { 'If-None-Match': '*', 'Content-Type': 'image/png' }, body: magenta });

    const gpuWorker = () => {
      const p = new CliProcess(['gpu-worker', '--model', modelDir, '--gpus', 'cpu', '--max-area', '4096', '--warmup-steps', '1'], base);
      processes.push(p);
      return p;
    };
    const gpu = gpuWorker();
    const done = await run;
    const trace = `${done.stdout}\n${done.stderr}\n--- GPU worker:\n${gpu.output.slice(-3000)}`;
    expect(done.code, trace).toBe(2);
    const results = parse(await readBucketObject(client, 'forge-out/results.csv'), { columns: true }) as Record<string, string>[];
    expect(results.map((r) => r.status)).toEqual(['failed']);
    expect(results[0]!.error).toMatch(/output 0 of row 0 refused: the staged object .* is not what the GPU worker made/);
    // Published nowhere: no output, and the forged object is gone from staging.
    expect(await exists('forge-out/000000.png')).toBe(false);
    expect(await exists(attemptOne)).toBe(false);
    // The URLs the worker was given are in the history now: minutes long, the PUT one for attempt 1's name.
    const minted = await presignedUrlsInHistories();
    expect(minted.length).toBeGreaterThan(0);
    for (const url of minted) expect(Number(new URL(url).searchParams.get('X-Amz-Expires'))).toBeLessThanOrEqual(URL_GRANT_LIFETIME_S);
    expect(minted.some((url) => new URL(url).pathname.endsWith(attemptOne))).toBe(true);

    // A re-run makes the row again from the worker's own bytes, under staging names of its own: the
    // first run's URLs, still signed for minutes, reach nothing it reads.
    await gpu.stop('SIGTERM');
    const rerun = atelier(args, withStorage);
    const second = await gpuRequestFromHistory(seen);
    expect(second.output_path).not.toBe(request.output_path);
    for (const url of minted) expect((await forge(url)).status).toBeLessThan(500);
    const gpuAgain = gpuWorker();
    const again = await rerun;
    expect(again.code, `${again.stdout}\n${again.stderr}\n--- GPU worker:\n${gpuAgain.output.slice(-3000)}`).toBe(0);
    const made = await readBucketObject(client, 'forge-out/000000.png');
    const { data } = await sharp(made).raw().toBuffer({ resolveWithObject: true });
    expect([...data.subarray(0, 3)]).not.toEqual([255, 0, 255]);

    // The re-run's own URLs, used once its attempt is over, create objects nothing reads: the next run
    // finds the row done and publishes the same bytes.
    const later = (await presignedUrlsInHistories()).filter((url) => !minted.includes(url) && /\.a\d+\.png$/.test(new URL(url).pathname));
    expect(later.length).toBeGreaterThan(0);
    for (const url of later) expect((await forge(url)).status).toBe(200);
    const third = await atelier(args, withStorage);
    expect(third.code, `${third.stdout}\n${third.stderr}`).toBe(0);
    const still = await readBucketObject(client, 'forge-out/000000.png');
    expect(still.equals(made)).toBe(true);
  }, 600_000);
});
