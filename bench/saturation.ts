// Saturation benchmark: does Atelier keep every provider slot busy? `atelier edit` (the real CLI
// process, embedded dev server, in-process workers) against a plain concurrent loop with the openai
// SDK (bench/plainLoop.ts, its own process) at the same provider concurrency, both through one
// OpenAI stand-in answering after a fixed latency, in the same run, alternating.
//   - end to end: process spawn to process exit (imports, server start, planning, results);
//   - after start-up: the first provider call to process exit (what a slot-starved pipeline loses).
// The ratio is the plain loop's time ÷ Atelier's (1.0 = as fast as the loop; goals: ≥ 0.95 after
// start-up and ≥ 0.85 end to end at 1 s latency, 200 rows; reported at 0.2 s too).
//   npm run build && node dist/bench/saturation.js [--rows 200] [--latency 1000,200] [--concurrency 16]
//     [--window N] [--repeat 2] [--fresh-state]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { writeBenchDataset } from './harness';

interface Timing {
  /** Spawn to exit. */
  endToEnd: number;
  /** Spawn to the first provider call the stand-in saw. */
  startup: number;
  /** First provider call to exit. */
  afterStartup: number;
  calls: number;
}

function flag(args: string[], name: string, fallback: string): string {
  const at = args.indexOf(name);
  return at >= 0 && args[at + 1] !== undefined ? args[at + 1]! : fallback;
}

/** Runs a process to its exit and times it against the stand-in's record of the calls it made. */
async function timed(standin: OpenAIStandin, tag: string, command: string, args: string[], env: NodeJS.ProcessEnv): Promise<Timing> {
  const spawnedAt = Date.now();
  const child = spawn(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const phases: string[] = [];
  child.stderr.on('data', (chunk: Buffer) => {
    const text = chunk.toString();
    // With ATELIER_TRACE_PHASES set, the CLI's phases (ms since its process began, and its CPU ms so far).
    for (const m of text.matchAll(/\[phase\] (.+?) (\d+) ms(?: \(cpu (\d+) ms\))?/g))
      phases.push(`${m[1]} ${m[2]}${m[3] ? `/${m[3]}` : ''}`);
    stderr = (stderr + text).slice(-4000);
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const exitedAt = Date.now();
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${code}:\n${stderr}`);
  const calls = standin.callsFor(tag);
  if (calls.length === 0) throw new Error(`${tag}: no provider call was made`);
  const first = Math.min(...calls.map((c) => c.at));
  const last = Math.max(...calls.map((c) => c.at));
  if (phases.length)
    console.log(
      `    phases (ms wall/cpu): ${phases.join(', ')}; first call arrived ${first - spawnedAt}, last ${last - spawnedAt}, exit ${exitedAt - spawnedAt}`,
    );
  return {
    endToEnd: (exitedAt - spawnedAt) / 1000,
    startup: (first - spawnedAt) / 1000,
    afterStartup: (exitedAt - first) / 1000,
    calls: calls.length,
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const rows = Number(flag(args, '--rows', '200'));
  const latencies = flag(args, '--latency', '1000,200').split(',').map(Number);
  const concurrency = Number(flag(args, '--concurrency', '16'));
  const window = args.includes('--window') ? flag(args, '--window', '') : undefined;
  const repeat = Number(flag(args, '--repeat', '2'));
  const freshState = args.includes('--fresh-state');
  const root = join(__dirname, '..', '..');
  const dir = mkdtempSync(join(tmpdir(), 'atelier-saturation-'));
  const summaries: string[] = [];
  try {
    for (const latencyMs of latencies) {
      const standin = await startOpenAIStandin({ latencyMs });
      const env = { ...process.env, OPENAI_API_KEY: 'sk-bench', OPENAI_BASE_URL: standin.baseURL, TEMPORAL_ADDRESS: '' };
      const ours: Timing[] = [];
      const base: Timing[] = [];
      try {
        for (let r = 0; r < repeat; r++) {
          // Distinct prompts per side and repeat, so the stand-in's record tells the calls apart.
          const tag = `l${latencyMs}r${r}`;
          const baseCsv = await writeBenchDataset(dir, rows, `plain-${tag}`);
          base.push(
            await timed(
              standin,
              `plain-${tag} row`,
              process.execPath,
              [join(root, 'dist', 'bench', 'plainLoop.js'), baseCsv, join(dir, `plain-out-${tag}`), String(concurrency)],
              env,
            ),
          );
          const csv = await writeBenchDataset(dir, rows, `atelier-${tag}`);
          // One state dir for all runs, as a user has (the first run starts on an empty database).
          const stateDir = join(dir, freshState ? `state-${tag}` : 'state');
          ours.push(
            await timed(
              standin,
              `atelier-${tag} row`,
              process.execPath,
              [
                join(root, 'bin', 'atelier.js'),
                'edit',
                '--input',
                csv,
                '--output-dir',
                join(dir, `out-${tag}`),
                '--backend',
                'openai',
                '--model',
                'gpt-image-2',
                '--concurrency',
                String(concurrency),
                ...(window ? ['--window', window] : []),
                '--state-dir',
                stateDir,
              ],
              env,
            ),
          );
          const o = ours.at(-1)!;
          const b = base.at(-1)!;
          console.log(
            `  latency ${latencyMs} ms, repeat ${r + 1}: atelier ${o.endToEnd.toFixed(1)} s (start-up ${o.startup.toFixed(2)} s, then ${o.afterStartup.toFixed(1)} s, ${o.calls} calls); ` +
              `plain loop ${b.endToEnd.toFixed(1)} s (start-up ${b.startup.toFixed(2)} s, then ${b.afterStartup.toFixed(1)} s)`,
          );
        }
      } finally {
        await standin.close();
      }
      const e2e = median(base.map((t) => t.endToEnd)) / median(ours.map((t) => t.endToEnd));
      const after = median(base.map((t) => t.afterStartup)) / median(ours.map((t) => t.afterStartup));
      summaries.push(
        `saturation ${new Date().toISOString().slice(0, 10)}: ${rows} rows, latency ${latencyMs} ms, concurrency ${concurrency}${window ? `, window ${window}` : ''}: ` +
          `atelier ÷ plain loop after start-up ${after.toFixed(2)}, end to end ${e2e.toFixed(2)} ` +
          `(atelier start-up ${median(ours.map((t) => t.startup)).toFixed(2)} s, plain ${median(base.map((t) => t.startup)).toFixed(2)} s; medians of ${repeat})`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  for (const line of summaries) console.log(line);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
