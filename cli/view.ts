import { parse } from 'csv-parse/sync';
import type { Command } from 'commander';
import type { WriteResultsArgs } from '../activities/resultsTables';
import { findRun } from '../lib/run/runRegistry';
import { ExitCodes, type CliIO, type CommandContext } from './io';
import { InvalidArgumentError } from 'commander';
import { addExamples, addOptions, inGroup, Opt, type Parser, type OptionsOf } from './options';
import { PORT, STATE } from './optionGroups';
import { resolveRunOutputDir, runIdOf } from './runTarget';

/** A judge score, on VIEScore's 0-10 scale. */
const judgeScore: Parser<number> = (value, flag) => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 10) throw new InvalidArgumentError(`${flag} must be a score from 0 to 10`);
  return n;
};

export const VIEW_OPTIONS = {
  ...inGroup('Review:', {
    conflictBelow: Opt.parsed(
      '--conflict-below <x>',
      'also print the link that opens the viewer on the rows a person accepted but the judge scored below x (0-10; the page flags them below 5 unless told)',
      judgeScore,
    ),
  }),
  ...PORT,
  ...STATE,
};

export type ViewOptions = OptionsOf<typeof VIEW_OPTIONS>;

type ResultsSettings = Omit<WriteResultsArgs, 'runId' | 'outputDir' | 'changedRows'>;

/**
 * Where the run's results tables are and how they are written, so marks reach them: from the state
 * dir's record of the run (--output-csv, --prompt-enhance), else the tables in the output dir as
 * they are (their header says whether they have the enhanced instruction). Undefined when neither
 * says: no table is written where none was asked for.
 */
async function resultsSettings(outputDir: string, runId: string, stateDir: string): Promise<ResultsSettings | undefined> {
  const known = await findRun(stateDir, runId);
  if (known && known.input.outputDir === outputDir)
    return {
      ...(known.input.outputCsv ? { outputCsv: known.input.outputCsv } : {}),
      ...(known.input.promptEnhance ? { instructionEnhanced: true } : {}),
    };
  const { resultsTargets } = await import('../activities/resultsTables');
  const target = resultsTargets({ outputDir });
  const bytes = await target.storage.read(target.csv).catch(() => undefined);
  if (!bytes) return undefined;
  const [header] = parse(bytes.subarray(0, bytes.indexOf(10) + 1 || undefined), { to_line: 1 }) as string[][];
  return header?.includes('instruction_enhanced') ? { instructionEnhanced: true } : {};
}

/** `atelier view <run-id | output-dir>`: serves the run's viewer on loopback until Ctrl-C. */
export async function runView(target: string, options: ViewOptions, io: CliIO): Promise<number> {
  const outputDir = await resolveRunOutputDir(target, options.stateDir);
  // The viewer's server (and sharp, for thumbnails) and the results tables' writer load when `view`
  // runs, not with every command.
  const { startViewer } = await import('../web/server');
  const { resultsTargets } = await import('../activities/resultsTables');
  const runId = await runIdOf(outputDir);
  const results = await resultsSettings(outputDir, runId, options.stateDir);
  const viewer = await startViewer({
    outputDir,
    runId,
    ...(options.port ? { port: options.port } : {}),
    ...(results ? { results } : {}),
    onResultsError: (err) => io.err(`the results tables were not rewritten with the marks: ${(err as Error).message}`),
  });
  io.out(`viewer of ${outputDir}: ${viewer.url}`);
  // The page keeps its filter in the address: this one opens on the conflicts at that threshold.
  if (options.conflictBelow !== undefined)
    io.out(
      `accepted rows the judge scored below ${options.conflictBelow}: ${viewer.url}#review=conflict&conflictBelow=${options.conflictBelow}`,
    );
  const tables = results ? resultsTargets({ outputDir, ...results }) : undefined;
  io.out(
    tables
      ? `marks are kept in ${outputDir}/.atelier/review/ and written to ${tables.storage.describe(tables.csv)} (and .jsonl, .parquet) as they are made`
      : `marks are kept in ${outputDir}/.atelier/review/; no results.csv here and the state dir ${options.stateDir} does not know the run, so the tables get them at the run's next results write (give --state-dir to write them now)`,
  );
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
    ['atelier view out --conflict-below 6', 'also a link to the rows accepted in the viewer that the judge scored below 6'],
  ]);
}
