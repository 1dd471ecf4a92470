import { execFile, execFileSync } from 'node:child_process';
import { createReadStream, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { basename, join } from 'node:path';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Connection } from '@temporalio/client';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../lib/temporal/devServer';
import { ensureDockerCompose, VERSITYGW_VERSION } from '../../testing/goTools';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { assertBuilt, CliProcess, REPO, waitUntil } from '../helpers/cli';
import { startDockerEngine, startNoSuchNameDns, type DockerEngine } from '../helpers/dockerEngine';
import { tempDir, writePng } from '../helpers/fixtures';
import { ensureStandinImages, STANDIN_POSTGRES_TAG, STANDIN_TEMPORAL_TAG } from '../helpers/standinImages';

// `docker compose up` of the repository's docker-compose.yml, for real: a Docker engine of the
// test's own (Debian's dockerd, test/helpers/dockerEngine.ts), the docker compose v2 CLI built from
// its Go module, the worker image built from deploy/worker.Dockerfile, the stack started and
// driven from this host through the published Temporal port.
//
// SUBSTITUTIONS (users pull the real images; no registry is reachable here):
// - The base and service images are local stand-ins tagged with the names the compose file and
//   the Dockerfiles use (test/helpers/standinImages.ts, test/deploy/standins/): Debian bookworm
//   built with mmdebstrap plus this machine's Node 20 for node:20-bookworm-slim; Debian's
//   PostgreSQL 15 as postgres:15; temporal-server, temporal-sql-tool and versitygw built from
//   their Go modules as temporalio/server, temporalio/admin-tools and versity/versitygw. So the
//   stack runs with POSTGRES_VERSION=15 and TEMPORAL_VERSION=TEMPORAL_ADMINTOOLS_VERSION=1.32.1
//   (the server version the cluster tests build) instead of the file's defaults.
// - temporalio/ui is not started: its server module ships without the web assets, so a stand-in
//   would prove nothing. Every other service of the file runs.
// - The only override file puts the stack on a bridge network this test creates (fixed subnet),
//   so the stand-in provider on this host can listen on that network's gateway address.
// - Builds cannot reach npm: the node stand-in carries the host's npm cache and npm runs offline.
// - Containers have no route out, so their only DNS server outside the engine is a stand-in on the
//   test network's gateway that answers "no such name" at once (startNoSuchNameDns).
// - The GPU image (`--profile gpu`) is built from PyPI's own wheels (CUDA torch included), fetched
//   by the install step scripts/gpu-wheelhouse.sh and served to the build from the test network's
//   gateway: the Dockerfile's optional WHEELS argument (compose: ATELIER_GPU_WHEELS) makes pip read
//   only that wheelhouse. Its base, python:3.11-slim-bookworm, is Debian's Python 3.11. The override
//   puts that build on the test network. There is no GPU here: the image is started without one.
//
// What it shows: the stack becomes healthy (schema job, server, namespace job, store, workers);
// a run of ROWS rows started from the host finishes all ok with its outputs in the store's bucket
// although one worker replica is killed mid-run, paying no row twice beyond what that replica had
// in flight; `--scale atelier-worker=3` gives three replicas that each call the provider; and
// `docker compose down -v` leaves no container, volume, network or published port behind; the GPU
// image builds and its worker starts (imports torch with CUDA, answers --help) without a GPU.

const ROWS = 200;
const SCALED_ROWS = 90;
const CONCURRENCY = 8;
const BUCKET = 'atelier';
const SUBNET = '10.213.77.0/24';
const GATEWAY = '10.213.77.1';
const NETWORK = 'atelier-stack-test';
/** The wheelhouse's port on the gateway: fixed, because the URL is part of the pip step's build-cache key. */
const WHEELS_PORT = 3141;
const GPU_IMAGE = 'atelier-gpu-worker:local';
/** Every service but temporal-ui (see above). */
const SERVICES = ['postgresql', 'temporal-schema', 'temporal', 'temporal-namespace', 's3', 'atelier-worker'];

