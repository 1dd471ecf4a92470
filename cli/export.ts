import { resolve } from 'node:path';
import { UsageError } from '../lib/shared/errors';
import { describeOnly, exportHf, parseExportOnly, type UnreadableInput } from '../lib/export/hfExport';
import { ExitCodes, type CliIO } from './io';
import { resolveRunOutputDir } from './runTarget';

export interface ExportOptions {
  format: string;
  out: string;
  only?: string;
  stateDir: string;
  shardSizeMb?: number;
  imageCacheDir?: string;
}

/** `atelier export <run-id | output-dir> --format hf|arrow|webdataset --out DIR`: the run as a dataset. */
export async function runExport(target: string, options: ExportOptions, io: CliIO): Promise<number> {
  if (options.format !== 'hf' && options.format !== 'arrow' && options.format !== 'webdataset')
    throw new UsageError(
      `--format ${options.format}: choose hf (Parquet shards with embedded images, as the Hub holds them), arrow (a datasets save_to_disk folder) or webdataset (.tar shards)`,
    );
  const format = options.format;
  const only = parseExportOnly(options.only);
  const outputDir = await resolveRunOutputDir(target, options.stateDir);
  const out = resolve(options.out);
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
    `warning: ${rows.length} row${rows.length === 1 ? '' : 's'} exported without ${rows.length === 1 ? 'its' : 'their'} input image (it could not be read, or is not an image; the row's other columns are kept):`,
  );
  for (const r of rows.slice(0, shown)) io.err(`  row ${r.index} (${r.where}): ${r.message}`);
  if (rows.length > shown) io.err(`  ... and ${rows.length - shown} more`);
}
