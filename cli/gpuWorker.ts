import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { UsageError } from '../lib/shared/errors';
import { repoRoot } from '../lib/temporal/temporalCli';
import type { Command } from 'commander';
import type { CliIO, CommandContext } from './io';
import { addExamples } from './options';

// The Python GPU workers (gpu-workers/, package atelier_gpu) serve `--backend diffusers` rows.
// `atelier gpu-worker` runs them against TEMPORAL_ADDRESS; `atelier edit --backend diffusers` with
// an embedded server starts them itself. Either way: one process per GPU, each printing a JSON
// "ready" line once its pipeline is loaded, warmed up and polling.

/** A local model folder is passed as an absolute path, so every process derives the same queue. */
export function normaliseModel(model: string): string {
  return existsSync(model) ? resolve(model) : model;
}

export interface GpuWorkerProcess {
  /** Resolves once every GPU process reports ready; rejects if the worker exits first. */
  ready: Promise<void>;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

export function spawnGpuWorker(
  args: string[],
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
  expectedReady: number,
): GpuWorkerProcess {
  const python = join(repoRoot(), 'gpu-workers', 'scripts', 'python.sh');
  const child: ChildProcess = spawn('bash', [python, '-m', 'atelier_gpu.worker', ...args], {
    env: { ...env, PYTHONUNBUFFERED: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((done) => child.on('close', (code) => done(code)));
  let stderrTail: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderrTail = [...stderrTail.slice(-20), line];
  });
  const ready = new Promise<void>((resolveReady, rejectReady) => {
    watchReadyEvents(child.stdout!, expectedReady, (event) =>
      log(`GPU worker ready: ${event.worker ?? '?'} on ${event.task_queue ?? '?'}`),
    ).then(resolveReady, rejectReady);
    exited.then(
      (code) => rejectReady(new UsageError(`the GPU worker exited (code ${code}) before it was ready:\n${stderrTail.join('\n')}`)),
      rejectReady,
    );
  });
  return {
    ready,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export interface WorkerEvent {
  event?: string;
  task_queue?: string;
  worker?: string;
}

/**
 * The JSON objects of one stdout line. Usually one; an older worker whose line and newline were
 * separate writes could glue two processes' lines into `{...}{...}`, so top-level objects are
 * split by brace depth (outside strings) rather than trusting one object per line.
 */
export function jsonObjectsOfLine(line: string): unknown[] {
  const objects: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < line.length; i += 1) {
    const ch = line[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === '\\') escaped = true;
      else if (ch === '"') inString = false;
    } else if (ch === '"') {
      inString = depth > 0;
    } else if (ch === '{') {
      if (depth === 0) start = i;
      depth += 1;
    } else if (ch === '}' && depth > 0) {
      depth -= 1;
      if (depth === 0) {
        try {
          objects.push(JSON.parse(line.slice(start, i + 1)));
        } catch {
          // braces that balance but are not JSON: log text, not an event
        }
      }
    }
  }
  return objects;
}

/**
 * Resolves once `expected` "ready" events have come through `stream` (the workers' shared
 * stdout). Lines are cut by hand, not by readline, so a line split across reads (even inside a
 * UTF-8 character) is joined first and a last line without a newline still counts at the end.
 */
export function watchReadyEvents(stream: Readable, expected: number, onReady: (event: WorkerEvent) => void): Promise<void> {
  let seen = 0;
  let pending = '';
  const decoder = new StringDecoder('utf8');
  return new Promise<void>((resolveReady) => {
    const takeLine = (line: string): void => {
      for (const value of jsonObjectsOfLine(line)) {
        const event = value as WorkerEvent;
        if (event.event !== 'ready') continue;
        seen += 1;
        onReady(event);
        if (seen >= expected) resolveReady();
      }
    };
    stream.on('data', (chunk: Buffer | string) => {
      pending += typeof chunk === 'string' ? chunk : decoder.write(chunk);
      let newline = pending.indexOf('\n');
      while (newline >= 0) {
        takeLine(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        newline = pending.indexOf('\n');
      }
    });
    stream.on('end', () => {
      pending += decoder.end();
      if (pending) takeLine(pending);
      pending = '';
    });
  });
}

/** How many processes `--gpus` starts ("cpu" or a list; unset: the worker decides, at least one). */
export function gpuProcessCount(gpus: string | undefined): number {
  if (!gpus || gpus === 'cpu') return 1;
  return gpus.split(',').filter((g) => g.trim() !== '').length;
}

/** `atelier gpu-worker`: the Python GPU workers in the foreground, against TEMPORAL_ADDRESS. */
export async function runGpuWorker(rawArgs: string[], io: CliIO): Promise<number> {
  const address = process.env.TEMPORAL_ADDRESS;
  if (!address) throw new UsageError('TEMPORAL_ADDRESS is not set: `atelier gpu-worker` serves an external Temporal server');
  const args = [...rawArgs];
  const modelAt = args.indexOf('--model');
  if (modelAt < 0 || !args[modelAt + 1]) throw new UsageError('--model is required (a hub id or a local model folder)');
  args[modelAt + 1] = normaliseModel(args[modelAt + 1]!);
  const gpusAt = args.indexOf('--gpus');
  const worker = spawnGpuWorker(
    ['--address', address, ...args],
    process.env,
    io.err,
    gpuProcessCount(gpusAt >= 0 ? args[gpusAt + 1] : undefined),
  );
  // Ctrl-C stops the workers; the command ends when they have exited (a failed stop is said).
  io.interrupted.then(() => worker.stop()).catch((err: unknown) => io.err(`stopping the GPU worker failed: ${(err as Error).message}`));
  // A worker that dies before it is ready says why; the exit code below tells the rest.
  await worker.ready.catch((err: unknown) => io.err((err as Error).message));
  const code = await worker.exited;
  return code ?? 1;
}

/**
 * `atelier gpu-worker`: no options of its own; everything after `gpu-worker` goes to the Python
 * worker as it is (its --help included). `atelier help gpu-worker` shows this command's help.
 */
export function registerGpuWorker(program: Command, { io, setExit, argv }: CommandContext): void {
  const cmd = program
    .command('gpu-worker')
    .description(
      'run the Python GPU workers (one process per GPU) for --backend diffusers against TEMPORAL_ADDRESS; options go to `python -m atelier_gpu.worker` (see gpu-workers/README.md)',
    )
    .allowUnknownOption()
    .allowExcessArguments()
    .helpOption(false)
    .action(async () => setExit(await runGpuWorker(argv.slice(argv.indexOf('gpu-worker') + 1), io)));
  addExamples(cmd, [
    ['TEMPORAL_ADDRESS=127.0.0.1:7233 atelier gpu-worker --model Qwen/Qwen-Image-Edit-2509 --gpus 0,1', 'one worker process per GPU'],
    ['TEMPORAL_ADDRESS=127.0.0.1:7233 atelier gpu-worker --help', "the Python worker's own options"],
  ]);
}
