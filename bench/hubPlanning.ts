// hf:// planning benchmark: what planning a 100k-row Parquet repo on the Hub costs in bytes read.
// A repo laid out as `datasets` lays one out (a train split of 100k rows in 4 shards, a test split,
// images embedded, a card with configs) is uploaded to the Hub stand-in with @huggingface/hub;
// the real planning activity then plans `hf://datasets/bench/edits` through HF_ENDPOINT. Prints
// the bytes the stand-in served against the repo's size and the train split's size, and the number
// of HTTP Range requests. Planning reads every column of the split it plans (the plan keeps every
// column) and nothing else: no other split, no file twice.
//   npm run build && node dist/bench/hubPlanning.js [rows]
import { openAsBlob } from 'node:fs';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { uploadFiles } from '@huggingface/hub';
import { ParquetTableWriter, type TableColumn } from '../lib/export/parquetTable';
import { startHubStandin } from '../standins/hub';
import { patternedPngs, timePlanning } from './harness';

const TOKEN = 'hf_bench_planning_0123456789';
const COLUMNS: TableColumn[] = [
  { name: 'image', kind: 'image' },
  { name: 'instruction', kind: 'string' },
  { name: 'source_id', kind: 'int' },
];
/** Rows per row group, as `datasets` writes image datasets (it caps groups of image rows small). */
const GROUP = 500;

async function writeShard(path: string, first: number, rows: number, pngs: Buffer[]): Promise<void> {
  const writer = new ParquetTableWriter(path, COLUMNS, { huggingface: true });
  for (let start = 0; start < rows; start += GROUP) {
    const batch = [];
    for (let i = start; i < Math.min(rows, start + GROUP); i++) {
      const n = first + i;
      batch.push({
        image: { bytes: pngs[n % pngs.length]!, path: `${n}.png` },
        instruction: `Replace the background of image ${n} with a quiet beach at sunset, keep the subject`,
        source_id: n,
      });
    }
    await writer.write(batch, GROUP);
  }
  await writer.finish();
}

const CARD = `---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
# bench/edits
`;

export interface HubPlanningFigures {
  rows: number;
  repoBytes: number;
  trainBytes: number;
  bytesRead: number;
  rangeRequests: number;
  planSeconds: number;
}

export async function measureHubPlanning(rows: number): Promise<HubPlanningFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'atelier-bench-hub-'));
  const hub = await startHubStandin({ tokens: { [TOKEN]: 'bench' } });
  const saved = { endpoint: process.env.HF_ENDPOINT, token: process.env.HF_TOKEN };
  try {
    const pngs = await patternedPngs(256, 16);
    const shards = 4;
    const files: Array<{ path: string; local: string }> = [];
    for (let s = 0; s < shards; s++) {
      const local = join(dir, `train-${s}.parquet`);
      const per = Math.ceil(rows / shards);
      await writeShard(local, s * per, Math.min(per, rows - s * per), pngs);
      files.push({ path: `data/train-0000${s}-of-0000${shards}.parquet`, local });
    }
    const test = join(dir, 'test.parquet');
    await writeShard(test, rows, Math.ceil(rows / 10), pngs);
    files.push({ path: 'data/test-00000-of-00001.parquet', local: test });
    const common = { hubUrl: hub.baseURL, accessToken: TOKEN };
    const res = await fetch(`${hub.baseURL}/api/repos/create`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'dataset', name: 'edits', organization: 'bench' }),
    });
    if (!res.ok) throw new Error(`create: ${res.status}`);
    await uploadFiles({
      repo: { type: 'dataset', name: 'bench/edits' },
      files: [
        ...(await Promise.all(files.map(async (f) => ({ path: f.path, content: await openAsBlob(f.local) })))),
        { path: 'README.md', content: new Blob([CARD]) },
      ],
      ...common,
    });
    const trainBytes = files.filter((f) => f.path.includes('/train-')).reduce((n, f) => n + statSync(f.local).size, 0);
    const repoBytes = files.reduce((n, f) => n + statSync(f.local).size, 0) + CARD.length;

    process.env.HF_ENDPOINT = hub.baseURL;
    process.env.HF_TOKEN = TOKEN;
    const servedBefore = hub.bytesServed;
    const requestsBefore = hub.requests.length;
    const { planSeconds } = await timePlanning('bench-hub', 'hf://datasets/bench/edits', join(dir, 'out'), rows);
    return {
      rows,
      repoBytes,
      trainBytes,
      bytesRead: hub.bytesServed - servedBefore,
      rangeRequests: hub.requests.slice(requestsBefore).filter((r) => r.range).length,
      planSeconds,
    };
  } finally {
    for (const [key, value] of [
      ['HF_ENDPOINT', saved.endpoint],
      ['HF_TOKEN', saved.token],
    ] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
    await hub.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const f = await measureHubPlanning(Number(process.argv[2] ?? 100_000));
  const mb = (n: number) => `${(n / 2 ** 20).toFixed(1)} MB`;
  console.log(
    `hf:// planning of ${f.rows} rows: read ${mb(f.bytesRead)} in ${f.rangeRequests} range requests of a ${mb(f.repoBytes)} repo ` +
      `(ratio ${(f.bytesRead / f.repoBytes).toFixed(3)}); the train split's files are ${mb(f.trainBytes)} ` +
      `(read/split ${(f.bytesRead / f.trainBytes).toFixed(3)}); planned in ${f.planSeconds.toFixed(1)} s`,
  );
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