const log = (line: string) => process.stderr.write(`[stack] ${line}\n`);
const seconds = (since: number) => `${((Date.now() - since) / 1000).toFixed(0)} s`;

let engine: DockerEngine;
let composeBin: string;
let runDir: string;
let standin: OpenAIStandin;
let relay: Server;
let wheels: { url: string; requests: () => number; close(): Promise<void> } | undefined;
let dns: { close(): Promise<void> } | undefined;
/** Provider requests by the container address they came from. */
const callsFrom = new Map<string, number>();
let ports: { temporal: number; s3: number };
let s3: S3Client;
let upSince = 0;
const timings: string[] = [];

function compose(args: string[], timeoutMs = 10 * 60_000): Promise<{ stdout: string; stderr: string }> {
  const files = ['-f', join(REPO, 'docker-compose.yml'), '-f', join(runDir, 'override.yml')];
  return new Promise((resolve, reject) => {
    execFile(
      composeBin,
      ['--env-file', join(runDir, 'stack.env'), ...files, ...args],
      { cwd: REPO, env: engine.env, maxBuffer: 64 * 1024 * 1024, timeout: timeoutMs },
      (err, stdout, stderr) => {
        // A failed build step prints its output (pip's error, say) on stdout.
        if (err)
          reject(new Error(`docker compose ${args.join(' ')} failed: ${err.message}\n${stdout.slice(-4000)}\n${stderr.slice(-6000)}`));
        else resolve({ stdout, stderr });
      },
    );
  });
}

interface PsEntry {
  Name: string;
  Service: string;
  State: string;
  Health: string;
  ExitCode: number;
}

async function ps(): Promise<PsEntry[]> {
  const { stdout } = await compose(['ps', '--all', '--format', 'json'], 60_000);
  // One JSON object per line (compose v2.21 and later).
  return stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as PsEntry);
}

async function workerAddresses(): Promise<Map<string, string>> {
  const { stdout } = await compose(['ps', '--format', '{{.Name}}', 'atelier-worker'], 60_000);
  const byName = new Map<string, string>();
  for (const name of stdout.split('\n').filter(Boolean)) {
    const { stdout: ip } = await engine.docker(
      ['inspect', '-f', `{{(index .NetworkSettings.Networks "${NETWORK}").IPAddress}}`, name],
      30_000,
    );
    byName.set(name, ip.trim());
  }
  return byName;
}

async function workerLogs(name: string): Promise<string> {
  const { stdout, stderr } = await engine.docker(['logs', name], 30_000);
  return stdout + stderr;
}

async function allKeys(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) keys.push(o.Key!);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** Uploads a dataset of `rows` rows tagged `tag`, runs it from the host, returns the client. */
async function startRun(tag: string, rows: number): Promise<CliProcess> {
  const dir = tempDir('atelier-stack-client-');
  await writePng(join(dir, 'in.png'), '#508030', 32);
  const csv = ['input_images,instruction', ...Array.from({ length: rows }, (_, i) => `in.png,${tag} row ${i}`)].join('\n');
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${tag}/data/rows.csv`, Body: csv }));
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${tag}/data/in.png`, Body: readFileSync(join(dir, 'in.png')) }));
  // The client: only the Temporal address (the published port); no provider key, no store credentials.
  return new CliProcess(
    [
      'edit',
      '--input',
      `s3://${BUCKET}/${tag}/data/rows.csv`,
      '--output-dir',
      `s3://${BUCKET}/${tag}/out`,
      '--backend',
      'openai',
      '--model',
      'gpt-image-2',
      '--window',
      '32',
      '--heartbeat-timeout',
      '5',
      '--state-dir',
      join(dir, 'state'),
    ],
    { PATH: process.env.PATH, HOME: process.env.HOME, TEMPORAL_ADDRESS: `127.0.0.1:${ports.temporal}`, TEMPORAL_NAMESPACE: 'default' },
  );
}

