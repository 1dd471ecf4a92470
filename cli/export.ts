import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { UsageError } from '../lib/shared/errors';
import type * as HfExport from '../lib/export/hfExport';
import type { HfExportResult, UnreadableInput } from '../lib/export/hfExport';
import { readPlanMeta } from '../lib/run/plan';
import type { Command } from 'commander';
import { ExitCodes, type CliIO, type CommandContext } from './io';
import { addExamples, addOptions, Opt, positiveInt, type OptionsOf } from './options';
import { INPUT, OUT, STATE } from './optionGroups';
import { resolveRunOutputDir } from './runTarget';

export const EXPORT_OPTIONS = {
  /** The dataset's folder (`--out`, the one name of an output folder); optional with --push-to-hub. */
  outputDir: OUT.outputDir.optional(),
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
  pushToHub: Opt.text(
    '--push-to-hub <org/name>',
    'with --format hf: push the export to this Hub dataset repo in one commit (HF_TOKEN, HF_ENDPOINT); --out is then optional',
  ).group('Hub:'),
  private: Opt.flag('--private', 'with --push-to-hub: create the repo private').group('Hub:'),
  revision: Opt.text('--revision <branch>', 'with --push-to-hub: the branch to commit to (made from main if missing; default main)').group(
    'Hub:',
  ),
  ...STATE,
};

export type ExportOptions = OptionsOf<typeof EXPORT_OPTIONS>;

// The exporters (apache-arrow, the Hub's client, yaml: ~0.1 s of CPU) load when `export` runs, not
// with every command.
const exporters = async () => ({ ...(await import('../lib/export/hfExport')), ...(await import('../lib/export/hubPush')) });

/** `atelier export <run-id | output-dir> --format hf|arrow|webdataset --out DIR`: the run as a dataset. */
export async function runExport(target: string, options: ExportOptions, io: CliIO): Promise<number> {
  if (options.format !== 'hf' && options.format !== 'arrow' && options.format !== 'webdataset')
    throw new UsageError(
      `--format ${options.format}: choose hf (Parquet shards with embedded images, as the Hub holds them), arrow (a datasets save_to_disk folder) or webdataset (.tar shards)`,
    );
  const format = options.format;
  const { parseExportOnly, parseHubRepoId } = await exporters();
  const only = parseExportOnly(options.only);
  const repo = options.pushToHub !== undefined ? parseHubRepoId(options.pushToHub) : undefined;
  if (repo && format !== 'hf') throw new UsageError(`--push-to-hub needs --format hf (the Hub's Parquet layout), not ${format}`);
  if (!repo && (options.private || options.revision !== undefined))
    throw new UsageError(`${options.private ? '--private' : '--revision'} goes with --push-to-hub <org>/<name>`);
  if (!repo && options.outputDir === undefined) throw new UsageError("required option '--out <dir>' not specified (or give --push-to-hub)");
  const outputDir = await resolveRunOutputDir(target, options.stateDir);
  // Without --out, a push goes through a temporary folder that is removed afterwards.
  const temp = options.outputDir === undefined ? await mkdtemp(join(tmpdir(), 'atelier-push-')) : undefined;
  try {
    const out = temp ? join(temp, 'export') : resolve(options.outputDir!);
    const result = await exportTo(format, outputDir, out, only, options, io, temp === undefined);
    if (repo) await push(repo, outputDir, result, options, io);
  } finally {
    if (temp) await rm(temp, { recursive: true, force: true });
  }
  return ExitCodes.ok;
}

