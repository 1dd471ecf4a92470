import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../lib/temporal/devServer';
import { gpuTaskQueue } from '../lib/gpuContract';
import { assertBuilt, atelier, CliProcess, REPO } from './helpers/cli';
import { isPng, tempDir, writePng, writeText } from './helpers/fixtures';

// The cross-language path: the TypeScript dataset workflow on a real dev server sends rows to the
// Python GPU worker (gpu-workers/, a tiny random-weight InstructPix2Pix built locally, on CPU), and
// gets outputs and results. No hub access: HF_HUB_OFFLINE=1.

const PYTHON = join(REPO, 'gpu-workers', 'scripts', 'python.sh');
let modelDir: string;
const offline = { ...process.env, HF_HUB_OFFLINE: '1' };

beforeAll(() => {
  assertBuilt();
  modelDir = join(tempDir('atelier-tiny-model-'), 'tiny-pix2pix');
  execFileSync('bash', [PYTHON, '-m', 'tiny_pipelines', 'instruct-pix2pix', modelDir], {
    env: offline,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}, 600_000);

async function dataset(): Promise<{ dir: string; csv: string }> {
  const dir = tempDir('atelier-gpu-data-');
  await writePng(join(dir, 'a.png'), '#aa3366', 48);
  writeText(
    join(dir, 'rows.csv'),
    [
      'index,image,instruction,name',
      '0,a.png,make it blue,first.jpg',
      '1,a.png,add snow,second',
      '2,missing.png,never runs,third.png',
    ].join('\n'),
  );
  return { dir, csv: join(dir, 'rows.csv') };
}

function checkOutputs(outputDir: string): void {
  const rows = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
  expect(rows.map((r) => [r.status, r.output_image])).toEqual([
    ['ok', 'first.jpg'],
    ['ok', 'second.png'],
    ['failed', ''],
  ]);
  expect(rows[2]!.error).toMatch(/InputError: input image not found/);
  expect([...readFileSync(join(outputDir, 'first.jpg')).subarray(0, 2)]).toEqual([0xff, 0xd8]);
  expect(isPng(readFileSync(join(outputDir, 'second.png')))).toBe(true);
}

describe('--backend diffusers through the Python GPU worker', () => {
  it('edit with an embedded server starts the GPU worker itself and writes outputs and results', async () => {
    const { dir, csv } = await dataset();
    const outputDir = join(dir, 'out');
    const run = await atelier(
      [
        'edit',
        '--input',
        csv,
        '--output-dir',
        outputDir,
        '--backend',
        'diffusers',
        '--model',
        modelDir,
        '--gpus',
        'cpu',
        '--num-inference-steps',
        '2',
        '--seed',
        '7',
        '--output-name-column',
        'name',
        '--state-dir',
        join(dir, 'state'),
      ],
      { ...offline, ATELIER_GPU_WORKER_ARGS: '--max-area 4096 --warmup-steps 1' },
    );
    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toMatch(/GPU worker ready: .* on gpu-/);
    checkOutputs(outputDir);
    await expect(sharp(join(outputDir, 'second.png')).metadata()).resolves.toMatchObject({ format: 'png' });
  });

  it('a plugin adapter (--model-type plugin, the worker started with --adapter) serves the same run through the same workflow', async () => {
    // The example plugin runs its own denoising loop over the same tiny checkpoint: the TypeScript side sees the
    // contract's model type `plugin` and nothing else changes (outputs, results, error classes).
    const { dir, csv } = await dataset();
    const outputDir = join(dir, 'out');
    const run = await atelier(
      [
        'edit',
        '--input',
        csv,
        '--output-dir',
        outputDir,
        '--backend',
        'diffusers',
        '--model',
        modelDir,
        '--model-type',
        'plugin',
        '--gpus',
        'cpu',
        '--num-inference-steps',
        '2',
        '--seed',
        '7',
        '--output-name-column',
        'name',
        '--state-dir',
        join(dir, 'state'),
      ],
      {
        ...offline,
        ATELIER_GPU_WORKER_ARGS: '--max-area 4096 --warmup-steps 1 --adapter plugin_examples.pix2pix_loop:InstructPix2PixLoop',
      },
    );
    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toMatch(/GPU worker ready: .* on gpu-/);
    checkOutputs(outputDir);
  });

  it('`atelier gpu-worker` and `atelier worker` serve a run started with TEMPORAL_ADDRESS; a re-run reproduces nothing twice', async () => {
    const { dir, csv } = await dataset();
    const stateDir = join(dir, 'state');
    const port = await freePort();
    const server = new CliProcess(
      ['server', '--state-dir', stateDir, '--port', String(port), '--ui-port', String(await freePort())],
      offline,
    );
    await server.waitForOutput(/address: /);
    const env = { ...offline, TEMPORAL_ADDRESS: `127.0.0.1:${port}` };
    const gpu = new CliProcess(['gpu-worker', '--model', modelDir, '--gpus', 'cpu', '--max-area', '4096', '--warmup-steps', '1'], env);
    const worker = new CliProcess(['worker', '--queues', 'atelier-orchestrator'], env);
    try {
      await gpu.waitForOutput(new RegExp(`GPU worker ready: .* on ${gpuTaskQueue(modelDir)}`), 300_000);
      await worker.waitForOutput(/serving atelier-orchestrator/);
      const outputDir = join(dir, 'out');
      const args = [
        'edit',
        '--input',
        csv,
        '--output-dir',
        outputDir,
        '--backend',
        'diffusers',
        '--model',
        modelDir,
        '--num-inference-steps',
        '2',
        '--output-name-column',
        'name',
        '--state-dir',
        stateDir,
      ];
      const run = await atelier(args, env);
      expect(run.code, run.stderr).toBe(2);
      checkOutputs(outputDir);
      const first = readFileSync(join(outputDir, 'second.png'));
      const again = await atelier(args, env);
      expect(again.code).toBe(2);
      // Ok rows were not redone: the same bytes.
      expect(readFileSync(join(outputDir, 'second.png')).equals(first)).toBe(true);
    } finally {
      await worker.stop();
      await gpu.stop('SIGTERM');
      await server.stop();
    }
  });
});
