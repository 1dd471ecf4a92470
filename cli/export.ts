import { resolve } from 'node:path';
import { UsageError } from '../lib/shared/errors';
import { describeOnly, exportHf, parseExportOnly, type UnreadableInput } from '../lib/export/hfExport';
import type { Command } from 'commander';
import { ExitCodes, type CliIO, type CommandContext } from './io';
import { addExamples, addOptions, Opt, positiveInt, type OptionsOf } from './options';
import { INPUT, OUT, STATE } from './optionGroups';
import { resolveRunOutputDir } from './runTarget';

export const EXPORT_OPTIONS = {
  /** The dataset's folder (`--out`, the one name of an output folder). */
  ...OUT,
  format: Opt.text('--format <format>', 'hf (Parquet shards, load_dataset), arrow (datasets.load_from_disk) or webdataset (.tar shards)')
    .default('hf')
    .group('Output:'),
  only: Opt.text(
    '--only <rows>',
    'ok (rows with outputs), accepted (ok rows accepted in `atelier view`) or score>=X (ok rows `atelier judge` scored X or more); default every row',
  ).group('Row selection:'),
  shardSizeMb: Opt.parsed('--shard-size-mb <mb>', 'start a new shard past this many MB of images', positiveInt)
    .default(256)
    .group('Output:'),
  imageCacheDir: INPUT.imageCacheDir,
  ...STATE,
};

export type ExportOptions = OptionsOf<typeof EXPORT_OPTIONS>;

/** `atelier export <run-id | output-dir> --format hf|arrow|webdataset --out DIR`: the run as a dataset. */
export async function runExport(target: string, options: ExportOptions, io: CliIO): Promise<number> {
  if (options.format !== 'hf' && options.format !== 'arrow' && options.format !== 'webdataset')
    throw new UsageError(
      `--format ${options.format}: choose hf (Parquet shards with embedded images, as the Hub holds them), arrow (a datasets save_to_disk folder) or webdataset (.tar shards)`,
    );
  const format = options.format;
  const only = parseExportOnly(options.only);
  const outputDir = await resolveRunOutputDir(target, options.stateDir);
  const out = resolve(options.outputDir);
  const result = await exportHf({
    format,
    outputDir,
    out,
    only,
    ...(options.shardSizeMb ? { shardBytes: options.shardSizeMb * 1024 * 1024 } : {}),
    ...(options.imageCacheDir ? { imageCacheDir: options.imageCacheDir } : {}),
  });
  io.out(
    `exported ${result.rows} rows (${only === 'all' ? 'every row' : `--only ${describeOnly(only)}`}) from ${outputDir} into ${result.shards.length} shard(s) under ${format === 'hf' ? `${out}/data` : out}`,
  );
  io.out(`columns: ${result.columns.map((c) => c.name).join(', ')}`);
  reportUnreadable(result.unreadableInputs, io);
  const last = String(result.shards.length - 1).padStart(6, '0');
  io.out(
    format === 'hf'
      ? `load it with: python -c 'import datasets; print(datasets.load_dataset("${out}", split="train"))'`
      : format === 'arrow'
        ? `load it with: python -c 'import datasets; print(datasets.load_from_disk("${out}"))'`
        : `iterate it with: python -c 'import webdataset as wds; print(next(iter(wds.WebDataset("${out}/shard-{000000..${last}}.tar", shardshuffle=False))).keys())'`,
  );
  return ExitCodes.ok;
}

/** Rows whose input images could not be read went out without them: say how many and which (the first ten). */
function reportUnreadable(rows: UnreadableInput[], io: CliIO): void {
  if (rows.length === 0) return;
  const shown = 10;
  io.err(
    `warning: ${rows.length} row${rows.length === 1 ? '' : 's'} exported without ${rows.length === 1 ? 'its' : 'their'} input image (it could not be read; the row's other columns are kept):`,
  );
  for (const r of rows.slice(0, shown)) io.err(`  row ${r.index} (${r.where}): ${r.message}`);
  if (rows.length > shown) io.err(`  ... and ${rows.length - shown} more`);
}

export function registerExport(program: Command, { io, setExit }: CommandContext): void {
  const cmd = program
    .command('export <run>')
    .description(
      'publish a run (its id or its output folder) as a dataset: --format hf writes Parquet shards (images embedded) that Hugging Face datasets loads as they are; arrow a save_to_disk folder; webdataset .tar shards',
    );
  addOptions(cmd, EXPORT_OPTIONS).action(async (target: string, opts: ExportOptions) => setExit(await runExport(target, opts, io)));
  addExamples(cmd, [
    ['atelier export out --out dataset', 'every row of the run in ./out as Parquet shards under dataset/data/'],
    ['atelier export atelier-edits-1a2b3c4d5e6f --out dataset --only accepted', 'by run id: only rows accepted in `atelier view`'],
    ['atelier export out --out dataset --only score>=7 --format webdataset', 'rows the judge scored 7 or more, as .tar shards'],
  ]);
}
