import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { describe, expect, it } from 'vitest';
import { createOrchestrationActivities } from '../activities/orchestration';
import { writeResultsTables } from '../activities/resultsTables';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { commitLedgerEntry, readLedgerEntry, writeLedgerEntry } from '../lib/run/ledger';
import { writeJudgeRecord } from '../lib/run/judgeScores';
import { writeReviewMark } from '../lib/run/review';
import { readPlanRows } from '../lib/run/plan';
import { toRanges } from '../workflows/dataset/resultsRefresh';
import { adoptStorage, StoreFault } from '../storage';
import { LocalStorage } from '../storage/local';
import { CountingStorage } from '../testing/countingStorage';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { testInput } from './helpers/temporalEnv';

// The results tables written by the real activities over a real plan and ledger (no Temporal
// server: the activities are called as the worker calls them). A refresh given the rows finished
// since the last reads only those entries, and its tables are the bytes a full rewrite gives.

const ROWS = 300;

async function plannedRun(name: string, rows = ROWS): Promise<{ outputDir: string; runId: string }> {
  const dir = tempDir(`atelier-results-${name}-`);
  await writePng(join(dir, 'a.png'));
  writeText(
    join(dir, 'rows.csv'),
    ['input_images,instruction,n', ...Array.from({ length: rows }, (_, i) => `a.png,"${name} edit ${i}, with a comma",${i}`)].join('\n'),
  );
  const outputDir = join(dir, 'out');
  const runId = `results-${name}`;
  await createOrchestrationActivities().planRun(testInput({ runId, inputPath: join(dir, 'rows.csv'), outputDir }));
  return { outputDir, runId };
}

/** Finishes rows as the row activities do: outputs on disk, then the ledger entry. */
async function finishRows(outputDir: string, runId: string, indexes: number[], how: 'ok' | 'failed'): Promise<void> {
  const plan = await readPlanRows(outputDir, 0, Math.max(...indexes) + 1);
  for (const index of indexes) {
    const row = plan[index]!;
    const base = { index, position: row.position, runId, model: 'gpt-image-2', digest: row.digest!, finishedAt: new Date().toISOString() };
    if (how === 'failed') {
      await writeLedgerEntry(outputDir, {
        ...base,
        status: 'failed',
        errorType: 'ContentRefused',
        error: `row ${index} refused`,
        attempts: 2,
      });
      continue;
    }
    const output = row.outputs[0]!.path;
    writeFileSync(join(outputDir, output), `image ${index}`);
    await commitLedgerEntry(
      outputDir,
      {
        ...base,
        status: 'ok',
        outputImages: [output],
        attempts: 1,
        requestIds: [`req-${index}`],
        latencyMs: 100 + index,
        costUsd: 0.01 * index,
        usage: { input_tokens: index },
      },
      undefined,
    );
  }
}

const tables = (outputDir: string) =>
  Object.fromEntries(['results.csv', 'results.jsonl', 'results.parquet'].map((f) => [f, readFileSync(join(outputDir, f))]));

