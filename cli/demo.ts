import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { runEdit, type EditOptions } from './edit';
import type { CliIO, CommandContext } from './io';
import { addExamples, addOptions, type OptionsOf } from './options';
import { BATCH, EXECUTION, GEMINI_PARAMS, INPUT, MODEL, OPENAI_PARAMS, OUTPUT, ROWS, RUN_CONTROL, STATE, WORKERS } from './optionGroups';

/**
 * `atelier demo`: the example dataset end to end. With OPENAI_API_KEY set it calls OpenAI for real
 * (and costs money); without it, it starts the bundled stand-in server on loopback and points the
 * in-process workers at it, saying so plainly.
 */
export const DEMO_OPTIONS = {
  // The package's example and a fresh temp folder unless given (demoPaths).
  ...INPUT,
  input: INPUT.input.optional(),
  ...OUTPUT,
  outputDir: OUTPUT.outputDir.optional(),
  ...ROWS,
  // OpenAI only (its stand-in when no key is set): no backend choice, no diffusion parameters.
  model: MODEL.model.default('gpt-image-2'),
  size: MODEL.size,
  quality: MODEL.quality,
  baseUrl: MODEL.baseUrl,
  promptEnhance: MODEL.promptEnhance,
  promptEnhanceImages: MODEL.promptEnhanceImages,
  ...OPENAI_PARAMS,
  ...GEMINI_PARAMS,
  ...BATCH,
  ...WORKERS,
  ...EXECUTION,
  maxCost: RUN_CONTROL.maxCost,
  ...STATE,
};

export type DemoOptions = OptionsOf<typeof DEMO_OPTIONS>;

/**
 * Where the demo reads and writes unless told: the package's own example (found from anywhere),
 * and a fresh folder under the system temp dir for the outputs and the server state, so trying it
 * writes nothing into the folder it was run from (a checkout, say).
 */
export function demoPaths(options: DemoOptions, defaultStateDir: boolean): EditOptions {
  const scratch = options.outputDir && !defaultStateDir ? undefined : mkdtempSync(join(tmpdir(), 'atelier-demo-'));
  return {
    ...options,
    backend: 'openai',
    input: options.input ?? packageExample(),
    outputDir: options.outputDir ?? join(scratch!, 'out'),
    stateDir: defaultStateDir ? join(scratch!, 'state') : options.stateDir,
  };
}

/** examples/edits.csv of the package: beside cli/ when run from the sources, above dist/ when built. */
function packageExample(): string {
  const candidates = [join(__dirname, '..', 'examples', 'edits.csv'), join(__dirname, '..', '..', 'examples', 'edits.csv')];
  return candidates.find((path) => existsSync(path)) ?? candidates[0]!;
}

export async function runDemo(given: DemoOptions, io: CliIO, defaultStateDir = false): Promise<number> {
  const options = demoPaths(given, defaultStateDir);
  io.err(`demo: outputs in ${options.outputDir}`);
  if (process.env.OPENAI_API_KEY) {
    io.err(
      `OPENAI_API_KEY is set: the demo calls ${process.env.OPENAI_BASE_URL || 'the OpenAI API'} with model ${options.model} (billed to your account).`,
    );
    return runEdit({ ...options, withWorkers: true }, io);
  }
  // The stand-in (and sharp, which it draws with) loads only when the demo runs it.
  const { startOpenAIStandin } = await import('../activities/providers/openai/standin');
  const standin = await startOpenAIStandin({ latencyMs: 300 });
  io.err(
    [
      'No OPENAI_API_KEY set: running against the bundled stand-in OpenAI server at ' + standin.baseURL + '.',
      'Its "edits" are the input images colour-inverted; nothing leaves this machine.',
      'Set OPENAI_API_KEY to run the same demo against OpenAI.',
    ].join('\n'),
  );
  // In-process workers read these from this process's environment, exactly as a real worker would.
  process.env.OPENAI_BASE_URL = standin.baseURL;
  process.env.OPENAI_API_KEY = 'sk-standin-demo-key';
  try {
    return await runEdit({ ...options, withWorkers: true }, io);
  } finally {
    delete process.env.OPENAI_API_KEY;
    delete process.env.OPENAI_BASE_URL;
    await standin.close();
  }
}

export function registerDemo(program: Command, { io, setExit }: CommandContext): void {
  const cmd = program
    .command('demo')
    .description(
      "run the example dataset (the package's examples/edits.csv unless --input) end to end, against the bundled stand-in provider when OPENAI_API_KEY is unset; outputs go to a new temp folder unless --out is given",
    );
  addOptions(cmd, DEMO_OPTIONS).action(async (opts: DemoOptions, self: Command) =>
    setExit(await runDemo(opts, io, self.getOptionValueSource('stateDir') === 'default')),
  );
  addExamples(cmd, [
    ['atelier demo', 'the bundled example against the stand-in (no key needed), outputs in a temp folder'],
    ['OPENAI_API_KEY=sk-... atelier demo --out demo-out', 'the same against OpenAI (billed), outputs in ./demo-out'],
  ]);
}
