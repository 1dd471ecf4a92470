import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { UsageError } from '../lib/shared/errors';
import { tracePhase } from '../lib/phaseTrace';
import { registerDemo } from './demo';
import { registerEdit } from './edit';
import { registerEstimate, runEstimate } from './estimate';
import { registerExport } from './export';
import { registerGpuWorker } from './gpuWorker';
import { ExitCodes, type CliIO, type CommandContext } from './io';
import { registerJudge } from './judge';
import { registerManage } from './manage';
import { registerModels } from './models';
import { registerServer } from './server';
import { registerStandin } from './standin';
import { registerView } from './view';
import { registerWorker } from './worker';

// The commands, under the headings and in the order `atelier --help` lists them. Each registers its own
// options next to its handler (cli/<command>.ts), from the shared declarations in cli/optionGroups.ts.
type Register = (program: Command, ctx: CommandContext) => void;
const COMMANDS: ReadonlyArray<readonly [string, readonly Register[]]> = [
  [
    'Editing:',
    [
      // `edit --dry-run` is `estimate`: its handler comes from here (estimate.ts builds on edit.ts).
      (program, ctx) => registerEdit(program, ctx, runEstimate),
      registerEstimate,
      registerDemo,
      registerModels,
    ],
  ],
  ['Managing runs:', [registerManage]],
  ['Results:', [registerExport, registerJudge, registerView]],
  ['Servers and workers:', [registerServer, registerWorker, registerGpuWorker, registerStandin]],
];

function makeIO(): CliIO {
  let interrupt: () => void = () => undefined;
  const interrupted = new Promise<void>((resolve) => (interrupt = resolve));
  let count = 0;
  process.on('SIGINT', () => {
    count += 1;
    if (count > 1) process.exit(ExitCodes.interrupted);
    interrupt();
  });
  process.on('SIGTERM', () => interrupt());
  // A reader that stops early (`atelier models | head`) closes the pipe: that ends the command
  // quietly, as it does for other tools, instead of an unhandled EPIPE stack trace.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(ExitCodes.ok);
      throw err;
    });
  }
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    interrupted,
    isTTY: Boolean(process.stderr.isTTY),
  };
}

/** The version in package.json (two folders up from both cli/ and dist/cli/). */
function packageVersion(): string {
  for (const dir of [join(__dirname, '..'), join(__dirname, '..', '..')]) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'atelier' && pkg.version) return pkg.version;
    } catch {
      // not this folder
    }
  }
  return 'unknown';
}

export function buildProgram(io: CliIO, setExit: (code: number) => void, argv: string[] = process.argv): Command {
  const program = new Command('atelier')
    .description('Durable batch image editing on Temporal: a dataset of images + instructions in, edited images and a results table out.')
    // One line of advice after a usage error, not the command's whole help (edit's is over 100 lines,
    // which buried the one line that says what was wrong).
    .showHelpAfterError('(add --help for the options)')
    .version(packageVersion(), '-V, --version', 'the installed version of Atelier')
    .exitOverride();
  for (const [heading, registers] of COMMANDS) {
    program.commandsGroup(heading);
    for (const register of registers) register(program, { io, setExit, argv });
  }
  return program;
}

export async function main(argv: string[]): Promise<number> {
  tracePhase('imports done');
  const io = makeIO();
  let exitCode: number = ExitCodes.ok;
  const program = buildProgram(io, (code) => (exitCode = code), argv);
  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      // commander has printed the problem (or the help/version text) already.
      return e.exitCode === 0 ? ExitCodes.ok : ExitCodes.usage;
    }
    if (err instanceof UsageError) {
      io.err(`error: ${err.message}`);
      return ExitCodes.usage;
    }
    io.err(`error: ${(err as Error)?.stack ?? String(err)}`);
    // "Workflow execution failed" says nothing by itself: name the causes (activity, then its error).
    for (
      let cause = (err as { cause?: unknown })?.cause, depth = 0;
      cause && depth < 4;
      cause = (cause as { cause?: unknown }).cause, depth++
    ) {
      const c = cause as { name?: string; message?: string; type?: string };
      io.err(`  caused by ${c.type ?? c.name ?? 'Error'}: ${c.message ?? String(cause)}`);
    }
    return ExitCodes.usage;
  }
}