/** The `datasets` venv's python (pyarrow), where the suite built it; undefined where it did not. */
function datasetsPython(): string | undefined {
  const venv = spawnSync('bash', [join(__dirname, '..', 'scripts', 'setup-datasets-venv.sh'), '--check'], { encoding: 'utf8' });
  return venv.status === 0 ? join(venv.stdout.trim().split('\n').at(-1)!, 'bin', 'python') : undefined;
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

describe('results tables', () => {
  it('refreshes by reading only the rows finished since the last write, and ends byte-identical to a full rewrite', async () => {
    const { outputDir, runId } = await plannedRun('incr');
    const args = { runId, outputDir };
    // The run's first write reads every row.
    expect((await writeResultsTables(args)).info).toMatchObject({ full: true, entriesRead: ROWS });
    const steps: Array<[number[], 'ok' | 'failed']> = [
      [range(0, 40), 'ok'],
      [range(40, 55), 'failed'],
      [[...range(55, 120), 7], 'ok'], // 7 again: a row redone reports again
      [range(120, 300).filter((i) => i % 3 !== 0), 'ok'],
    ];
    for (const [rows, how] of steps) {
      await finishRows(outputDir, runId, rows, how);
      const { info, summary } = await writeResultsTables({ ...args, changedRows: toRanges(rows) });
      expect(info.full).toBe(false);
      expect(info.entriesRead).toBe(new Set(rows).size);
      expect(summary.total).toBe(ROWS);
    }
    const incremental = tables(outputDir);
    const csv = parse(incremental['results.csv']!, { columns: true }) as Array<{ status: string; n: string; output_image: string }>;
    expect(csv.filter((r) => r.status === 'ok')).toHaveLength(120 - 15 + 120);
    expect(csv.filter((r) => r.status === 'failed')).toHaveLength(15);
    expect(csv[3]).toMatchObject({ n: '3', status: 'ok', output_image: '000003.png' });

    const full = await writeResultsTables(args);
    expect(full.info.full).toBe(true);
    const rewritten = tables(outputDir);
    for (const name of Object.keys(rewritten)) expect(rewritten[name]!.equals(incremental[name]!), name).toBe(true);
  });

  it('a full pass reads again only the entries changed since the records kept them, and checks every output: the tables of a rewrite from scratch', async () => {
    const { outputDir, runId } = await plannedRun('kept');
    await finishRows(outputDir, runId, range(0, 100), 'ok');
    const args = { runId, outputDir };
    await writeResultsTables(args);
    // Since then: row 5's output was deleted, row 6's entry replaced, row 150 finished.
    rmSync(join(outputDir, '000005.png'));
    const entry6 = join(outputDir, '.atelier', 'ledger', '000006.json');
    writeFileSync(entry6, JSON.stringify({ ...JSON.parse(readFileSync(entry6, 'utf8')), latencyMs: 4242 }));
    await finishRows(outputDir, runId, [150], 'ok');
    const counting = new CountingStorage(new LocalStorage(outputDir));
    adoptStorage(counting);
    try {
      await writeResultsTables(args);
    } finally {
      adoptStorage(new LocalStorage(outputDir));
    }
    // Two entries read (6 and 150), the rest from the records; outputs from one folder listing.
    expect(counting.counts.stat ?? 0).toBe(0);
    expect(counting.counts.read).toBeLessThanOrEqual(2 + 6); // + plan meta, records pointer and segment, judge/review
    const kept = tables(outputDir);
    const csv = parse(kept['results.csv']!, { columns: true }) as Array<{ status: string }>;
    expect([csv[5]!.status, csv[6]!.status, csv[150]!.status]).toEqual(['pending', 'ok', 'ok']);
    expect(JSON.parse(kept['results.jsonl']!.toString().split('\n')[6]!)).toMatchObject({ latency_ms: 4242 });
    // The same bytes as a pass that keeps nothing.
    rmSync(join(outputDir, '.atelier', 'results'), { recursive: true });
    expect((await writeResultsTables(args)).info.full).toBe(true);
    const scratch = tables(outputDir);
    for (const name of Object.keys(scratch)) expect(scratch[name]!.equals(kept[name]!), name).toBe(true);
  });

  it('reports an unparsable ledger entry instead of failing (or killing the worker), and reads it again on the next refresh', async () => {
    const { outputDir, runId } = await plannedRun('bad');
    await finishRows(outputDir, runId, range(0, 10), 'ok');
    const { writeResults } = createOrchestrationActivities();
    await writeResults({ runId, outputDir });
    // A torn entry: the refresh that reads it must still write every table.
    const entryPath = join(outputDir, '.atelier', 'ledger', '000004.json');
    const good = readFileSync(entryPath);
    writeFileSync(entryPath, '{"index": 4, "status": "o');
    const summary = await writeResults({ runId, outputDir, changedRows: [[4, 4]] });
    expect(summary).toMatchObject({ total: ROWS, ok: 9, unreadableRows: 1 });
    const rows = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Array<{ status: string; error: string }>;
    expect(rows[4]).toMatchObject({ status: 'pending' });
    expect(rows[4]!.error).toMatch(/^LedgerUnreadable: .*JSON/);
    // Mended: the next refresh, naming no rows, reads it again.
    writeFileSync(entryPath, good);
    expect(await writeResults({ runId, outputDir, changedRows: [] })).toMatchObject({ ok: 10 });
    expect((await writeResults({ runId, outputDir })).unreadableRows).toBeUndefined();
  });

  it('a fault of the whole store while reading entries ends the pass (the run pauses on it) instead of showing done rows pending', async () => {
    const { outputDir, runId } = await plannedRun('storefault');
    await finishRows(outputDir, runId, range(0, 10), 'ok');
    const { writeResults } = createOrchestrationActivities();
    await writeResults({ runId, outputDir });
    const before = tables(outputDir);
    // The store as versitygw answers once the bucket is gone, for every ledger entry read.
    class BucketGone extends LocalStorage {
      private gone(key: string): void {
        if (key.includes('/ledger/')) throw new StoreFault('storageError', `the bucket out does not exist (reading ${key})`);
      }
      override read(key: string): Promise<Buffer | undefined> {
        this.gone(key);
        return super.read(key);
      }
      override readTagged(key: string): Promise<{ data: Buffer; tag: string } | undefined> {
        this.gone(key);
        return super.readTagged(key);
      }
      override readRange(key: string, start: number, end: number): Promise<Buffer> {
        this.gone(key);
        return super.readRange(key, start, end);
      }
    }
    adoptStorage(new BucketGone(outputDir));
    try {
      await expect(writeResults({ runId, outputDir, changedRows: [[3, 5]] })).rejects.toThrow(/bucket out does not exist/);
    } finally {
      adoptStorage(new LocalStorage(outputDir));
    }
    // The tables of the last good pass stay, whole.
    expect(tables(outputDir)).toEqual(before);
    expect(await writeResults({ runId, outputDir, changedRows: [[3, 5]] })).toMatchObject({ ok: 10 });
  });

  it('a refresh encodes again only the chunks holding changed rows or marks, and its tables are the bytes of a full rewrite', async () => {
    // 3,500 rows: four chunks of the tables (1,000 rows each, the last one shorter).
    const rows = 3500;
    const { outputDir, runId } = await plannedRun('chunks', rows);
    const args = { runId, outputDir };
    expect((await writeResultsTables(args)).info).toMatchObject({ full: true, chunksEncoded: 4 });
    const steps: Array<[number[], 'ok' | 'failed', number]> = [
      [[...range(0, 30), ...range(2990, 3010)], 'ok', 3], // chunks 0, 2 and 3
      [range(1500, 1510), 'failed', 1],
      [[5, 3499], 'ok', 2], // 5 again: a row finished twice
    ];
    for (const [changed, how, chunks] of steps) {
      await finishRows(outputDir, runId, changed, how);
      const { info, summary } = await writeResultsTables({ ...args, changedRows: toRanges(changed) });
      expect(info).toMatchObject({ full: false, chunksEncoded: chunks, entriesRead: new Set(changed).size });
      expect(summary.total).toBe(rows);
    }
    // A review mark on an unchanged row is the first one: results.csv gains its review columns, so
    // every chunk is encoded again (a full write); a second mark encodes only its own chunk.
    const markRow = async (index: number) => {
      const entry = (await readLedgerEntry(outputDir, index))!;
      await writeReviewMark(outputDir, {
        index,
        verdict: 'accepted',
        outputImages: entry.outputImages ?? [],
        entryFinishedAt: entry.finishedAt,
        at: 'now',
      });
    };
    await markRow(3005);
    expect((await writeResultsTables({ ...args, changedRows: [] })).info).toMatchObject({ full: true, chunksEncoded: 4 });
    await markRow(20);
    expect((await writeResultsTables({ ...args, changedRows: [] })).info).toMatchObject({ full: false, chunksEncoded: 1, entriesRead: 0 });
    const refreshed = tables(outputDir);
    const summary = (await writeResultsTables({ ...args, changedRows: [] })).summary;

    // Byte for byte what a write from scratch (no records, no kept chunks) gives.
    rmSync(join(outputDir, '.atelier', 'results'), { recursive: true });
    const full = await writeResultsTables(args);
    expect(full.info).toMatchObject({ full: true, chunksEncoded: 4 });
    expect(full.summary).toEqual(summary);
    expect(summary).toMatchObject({ ok: 30 + 20 + 1, failed: 10, pending: rows - 61 });
    const rewritten = tables(outputDir);
    for (const name of Object.keys(rewritten)) expect(refreshed[name]!.equals(rewritten[name]!), name).toBe(true);
    // results.parquet as readers see it: four row groups, the changed rows in place.
    const bytes = refreshed['results.parquet']!;
    const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    expect(parquetMetadata(file).row_groups.map((g) => Number(g.num_rows))).toEqual([1000, 1000, 1000, 500]);
    const back = await parquetReadObjects({ file, columns: ['n', 'status', 'review'], rowStart: 3004, rowEnd: 3011 });
    expect(back.map((r) => r.status)).toEqual([...Array(6).fill('ok'), 'pending']);
    expect(back[1]).toMatchObject({ n: '3005', review: 'accepted' });
    const failed = await parquetReadObjects({ file, columns: ['status', 'error'], rowStart: 1500, rowEnd: 1501 });
    expect(failed[0]).toMatchObject({ status: 'failed', error: 'ContentRefused: row 1500 refused' });
    const pyarrow = datasetsPython();
    if (pyarrow) {
      const script =
        'import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); print(t.num_rows, t.column("status").to_pylist().count("ok"))';
      expect(execFileSync(pyarrow, ['-c', script, join(outputDir, 'results.parquet')], { encoding: 'utf8' }).trim()).toBe(`${rows} 51`);
    }
  });

  it('a refresh whose kept chunks do not match (an older run folder, a pack gone) writes everything again, and costs few requests when they do', async () => {
    const rows = 2500;
    const { outputDir, runId } = await plannedRun('fallback', rows);
    const args = { runId, outputDir };
    await finishRows(outputDir, runId, range(0, 100), 'ok');
    await writeResultsTables(args);
    const packs = join(outputDir, '.atelier', 'results', 'packs');
    const refresh = async (changed: number[]) => {
      await finishRows(outputDir, runId, changed, 'ok');
      return (await writeResultsTables({ ...args, changedRows: toRanges(changed) })).info;
    };
    // The run folder of a release before kept chunks: records, no manifest.
    rmSync(join(outputDir, '.atelier', 'results', 'tables.json'));
    expect(await refresh([1200])).toMatchObject({ full: true, chunksEncoded: 3 });
    // A refresh now keeps the full write's chunks; then one pack goes missing.
    expect(await refresh([1201])).toMatchObject({ full: false, chunksEncoded: 1 });
    for (const name of readdirSync(packs)) rmSync(join(packs, name));
    expect(await refresh([2400])).toMatchObject({ full: true, chunksEncoded: 3 });
    const afterFallback = tables(outputDir);
    rmSync(join(outputDir, '.atelier', 'results'), { recursive: true });
    await writeResultsTables(args);
    const scratch = tables(outputDir);
    for (const name of Object.keys(scratch)) expect(afterFallback[name]!.equals(scratch[name]!), name).toBe(true);

    // Requests of a refresh with one row changed: the same at 3 chunks as at 3,000 (the kept parts
    // lie back to back in the tables: a ranged read or two per table, one for the metadata).
    await refresh([10]);
    const counting = new CountingStorage(new LocalStorage(outputDir));
    adoptStorage(counting);
    try {
      await finishRows(outputDir, runId, [1700], 'ok');
      counting.reset();
      expect((await writeResultsTables({ ...args, changedRows: [[1700, 1700]] })).info).toMatchObject({ full: false, chunksEncoded: 1 });
    } finally {
      adoptStorage(new LocalStorage(outputDir));
    }
    expect(counting.counts.readRange).toBeLessThanOrEqual(3 * 2 + 1 + 2); // kept parts (either side of the changed chunk), states; plan rows of one chunk
    expect(counting.total()).toBeLessThanOrEqual(30);
    // Three packs in use: the full write's (metadata; its states are the records' base), then one
    // per refresh (metadata and states; the table bytes are the tables'). The fallback's unused
    // packs were removed.
    expect(readdirSync(packs)).toHaveLength(1 + 2 * 2);
  });

  it("a full write writes the tables and the rows' states once: its pack is the row groups' metadata", async () => {
    const rows = 2500;
    const { outputDir, runId } = await plannedRun('once', rows);
    const args = { runId, outputDir };
    await finishRows(outputDir, runId, range(0, 300), 'ok');
    const counting = new CountingStorage(new LocalStorage(outputDir));
    adoptStorage(counting);
    try {
      expect((await writeResultsTables(args)).info).toMatchObject({ full: true, chunksEncoded: 3 });
    } finally {
      adoptStorage(new LocalStorage(outputDir));
    }
    const tableBytes = Object.values(tables(outputDir)).reduce((sum, b) => sum + b.length, 0);
    const packs = join(outputDir, '.atelier', 'results', 'packs');
    // Written once (one upload each on S3), and kept once on disk: the packs hold no table part
    // (before, the full write's pack was its tables again, with the metadata and states besides),
    // and the rows' states are the records' base itself (before, a pack part too).
    expect(counting.bytesWritten((key) => /^results\.(csv|jsonl|parquet)$/.test(key))).toBe(tableBytes);
    expect(readdirSync(packs).map((n) => n.split('.')[1])).toEqual(['meta']);
    const meta = statSync(join(packs, readdirSync(packs)[0]!)).size;
    expect(counting.bytesWritten((key) => key.startsWith('.atelier/results/packs/'))).toBe(meta);
    expect(meta).toBeLessThan(tableBytes / 4);
    // A refresh keeps the chunks it did not encode from the tables themselves: still no table bytes under .atelier/.
    await finishRows(outputDir, runId, [1500], 'failed');
    expect((await writeResultsTables({ ...args, changedRows: [[1500, 1500]] })).info).toMatchObject({ full: false, chunksEncoded: 1 });
    expect(new Set(readdirSync(packs).map((n) => n.split('.')[1]))).toEqual(new Set(['meta', 'states']));
    const onDisk = readdirSync(packs).reduce((sum, n) => sum + statSync(join(packs, n)).size, 0);
    expect(onDisk).toBeLessThan(tableBytes);
    const refreshed = tables(outputDir);
    rmSync(join(outputDir, '.atelier', 'results'), { recursive: true });
    await writeResultsTables(args);
    const scratch = tables(outputDir);
    for (const name of Object.keys(scratch)) expect(refreshed[name]!.equals(scratch[name]!), name).toBe(true);
  });

  it("refreshes past the records' 24 segments (a new base, the one the full write's states lie in removed) stay refreshes", async () => {
    const rows = 2500;
    const { outputDir, runId } = await plannedRun('rebase', rows);
    const args = { runId, outputDir };
    await writeResultsTables(args);
    const counting = new CountingStorage(new LocalStorage(outputDir));
    const bases: number[] = [];
    const pointer = () => readFileSync(join(outputDir, '.atelier', 'results', 'records.json'), 'utf8');
    for (let n = 0; n < 27; n++) {
      if (n === 23) {
        // At 24 segments a write that reads no row (the viewer's, after a mark) writes whole tables
        // but leaves the records alone: the run's next refresh makes the new base.
        const before = { pointer: pointer(), tables: tables(outputDir) };
        expect(before.pointer).toContain('"segments":24');
        expect((await writeResultsTables({ ...args, changedRows: [] })).info).toMatchObject({ full: false, chunksEncoded: 0 });
        expect(pointer()).toBe(before.pointer);
        for (const [name, bytes] of Object.entries(tables(outputDir))) expect(bytes.equals(before.tables[name]!), name).toBe(true);
      }
      // A row in the first chunk each time (its states read again), and the last chunk's states kept.
      await finishRows(outputDir, runId, [n], n % 2 ? 'ok' : 'failed');
      counting.reset();
      adoptStorage(counting);
      try {
        expect((await writeResultsTables({ ...args, changedRows: [[n, n]] })).info, `refresh ${n + 1}`).toMatchObject({
          full: false,
          chunksEncoded: 1,
        });
      } finally {
        adoptStorage(new LocalStorage(outputDir));
      }
      // The refresh that makes a new base writes its states file as that base (no states pack
      // part), and reads no record segment whole: the records' 24 segments are never read and
      // parsed at once (at a million rows, more than V8's longest string).
      if (counting.bytesWritten((key) => /^\.atelier\/results\/[^/]+\/000000\.jsonl$/.test(key)) > 0) bases.push(n + 1);
      expect(counting.bytesWritten((key) => key.endsWith('.states')) > 0, `refresh ${n + 1}`).toBe(!bases.includes(n + 1));
      expect(counting.counts.read ?? 0, `refresh ${n + 1}`).toBeLessThanOrEqual(8);
    }
    expect(bases).toEqual([24]);
    await finishRows(outputDir, runId, [2400], 'ok');
    expect((await writeResultsTables({ ...args, changedRows: [[2400, 2400]] })).info).toMatchObject({ full: false, chunksEncoded: 1 });
    const refreshed = tables(outputDir);
    rmSync(join(outputDir, '.atelier', 'results'), { recursive: true });
    expect((await writeResultsTables(args)).summary).toMatchObject({ ok: 14, failed: 14 });
    const scratch = tables(outputDir);
    for (const name of Object.keys(scratch)) expect(refreshed[name]!.equals(scratch[name]!), name).toBe(true);
  });

  it('tables changed by someone else since the last write (edited in place, or replaced) are not trusted: a full write, the bytes of one from scratch', async () => {
    const rows = 2500;
    const { outputDir, runId } = await plannedRun('edited', rows);
    const args = { runId, outputDir };
    await finishRows(outputDir, runId, range(0, 20), 'ok');
    await writeResultsTables(args);
    // Edited in place, the same length: bytes a refresh would keep are no longer the chunks' bytes.
    // Its mtime set well apart: right after the write, a kernel with coarse timestamps may stamp the
    // edit with the very mtime and ctime the write left (the ctime alone is tested in storage.test.ts).
    const csvPath = join(outputDir, 'results.csv');
    const written = statSync(csvPath);
    writeFileSync(csvPath, readFileSync(csvPath, 'utf8').replace(/pending/g, 'PENDING'));
    utimesSync(csvPath, written.atime, new Date(written.mtimeMs - 3_600_000));
    await finishRows(outputDir, runId, [2100], 'ok');
    expect((await writeResultsTables({ ...args, changedRows: [[2100, 2100]] })).info).toMatchObject({ full: true, chunksEncoded: 3 });
    expect(readFileSync(csvPath, 'utf8')).not.toContain('PENDING');
    // Replaced by another file (a copy from elsewhere, another writer's tables).
    const jsonlPath = join(outputDir, 'results.jsonl');
    const jsonl = readFileSync(jsonlPath, 'utf8');
    rmSync(jsonlPath);
    writeFileSync(jsonlPath, jsonl.replace(/"pending"/g, '"PENDING"'));
    await finishRows(outputDir, runId, [10], 'failed');
    expect((await writeResultsTables({ ...args, changedRows: [[10, 10]] })).info).toMatchObject({ full: true, chunksEncoded: 3 });
    const refreshed = tables(outputDir);
    rmSync(join(outputDir, '.atelier', 'results'), { recursive: true });
    await writeResultsTables(args);
    const scratch = tables(outputDir);
    for (const name of Object.keys(scratch)) expect(refreshed[name]!.equals(scratch[name]!), name).toBe(true);
  });

  it('the store failing while a refresh reads the kept chunks from the tables ends the pass (the run waits for the store), not a full write', async () => {
    const rows = 2500;
    const { outputDir, runId } = await plannedRun('keptfault', rows);
    const args = { runId, outputDir };
    await finishRows(outputDir, runId, range(0, 20), 'ok');
    await writeResultsTables(args);
    const before = tables(outputDir);
    // A 503 or a cut connection on the ranged reads of the tables, as S3Storage classes them.
    class TablesDown extends LocalStorage {
      override readRangeIf(key: string, start: number, end: number, tag: string): Promise<Buffer | undefined> {
        if (/^results\./.test(key)) return Promise.reject(new StoreFault('retryable', `the store is unavailable (reading ${key})`));
        return super.readRangeIf(key, start, end, tag);
      }
    }
    await finishRows(outputDir, runId, [2100], 'ok');
    adoptStorage(new TablesDown(outputDir));
    try {
      const err = await writeResultsTables({ ...args, changedRows: [[2100, 2100]] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StoreFault);
      expect((err as Error).message).toMatch(/the store is unavailable \(reading results\./);
    } finally {
      adoptStorage(new LocalStorage(outputDir));
    }
    // No full write happened: the tables are the last pass's; once the store is back, a refresh.
    expect(tables(outputDir)).toEqual(before);
    expect((await writeResultsTables({ ...args, changedRows: [[2100, 2100]] })).info).toMatchObject({ full: false, chunksEncoded: 1 });
  });

  it("a manifest whose tables' tags are not all non-empty strings is not trusted: one full write, not an error", async () => {
    const rows = 2500;
    const { outputDir, runId } = await plannedRun('badtags', rows);
    const args = { runId, outputDir };
    await writeResultsTables(args);
    const manifestPath = join(outputDir, '.atelier', 'results', 'tables.json');
    const good = JSON.parse(readFileSync(manifestPath, 'utf8')) as { tables: Record<string, string> };
    const broken = [null, [], 'x', { ...good.tables, parquet: undefined }, { ...good.tables, jsonl: '' }, { ...good.tables, csv: 7 }];
    for (const [n, tablesField] of broken.entries()) {
      writeFileSync(manifestPath, JSON.stringify({ ...good, tables: tablesField }));
      await finishRows(outputDir, runId, [n], 'ok');
      expect((await writeResultsTables({ ...args, changedRows: [[n, n]] })).info, JSON.stringify(tablesField)).toMatchObject({
        full: true,
      });
    }
    // And the one full write made a manifest to trust again.
    await finishRows(outputDir, runId, [2100], 'ok');
    expect((await writeResultsTables({ ...args, changedRows: [[2100, 2100]] })).info).toMatchObject({ full: false, chunksEncoded: 1 });
  });

  it('a refresh that would leave more than 12 packs in use keeps its whole tables as one pack: the same bytes', async () => {
    const rows = 13_500; // 14 chunks
    const { outputDir, runId } = await plannedRun('packs', rows);
    const args = { runId, outputDir };
    await writeResultsTables(args);
    const packs = () => new Set(readdirSync(join(outputDir, '.atelier', 'results', 'packs')).map((n) => n.split('.')[0])).size;
    // One row in each of 13 chunks, a refresh each: a pack per refresh, until there would be 13.
    for (let chunk = 0; chunk < 13; chunk++) {
      const index = chunk * 1000 + 7;
      await finishRows(outputDir, runId, [index], chunk % 2 ? 'ok' : 'failed');
      expect((await writeResultsTables({ ...args, changedRows: [[index, index]] })).info).toMatchObject({ full: false, chunksEncoded: 1 });
      // The full write's pack and one per refresh; the 12th refresh would make 13: it writes every chunk's parts as the one pack.
      expect(packs()).toBe(chunk < 11 ? chunk + 2 : chunk - 10);
    }
    // And a refresh after that builds on the one pack again.
    await finishRows(outputDir, runId, [13_499], 'ok');
    expect((await writeResultsTables({ ...args, changedRows: [[13_499, 13_499]] })).info).toMatchObject({ full: false, chunksEncoded: 1 });
    expect(packs()).toBe(3);
    const refreshed = tables(outputDir);
    rmSync(join(outputDir, '.atelier', 'results'), { recursive: true });
    expect((await writeResultsTables(args)).summary).toMatchObject({ ok: 7, failed: 7 });
    const scratch = tables(outputDir);
    for (const name of Object.keys(scratch)) expect(refreshed[name]!.equals(scratch[name]!), name).toBe(true);
  });

  it('removes the temp files a killed refresh left in the output dir', async () => {
    const { outputDir, runId } = await plannedRun('temps');
    // What a SIGKILL between copy and rename leaves (LocalStorage's temp naming).
    for (const name of ['results.csv.tmp-4242-0badf00d', 'results.parquet.tmp-17-12345678'])
      writeFileSync(join(outputDir, name), 'x'.repeat(1000));
    writeFileSync(join(outputDir, 'results.csv.tmp-notes'), 'not ours');
    await createOrchestrationActivities().writeResults({ runId, outputDir });
    expect(readdirSync(outputDir).filter((n) => n.includes('.tmp-'))).toEqual(['results.csv.tmp-notes']);
  });

  it('replaces the tables as one set: a reader that sees results.csv sees the jsonl and parquet of that refresh or a later one', async () => {
    const { outputDir, runId } = await plannedRun('set');
    const { writeResults } = createOrchestrationActivities();
    const seen: string[] = [];
    let reads = 0;
    // A reader polling between the writer's I/O steps (the writer's file operations run on the
    // thread pool, so the reader's timer callbacks fall between them).
    const reader = setInterval(() => {
      if (!existsSync(join(outputDir, 'results.csv'))) return;
      const okIn = (text: string) => (text.match(/(^|,)ok,/gm) ?? []).length;
      const csvOk = okIn(readFileSync(join(outputDir, 'results.csv'), 'utf8'));
      reads += 1;
      if (!existsSync(join(outputDir, 'results.jsonl')) || !existsSync(join(outputDir, 'results.parquet')))
        seen.push('jsonl or parquet absent');
      else {
        const jsonlOk = (readFileSync(join(outputDir, 'results.jsonl'), 'utf8').match(/"status":"ok"/g) ?? []).length;
        if (jsonlOk < csvOk) seen.push(`csv shows ${csvOk} ok, jsonl ${jsonlOk}`);
      }
    }, 1);
    try {
      for (let step = 0; step < 30; step++) {
        const rows = range(step * 10, step * 10 + 10);
        await finishRows(outputDir, runId, rows, 'ok');
        await writeResults({ runId, outputDir, ...(step ? { changedRows: [[step * 10, step * 10 + 9]] as Array<[number, number]> } : {}) });
      }
    } finally {
      clearInterval(reader);
    }
    expect(reads).toBeGreaterThan(5);
    expect(seen).toEqual([]);
    // 29 refreshes: past the records' 24 segments (a new base, from records read by their pointer
    // alone until then); still the bytes of a write from scratch.
    const refreshed = tables(outputDir);
    rmSync(join(outputDir, '.atelier', 'results'), { recursive: true });
    await writeResults({ runId, outputDir });
    const scratch = tables(outputDir);
    for (const name of Object.keys(scratch)) expect(refreshed[name]!.equals(scratch[name]!), name).toBe(true);
  });

  it('results.csv and results.jsonl carry the judge scores and the review mark (with its reason) once the run has them', async () => {
    const { outputDir, runId } = await plannedRun('marks');
    await finishRows(outputDir, runId, [0, 1, 2], 'ok');
    await finishRows(outputDir, runId, [3], 'failed');
    const { writeResults } = createOrchestrationActivities();
    await writeResults({ runId, outputDir });
    const before = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
    // Nothing judged or reviewed yet: no empty columns.
    expect(Object.keys(before[0]!)).toEqual(['input_images', 'instruction', 'n', 'output_image', 'status', 'error']);

    const entry = async (index: number) => (await readLedgerEntry(outputDir, index))!;
    const e0 = await entry(0);
    const e1 = await entry(1);
    await writeJudgeRecord(outputDir, {
      index: 0,
      model: 'gpt-5.6-luna',
      entryFinishedAt: e0.finishedAt,
      scores: { instructionFollowing: 8, preservation: 9, quality: 7, overall: 7.48 },
      reason: 'did what was asked, a little soft',
      at: new Date().toISOString(),
    });
    await writeReviewMark(outputDir, {
      index: 0,
      verdict: 'accepted',
      outputImages: e0.outputImages ?? [],
      entryFinishedAt: e0.finishedAt,
      at: new Date().toISOString(),
    });
    // A reject reason, as the viewer records one.
    await writeReviewMark(outputDir, {
      index: 1,
      verdict: 'rejected',
      outputImages: e1.outputImages ?? [],
      entryFinishedAt: e1.finishedAt,
      at: new Date().toISOString(),
      reason: 'the sky is green',
    } as Parameters<typeof writeReviewMark>[1]);
    await writeResults({ runId, outputDir });

    const csv = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
    expect(Object.keys(csv[0]!)).toEqual([
      'input_images',
      'instruction',
      'n',
      'output_image',
      'status',
      'error',
      'review',
      'review_reason',
      'score',
      'score_instruction_following',
      'score_preservation',
      'score_quality',
      'score_reason',
      'judge_model',
    ]);
    expect(csv[0]).toMatchObject({
      review: 'accepted',
      review_reason: '',
      score: '7.48',
      score_reason: 'did what was asked, a little soft',
      judge_model: 'gpt-5.6-luna',
    });
    expect(csv[1]).toMatchObject({ review: 'rejected', review_reason: 'the sky is green', score: '' });
    expect(csv[3]).toMatchObject({ status: 'failed', review: '', score: '' });
    const jsonl = readFileSync(join(outputDir, 'results.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(jsonl[0]).toMatchObject({ review: 'accepted', score: 7.48, score_quality: 7, judge_model: 'gpt-5.6-luna' });
    expect(jsonl[1]).toMatchObject({ review: 'rejected', review_reason: 'the sky is green' });
    expect(jsonl[2]).not.toHaveProperty('review');
    const bytes = readFileSync(join(outputDir, 'results.parquet'));
    const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    const parquet = await parquetReadObjects({ file, columns: ['review', 'review_reason', 'score'] });
    expect(parquet.slice(0, 3)).toEqual([
      { review: 'accepted', review_reason: null, score: 7.48 },
      { review: 'rejected', review_reason: 'the sky is green', score: null },
      { review: null, review_reason: null, score: null },
    ]);
  });
});
