// WebDataset planning benchmark: planning 100k samples spread over 100 `.tar` shards (a brace
// pattern) with the real planning activity, sampling the process's RSS every 20 ms. The shards are
// streamed a member at a time, so peak RSS growth should stay flat however many shards there are;
// it is printed next to the shards' total size.
//   npm run build && node --expose-gc dist/bench/webdatasetPlanning.js [samples] [shards]
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TarWriter } from '../lib/dataset/tar';
import { patternedPngs, timePlanning } from './harness';

export interface WebDatasetPlanningFigures {
  samples: number;
  shards: number;
  shardBytes: number;
  planSeconds: number;
  peakRssGrowthMb: number;
}

export async function measureWebDatasetPlanning(samples: number, shards: number): Promise<WebDatasetPlanningFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'atelier-bench-wds-'));
  try {
    const pngs = await patternedPngs(256, 24);
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
    const { planSeconds, peakRssGrowthMb } = await timePlanning(
      'bench-wds',
      join(dir, `shard-{000000..${last}}.tar`),
      join(dir, 'out'),
      samples,
    );
    return { samples, shards, shardBytes, planSeconds, peakRssGrowthMb };
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