/** The folder scripts/gpu-wheelhouse.sh filled (an install step: the test downloads nothing). */
function wheelhouseDir(): string {
  const dir = execFileSync('bash', [join(REPO, 'scripts', 'gpu-wheelhouse.sh'), '--print'], { encoding: 'utf8' }).trim();
  if (!existsSync(join(dir, '.complete'))) throw new Error(`${dir} is missing: run scripts/gpu-wheelhouse.sh (npm test does)`);
  return dir;
}

/** Serves `dir`'s wheels as a pip --find-links page on `host` (WHEELS_PORT, or any port if taken). */
async function serveWheelhouse(dir: string, host: string): Promise<NonNullable<typeof wheels>> {
  const names = readdirSync(dir).filter((n) => n.endsWith('.whl'));
  const prefix = `/${basename(dir)}/`; // the key in the URL: new pins, new build step
  let count = 0;
  const server = createServer((req, res) => {
    count++;
    const name = decodeURIComponent((req.url ?? '').split('?')[0]!.slice(prefix.length));
    if (!req.url?.startsWith(prefix)) res.writeHead(404).end();
    else if (name === '') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(names.map((n) => `<a href="${encodeURIComponent(n)}">${n}</a><br>`).join('\n'));
    } else if (names.includes(name)) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      createReadStream(join(dir, name)).pipe(res);
    } else res.writeHead(404).end();
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
  await listen(WHEELS_PORT).catch(() => listen(0));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://${host}:${port}${prefix}`,
    requests: () => count,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function imageSize(image: string): Promise<number> {
  const { stdout } = await engine.docker(['image', 'inspect', '-f', '{{.Size}}', image], 30_000);
  return Number(stdout.trim());
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;

async function expectAllOk(tag: string, rows: number): Promise<void> {
  const body = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${tag}/out/results.csv` }));
  const results = parse(Buffer.from(await body.Body!.transformToByteArray()), { columns: true }) as Record<string, string>[];
  expect(results).toHaveLength(rows);
  expect(results.filter((r) => r.status !== 'ok')).toEqual([]);
  expect(new Set(results.map((r) => r.instruction)).size).toBe(rows);
  const outputs = (await allKeys(`${tag}/out/`)).filter((k) => !k.includes('/.atelier/') && k.endsWith('.png'));
  expect(outputs.sort()).toEqual(results.map((r) => `${tag}/out/${r.output_image}`).sort());
}

beforeAll(async () => {
  assertBuilt();
  // The SDK's Node-22 notice says nothing actionable for the pinned release (see storage/s3.ts).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  let since = Date.now();
  runDir = tempDir('atelier-stack-');
  composeBin = await ensureDockerCompose(log); // built by `npm test`'s Go tools step
  engine = await startDockerEngine(runDir, { dns: GATEWAY, log });
  timings.push(`engine ${seconds(since)}`);
  since = Date.now();
  await ensureStandinImages(engine, log);
  timings.push(`stand-in images ${seconds(since)}`);

  // A network left by a killed run is replaced.
  await engine.docker(['network', 'rm', NETWORK], 60_000).catch(() => undefined);
  await engine.docker(['network', 'create', '--driver', 'bridge', '--subnet', SUBNET, '--gateway', GATEWAY, NETWORK], 60_000);
  dns = await startNoSuchNameDns(GATEWAY);
  // The provider stand-in listens on loopback; a relay on the network's gateway address (this
  // host, as the containers see it) forwards to it and notes which container each call came from.
  standin = await startOpenAIStandin({ latencyMs: 300 });
  const target = new URL(standin.baseURL);
  relay = createServer((req, res) => {
    const from = req.socket.remoteAddress ?? '?';
    callsFrom.set(from, (callsFrom.get(from) ?? 0) + 1);
    const upstream = request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  relay.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => relay.listen(0, GATEWAY, resolve));
  const relayPort = (relay.address() as { port: number }).port;
  wheels = await serveWheelhouse(wheelhouseDir(), GATEWAY);

  ports = { temporal: await freePort(), s3: await freePort() };
  const values: Record<string, string> = {
    POSTGRES_VERSION: STANDIN_POSTGRES_TAG,
    TEMPORAL_VERSION: STANDIN_TEMPORAL_TAG,
    TEMPORAL_ADMINTOOLS_VERSION: STANDIN_TEMPORAL_TAG,
    POSTGRES_PASSWORD: 'stack-test-pg',
    AWS_ACCESS_KEY_ID: 'atelier-stack',
    AWS_SECRET_ACCESS_KEY: 'atelier-stack-secret',
    ATELIER_TEMPORAL_PORT: String(ports.temporal),
    ATELIER_S3_PORT: String(ports.s3),
    ATELIER_UI_PORT: String(await freePort()),
    ATELIER_DATA_DIR: join(runDir, 'data'),
    ATELIER_WORKER_CONCURRENCY: String(CONCURRENCY),
    OPENAI_API_KEY: 'sk-stack-test',
    OPENAI_BASE_URL: `http://${GATEWAY}:${relayPort}/v1`,
    ATELIER_GPU_WHEELS: wheels.url,
  };
  const example = Object.fromEntries(
    readFileSync(join(REPO, '.env.example'), 'utf8')
      .split('\n')
      .filter((l) => /^[A-Z_0-9]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  writeFileSync(
    join(runDir, 'stack.env'),
    Object.entries({ ...example, ...values })
      .map(([k, v]) => `${k}=${v}`)
      .join('\n') + '\n',
  );
  // The stack on the test's network; the GPU image's build too (its pip step reads the wheelhouse
  // on the gateway; the classic builder's steps otherwise see only loopback).
  writeFileSync(
    join(runDir, 'override.yml'),
    `networks:\n  default:\n    name: ${NETWORK}\n    external: true\n` +
      `services:\n  gpu-worker:\n    build:\n      network: ${NETWORK}\n`,
  );

  await compose(['down', '-v', '--remove-orphans'], 120_000); // what a killed run left
  since = Date.now();
  await compose(['build', 'atelier-worker'], 15 * 60_000);
  timings.push(`worker image build ${seconds(since)}`);
  upSince = Date.now();
  await compose(['up', '-d', ...SERVICES], 10 * 60_000);
  s3 = new S3Client({
    region: 'us-east-1',
    endpoint: `http://127.0.0.1:${ports.s3}`,
    forcePathStyle: true,
    credentials: { accessKeyId: values.AWS_ACCESS_KEY_ID!, secretAccessKey: values.AWS_SECRET_ACCESS_KEY! },
  });
}, 40 * 60_000);

afterAll(async () => {
  s3?.destroy();
  if (engine) {
    await compose(['down', '-v', '--remove-orphans'], 300_000).catch((err: unknown) => log(String(err)));
    await engine.docker(['network', 'rm', NETWORK], 60_000).catch(() => undefined);
  }
  if (relay) await new Promise((resolve) => relay.close(resolve));
  await wheels?.close();
  await dns?.close();
  await standin?.close();
  await engine?.stop();
  log(`timings: ${timings.join(', ')}`);
}, 10 * 60_000);

describe('docker compose up of docker-compose.yml on a real engine', () => {
  it('becomes healthy: schema and namespace jobs done, server healthy, store and two workers up', async () => {
    let last: PsEntry[] = [];
    await waitUntil(
      async () => {
        last = await ps();
        const by = (s: string) => last.filter((e) => e.Service === s);
        const done = (s: string) => by(s).length === 1 && by(s)[0]!.State === 'exited' && by(s)[0]!.ExitCode === 0;
        return (
          by('postgresql')[0]?.Health === 'healthy' &&
          by('temporal')[0]?.Health === 'healthy' &&
          done('temporal-schema') &&
          done('temporal-namespace') &&
          by('s3')[0]?.State === 'running' &&
          by('atelier-worker').filter((e) => e.State === 'running').length === 2
        );
      },
      5 * 60_000,
      'the stack to become healthy',
    ).catch(async (err: unknown) => {
      const { stdout } = await compose(['logs', '--tail', '30'], 60_000).catch(() => ({ stdout: '' }));
      throw new Error(`${String(err)}\n${JSON.stringify(last, null, 1)}\n${stdout.slice(-8000)}`);
    });
    timings.push(`up to healthy ${seconds(upSince)}`);
    // The workers reached the server by its service name and serve their queues.
    const workers = [...(await workerAddresses()).keys()];
    for (const name of workers)
      await waitUntil(async () => /serving atelier-orchestrator/.test(await workerLogs(name)), 120_000, `${name} serving`);
    timings.push(`workers serving ${seconds(upSince)}`);
    // From the host: the published frontend serves the namespace the job created.
    const connection = await Connection.connect({ address: `127.0.0.1:${ports.temporal}` });
    try {
      const ns = await connection.workflowService.describeNamespace({ namespace: 'default' });
      expect(ns.namespaceInfo?.name).toBe('default');
    } finally {
      await connection.close();
    }
    // The store answers on its published port with the compose's credentials; the bucket is made
    // as a user would (`aws s3 mb`), and lands in the s3-data volume.
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    expect(await allKeys('')).toEqual([]);
    const images = await engine.docker(['image', 'ls', '--format', '{{.Repository}}:{{.Tag}} {{.Size}}'], 30_000);
    log(`images:\n${images.stdout}`);
    log(`versitygw ${VERSITYGW_VERSION}, Temporal ${STANDIN_TEMPORAL_TAG}, PostgreSQL ${STANDIN_POSTGRES_TAG}`);
  });

  it(`runs ${ROWS} rows from the host to completion although one worker replica is killed mid-run`, async () => {
    const started = Date.now();
    const run = await startRun('kill', ROWS);
    const addresses = await workerAddresses();
    const [victim] = [...addresses.keys()].sort();
    callsFrom.clear();
    let callsAtKill: number | undefined;
    try {
      await waitUntil(() => standin.callsFor('kill row').length >= ROWS / 3, 10 * 60_000, 'a third of the calls');
      callsAtKill = standin.callsFor('kill row').length;
      // Mid-run, and the replica had work: each replica holds at most CONCURRENCY of the window's
      // 32 rows, so both serve before a third of the calls are made.
      expect(callsAtKill).toBeLessThan(ROWS);
      expect(callsFrom.get(addresses.get(victim!)!) ?? 0).toBeGreaterThan(0);
      // `docker compose kill` has no replica selector: the replica's container, by the name compose gave it.
      await engine.docker(['kill', victim!], 60_000);
      const code = await run.exited;
      expect(code, run.output).toBe(0);
    } finally {
      await run.stop();
    }
    await expectAllOk('kill', ROWS);
    const calls = standin.callsFor('kill row');
    expect(new Set(calls.map((c) => c.prompt)).size).toBe(ROWS);
    // Paid twice at most: what the killed replica had in flight (its concurrency).
    expect(calls.length).toBeLessThanOrEqual(ROWS + CONCURRENCY);
    timings.push(`${ROWS}-row run with a kill ${seconds(started)}`);
    log(`killed ${victim} after ${callsAtKill} calls; ${calls.length} calls for ${ROWS} rows`);
  });

  it('--scale atelier-worker=3: three replicas, each calls the provider', async () => {
    await compose(['up', '-d', '--scale', 'atelier-worker=3', ...SERVICES], 10 * 60_000);
    const workers = await workerAddresses();
    expect(workers.size).toBe(3);
    for (const name of workers.keys())
      await waitUntil(async () => /serving atelier-orchestrator/.test(await workerLogs(name)), 120_000, `${name} serving`);
    callsFrom.clear();
    const started = Date.now();
    const run = await startRun('scale', SCALED_ROWS);
    try {
      const code = await run.exited;
      expect(code, run.output).toBe(0);
    } finally {
      await run.stop();
    }
    await expectAllOk('scale', SCALED_ROWS);
    const served = [...workers].map(([name, ip]) => [name, callsFrom.get(ip) ?? 0] as const);
    log(`${SCALED_ROWS} rows on 3 replicas in ${seconds(started)}: ${served.map(([n, c]) => `${n} ${c}`).join(', ')}`);
    for (const [, count] of served) expect(count).toBeGreaterThan(0);
    expect(served.reduce((a, [, c]) => a + c, 0)).toBeLessThanOrEqual(SCALED_ROWS + 3 * CONCURRENCY);
  });

  it('docker compose down -v leaves no container, volume, network or published port', async () => {
    await compose(['down', '-v', '--remove-orphans'], 300_000);
    expect((await engine.docker(['ps', '-aq'], 30_000)).stdout.trim()).toBe('');
    expect((await engine.docker(['volume', 'ls', '-q'], 30_000)).stdout.trim()).toBe('');
    // Only the engine's own networks and the one this test made (removed after the GPU build).
    const networks = (await engine.docker(['network', 'ls', '--format', '{{.Name}}'], 30_000)).stdout.split('\n').filter(Boolean);
    expect(networks.sort()).toEqual(['host', 'none', NETWORK].sort());
    for (const port of [ports.s3, ports.temporal]) {
      const refused = await fetch(`http://127.0.0.1:${port}/`).then(
        () => false,
        () => true,
      );
      expect(refused, `port ${port}`).toBe(true);
    }
  });

  it(
    "--profile gpu: the GPU image builds from PyPI's wheels (CUDA torch) and starts without a GPU",
    async () => {
      const started = Date.now();
      const before = wheels!.requests();
      await compose(['--profile', 'gpu', 'build', 'gpu-worker'], 45 * 60_000);
      timings.push(`GPU image build ${seconds(started)} (${wheels!.requests() - before} wheelhouse requests)`);
      // The image, not the service: the service reserves NVIDIA devices, which this engine lacks.
      const pins = Object.fromEntries(
        readFileSync(join(REPO, 'gpu-workers', 'requirements.txt'), 'utf8')
          .split('\n')
          .map((l) => /^([A-Za-z0-9_-]+)==(\S+)/.exec(l))
          .filter((m) => m !== null)
          .map((m) => [m[1]!.toLowerCase(), m[2]!]),
      );
      const probe = [
        'import json, torch, diffusers, transformers, temporalio.worker, atelier_gpu.worker',
        'from importlib.metadata import version',
        'print(json.dumps({"torch": version("torch"), "build": torch.__version__, "cuda": torch.version.cuda,',
        ' "gpu": torch.cuda.is_available(), "diffusers": version("diffusers"), "temporalio": version("temporalio")}))',
      ].join('\n');
      const run = (args: string[]) => engine.docker(['run', '--rm', '--network', 'none', ...args], 5 * 60_000);
      const { stdout } = await run(['--entrypoint', 'python', GPU_IMAGE, '-c', probe]);
      const found = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>;
      expect(found).toMatchObject({ torch: pins.torch, gpu: false, diffusers: pins.diffusers, temporalio: pins.temporalio });
      expect(found.cuda).toMatch(/^\d+\.\d+/); // the CUDA build users get, not a CPU substitute
      const help = await run([GPU_IMAGE, '--help']);
      expect(help.stdout).toMatch(/--model/);
      expect((await engine.docker(['ps', '-aq'], 30_000)).stdout.trim()).toBe('');
      const sizes = {
        worker: await imageSize('atelier-worker:local'),
        workerBase: await imageSize('node:20-bookworm-slim'),
        gpu: await imageSize(GPU_IMAGE),
        gpuBase: await imageSize('python:3.11-slim-bookworm'),
      };
      log(
        `GPU image: torch ${String(found.build)} CUDA ${String(found.cuda)}; sizes: atelier-worker:local ${mb(sizes.worker)} ` +
          `(+${mb(sizes.worker - sizes.workerBase)} on its base), ${GPU_IMAGE} ${mb(sizes.gpu)} (+${mb(sizes.gpu - sizes.gpuBase)} on its base)`,
      );
    },
    50 * 60_000,
  );
});