async function exportTo(
  format: 'hf' | 'arrow' | 'webdataset',
  outputDir: string,
  out: string,
  only: ReturnType<typeof HfExport.parseExportOnly>,
  options: ExportOptions,
  io: CliIO,
  kept: boolean,
): Promise<HfExportResult> {
  const { describeOnly, exportHf } = await exporters();
  const result = await exportHf({
    format,
    outputDir,
    out,
    only,
    ...(options.shardSizeMb ? { shardBytes: options.shardSizeMb * 1024 * 1024 } : {}),
    ...(options.imageCacheDir ? { imageCacheDir: options.imageCacheDir } : {}),
  });
  reportUnreadable(result.unreadableInputs, io);
  if (!kept) {
    io.err(
      `exported ${result.rows} rows (${only === 'all' ? 'every row' : `--only ${describeOnly(only)}`}) into ${result.shards.length} shard(s)`,
    );
    return result;
  }
  io.out(
    `exported ${result.rows} rows (${only === 'all' ? 'every row' : `--only ${describeOnly(only)}`}) from ${outputDir} into ${result.shards.length} shard(s) under ${format === 'hf' ? `${out}/data` : out}`,
  );
  io.out(`columns: ${result.columns.map((c) => c.name).join(', ')}`);
  const last = String(result.shards.length - 1).padStart(6, '0');
  io.out(
    format === 'hf'
      ? `load it with: python -c 'import datasets; print(datasets.load_dataset("${out}", split="train"))'`
      : format === 'arrow'
        ? `load it with: python -c 'import datasets; print(datasets.load_from_disk("${out}"))'`
        : `iterate it with: python -c 'import webdataset as wds; print(next(iter(wds.WebDataset("${out}/shard-{000000..${last}}.tar", shardshuffle=False))).keys())'`,
  );
  return result;
}

/** `--push-to-hub`: the exported shards and a dataset card, in one commit; progress on stderr. */
async function push(repo: string, outputDir: string, result: HfExportResult, options: ExportOptions, io: CliIO): Promise<void> {
  const meta = await readPlanMeta(outputDir);
  const { describeOnly, parseExportOnly, pushToHub } = await exporters();
  const only = parseExportOnly(options.only);
  const rows = `${result.rows} row${result.rows === 1 ? '' : 's'}${only === 'all' ? '' : ` (--only ${describeOnly(only)})`}`;
  // Only an hf:// input is named: a local path says nothing to readers and may say too much.
  const from = meta.inputPath.startsWith('hf://') ? `, edited from \`${meta.inputPath}\`` : '';
  const pushed = await pushToHub({
    repo,
    ...(options.revision !== undefined ? { revision: options.revision } : {}),
    ...(options.private ? { private: true } : {}),
    shards: result.shards,
    columns: result.columns,
    rows: result.rows,
    title: `Atelier export of run ${meta.runId}: ${rows}`,
    cardBody: [
      `# ${repo}`,
      '',
      `Image edits made with Atelier (run \`${meta.runId}\`): ${rows}${from}.`,
      '',
      `Columns: ${result.columns.map((c) => `\`${c.name}\``).join(', ')}.`,
      '',
      '```python',
      'import datasets',
      `ds = datasets.load_dataset("${repo}", split="train")`,
      '```',
      '',
    ].join('\n'),
    onProgress: io.err,
  });
  io.out(
    `pushed ${rows} to dataset ${pushed.repo}@${pushed.branch} in commit ${pushed.commit}${
      pushed.deleted.length ? ` (${pushed.deleted.length} file(s) of the previous push removed)` : ''
    }: ${pushed.url}`,
  );
  io.out(
    `load it with: python -c 'import datasets; print(datasets.load_dataset("${pushed.repo}"${pushed.branch === 'main' ? '' : `, revision="${pushed.branch}"`}, split="train"))'`,
  );
}

/** Rows whose input images could not be read went out without them: say how many and which (the first ten). */
function reportUnreadable(rows: UnreadableInput[], io: CliIO): void {
  if (rows.length === 0) return;
  const shown = 10;
  io.err(
    `warning: ${rows.length} row${rows.length === 1 ? '' : 's'} exported without ${rows.length === 1 ? 'its' : 'their'} input image (it could not be read, or is not an image; the row's other columns are kept):`,
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
    ['HF_TOKEN=hf_... atelier export out --only accepted --push-to-hub acme/edits', 'accepted rows to a Hub dataset repo, in one commit'],
  ]);
}
