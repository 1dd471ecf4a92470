// Planning benchmark: how fast, and in how much memory, a large dataset becomes a plan.
// Prints rows/s and peak RSS for CSV and JSONL inputs next to a baseline measured in the same run
// (a bare csv-parse / line-split pass over the same file, which is the floor for any planner).
//   npm run build && node dist/bench/planning.js [rows]
import { createReadStream, writeFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parse } from 'csv-parse';
import { timePlanning } from './harness';

export interface PlanningFigures {
  format: 'csv' | 'jsonl';
  rows: number;
  planSeconds: number;
  baselineSeconds: number;
  /** Peak RSS growth during planning, MB. */
  peakRssGrowthMb: number;
}

function writeDataset(dir: string, format: 'csv' | 'jsonl', rows: number): string {
  const path = join(dir, `data.${format}`);
  const lines: string[] = format === 'csv' ? ['index,input_images,instruction,meta'] : [];
  for (let i = 0; i < rows; i++) {
    const instruction = `Replace the background of image ${i} with a quiet beach at sunset, keep the subject`;
    if (format === 'csv') lines.push(`${i},images/${i % 997}.png,"${instruction}","{""k"": ${i}}"`);
    else
      lines.push(JSON.stringify({ index: i, images: [`images/${i % 997}.png`], conversations: [{ role: 'user', content: instruction }] }));
  }
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

async function baseline(path: string, format: 'csv' | 'jsonl'): Promise<number> {
  const start = performance.now();
  let n = 0;
  if (format === 'csv') {
    for await (const _ of createReadStream(path).pipe(parse({ columns: true }))) n += 1;
  } else {
    for await (const line of createInterface({ input: createReadStream(path) })) if (JSON.parse(line)) n += 1;
  }
  if (n === 0) throw new Error('baseline read no rows');
  return (performance.now() - start) / 1000;
}

export async function measurePlanning(format: 'csv' | 'jsonl', rows: number): Promise<PlanningFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'atelier-bench-plan-'));
  try {
    const inputPath = writeDataset(dir, format, rows);
    const baselineSeconds = await baseline(inputPath, format);
    const { planSeconds, peakRssGrowthMb } = await timePlanning(`bench-${format}`, inputPath, join(dir, 'out'), rows);
    return { format, rows, planSeconds, baselineSeconds, peakRssGrowthMb };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const rows = Number(process.argv[2] ?? 100_000);
  for (const format of ['csv', 'jsonl'] as const) {
    const f = await measurePlanning(format, rows);
    console.log(
      `${format}: ${f.rows} rows planned in ${f.planSeconds.toFixed(2)} s (${Math.round(f.rows / f.planSeconds)} rows/s); ` +
        `bare parse ${f.baselineSeconds.toFixed(2)} s; plan/parse time ratio ${(f.planSeconds / f.baselineSeconds).toFixed(2)}; ` +
        `peak RSS growth ${f.peakRssGrowthMb.toFixed(0)} MB`,
    );
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
