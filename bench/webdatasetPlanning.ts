// WebDataset planning benchmark: planning 100k samples spread over 100 `.tar` shards (a brace
// pattern) with the real planning activity, sampling the process's RSS every 20 ms. The shards are
// streamed a member at a time, so peak RSS growth should stay flat however many shards there are;
// it is printed next to the shards' total size.
//   npm run build && node --expose-gc dist/bench/webdatasetPlanning.js [samples] [shards]
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { createOrchestrationActivities } from '../activities/orchestration';
import { TarWriter } from '../lib/dataset/tar';
import type { DatasetWorkflowInput } from '../lib/shared/types';

export interface WebDatasetPlanningFigures {
  samples: number;
  shards: number;
  shardBytes: number;
  planSeconds: number;
  peakRssGrowthMb: number;
}

async function images(n: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const raw = Buffer.alloc(24 * 24 * 3);
    for (let j = 0; j < raw.length; j++) raw[j] = (i * 131 + j * 17 + ((j * j) % 251)) & 0xff;
    out.push(
      await sharp(raw, { raw: { width: 24, height: 24, channels: 3 } })
        .png()
        .toBuffer(),
    );
  }
  return out;
}

export async function measureWebDatasetPlanning(samples: number, shards: number): Promise<WebDatasetPlanningFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'atelier-bench-wds-'));
  try {
    const pngs = await images(256);
    const per = Math.ceil(samples / shards);
    const mtime = new Date();
    let shardBytes = 0;
    for (let s = 0; s < shards; s++) {
      const path = join(dir, `shard-${String(s).padStart(6, '0')}.tar`);
      const tar = new TarWriter(path);
      for (let i = s * per; i < Math.min(samples, (s + 1) * per); i++) {
        const key = String(i).padStart(8, '0');
        await tar.add(`${key}.png`, pngs[i % pngs.length]!, mtime);
        await tar.add(`${key}.txt`, Buffer.from(`Replace the background of image ${i} with a quiet beach at sunset`), mtime);
        await tar.add(`${key}.json`, Buffer.from(JSON.stringify({ source_id: i, license: 'cc-by-4.0' })), mtime);
      }
      await tar.finish();
      shardBytes += statSync(path).size;
    }
    const last = String(shards - 1).padStart(6, '0');
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    let peak = rssBefore;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    const input: DatasetWorkflowInput = {
      runId: 'bench-wds',
      inputPath: join(dir, `shard-{000000..${last}}.tar`),
      outputDir: join(dir, 'out'),
      backend: 'openai',
      model: 'bench',
      params: {},
      instructionKey: 'instruction',
      numImages: 1,
      encoding: { jpegQuality: 95, webpQuality: 95 },
      window: 16,
      retry: { maxAttempts: 1, initialIntervalMs: 1000, maximumIntervalMs: 1000 },
    };
    const start = performance.now();
    const result = await createOrchestrationActivities().planRun(input);
    const planSeconds = (performance.now() - start) / 1000;
    clearInterval(sampler);
    peak = Math.max(peak, process.memoryUsage().rss);
    if (result.totalRows !== samples) throw new Error(`planned ${result.totalRows} samples, expected ${samples}`);
    return { samples, shards, shardBytes, planSeconds, peakRssGrowthMb: (peak - rssBefore) / 2 ** 20 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const f = await measureWebDatasetPlanning(Number(process.argv[2] ?? 100_000), Number(process.argv[3] ?? 100));
  console.log(
    `webdataset planning of ${f.samples} samples over ${f.shards} shards (${(f.shardBytes / 2 ** 20).toFixed(0)} MB of tar): ` +
      `${f.planSeconds.toFixed(1)} s (${Math.round(f.samples / f.planSeconds)} samples/s); peak RSS growth ${f.peakRssGrowthMb.toFixed(0)} MB ` +
      `(RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MB at the end)`,
  );
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
