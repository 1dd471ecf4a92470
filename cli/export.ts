import { resolve } from 'node:path';
import { UsageError } from '../lib/shared/errors';
import { describeOnly, exportHf, parseExportOnly } from '../lib/export/hfExport';
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

/** `atelier export <run-id | output-dir> --format hf --out DIR`: the run as a Hugging Face dataset. */
export async function runExport(target: string, options: ExportOptions, io: CliIO): Promise<number> {
  if (options.format !== 'hf')
    throw new UsageError(
      `--format ${options.format}: the only format is hf (Parquet shards with embedded images, as Hugging Face datasets writes them)`,
    );
  const only = parseExportOnly(options.only);
  const outputDir = await resolveRunOutputDir(target, options.stateDir);
  const out = resolve(options.out);
  const result = await exportHf({
    outputDir,
    out,
    only,
    ...(options.shardSizeMb ? { shardBytes: options.shardSizeMb * 1024 * 1024 } : {}),
    ...(options.imageCacheDir ? { imageCacheDir: options.imageCacheDir } : {}),
  });
  io.out(
    `exported ${result.rows} rows (${only === 'all' ? 'every row' : `--only ${describeOnly(only)}`}) from ${outputDir} into ${result.shards.length} shard(s) under ${out}/data`,
  );
  io.out(`columns: ${result.columns.map((c) => c.name).join(', ')}`);
  io.out(`load it with: python -c 'import datasets; print(datasets.load_dataset("${out}", split="train"))'`);
  return ExitCodes.ok;
}
