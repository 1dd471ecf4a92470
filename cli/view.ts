import type { Command } from 'commander';
import { ExitCodes, type CliIO, type CommandContext } from './io';
import { addExamples, addOptions, type OptionsOf } from './options';
import { PORT, STATE } from './optionGroups';
import { resolveRunOutputDir, runIdOf } from './runTarget';

export const VIEW_OPTIONS = { ...PORT, ...STATE };

export type ViewOptions = OptionsOf<typeof VIEW_OPTIONS>;

/** `atelier view <run-id | output-dir>`: serves the run's viewer on loopback until Ctrl-C. */
export async function runView(target: string, options: ViewOptions, io: CliIO): Promise<number> {
  const outputDir = await resolveRunOutputDir(target, options.stateDir);
  // The viewer's server (and sharp, for thumbnails) loads when `view` runs, not with every command.
  const { startViewer } = await import('../web/server');
  const viewer = await startViewer({ outputDir, runId: await runIdOf(outputDir), ...(options.port ? { port: options.port } : {}) });
  io.out(`viewer of ${outputDir}: ${viewer.url}`);
  io.out('open it in a browser; Ctrl-C stops the viewer (the run, if one is going, goes on)');
  await io.interrupted;
  await viewer.close();
  return ExitCodes.ok;
}

export function registerView(program: Command, { io, setExit }: CommandContext): void {
  const cmd = program
    .command('view <run>')
    .description(
      'a local web page of a run (its id or its output folder; live while it runs): before/after thumbnails, search, sort and filters, compare (slider or overlay) and zoom, accept/reject marks with reasons, one at a time or for everything a filter shows',
    );
  addOptions(cmd, VIEW_OPTIONS).action(async (target: string, opts: ViewOptions) => setExit(await runView(target, opts, io)));
  addExamples(cmd, [
    ['atelier view out', 'the run whose output folder is ./out, on a free loopback port'],
    ['atelier view atelier-edits-1a2b3c4d5e6f --port 8080', 'by run id, on port 8080'],
  ]);
}
