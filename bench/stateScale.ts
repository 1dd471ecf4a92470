// State-at-scale benchmark (issue 21): the run's state itself at 1,000,000 rows, no server, no
// provider. A CSV of N rows pointing at a few small images is
//   (a) planned by the real planning activity (time, peak RSS);
//   (b) finished row by row through the run store's commit path (`commitRow`: the output, then the
//       create-only ledger entry), as a run's row activities would (time, rows/s, peak RSS);
//   (c) planned again, as a re-run plans over the finished run (every row must be found done);
//   (d) paged as the re-run's row window pages the plan (`nextRowsPage`, the workflow's page size at
//       window 32): "what is left to do", which must be nothing. Stopped after --page-budget seconds
//       and extrapolated if it has not finished by then;
//   (e) with --results, the final results tables written in full, then (c) again with the results
//       records the tables leave (what a re-run after a finished run plans with);
//   (f) with --results, refreshes of the tables as a run makes them: after --refresh-rows rows
//       finished in a row (the window's rows), and after as many rows spread over the whole plan
//       (the worst case: a chunk encoded again per row), each against a full rewrite of the same
//       tables measured in the same run (time, CPU, peak RSS, and the ratios).
// With --reuse DIR, phases (a)-(d) are skipped and DIR (a run folder an earlier --keep left) is used.
// Each phase reports its wall time and the process's peak RSS (absolute, and growth over the phase),
// with the load average (the machine is shared). The run folder is removed at the end (--keep keeps it).
//   npm run build && node --expose-gc dist/bench/stateScale.js [rows=1000000] [--concurrency 32]
//     [--page-budget 120] [--results] [--refresh-rows 1000] [--keep] [--dir /tmp] [--reuse DIR]
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import sharp from 'sharp';
import { benchInput } from './harness';

interface PhaseFigures {
  seconds: number;
  cpuMs: number;
  peakRssMb: number;
  growthMb: number;
  load: string;
}

function option(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && process.argv[at + 1] !== undefined ? process.argv[at + 1]! : fallback;
}

const mb = (bytes: number): number => bytes / 2 ** 20;
const loadNow = (): string =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');

/** Runs one phase: wall time, and the peak RSS sampled every 20 ms (after a GC where --expose-gc allows). */
async function phase<T>(name: string, run: () => Promise<T>): Promise<{ result: T; figures: PhaseFigures }> {
  global.gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const loadBefore = loadavg()[0]!;
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  console.error(`  ${name} ...`);
  let result: T;
  try {
    result = await run();
  } finally {
    clearInterval(sampler);
  }
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  peak = Math.max(peak, process.memoryUsage().rss);
  const figures = {
    seconds,
    cpuMs: (cpu.user + cpu.system) / 1000,
    peakRssMb: mb(peak),
    growthMb: mb(peak - before),
    load: `${loadBefore.toFixed(1)}→${loadavg()[0]!.toFixed(1)}`,
  };
  console.error(
    `  ${name}: ${seconds.toFixed(1)} s, peak RSS ${figures.peakRssMb.toFixed(0)} MB (+${figures.growthMb.toFixed(0)}), load ${figures.load}`,
  );
  return { result, figures };
}

/** `count` small distinct PNGs and a CSV of `rows` rows cycling through them. */
async function writeDataset(dir: string, rows: number, count: number): Promise<string> {
  for (let i = 0; i < count; i++) {
    await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 40 * i, g: 102, b: 153 } } })
      .png()
      .toFile(join(dir, `img${i}.png`));
  }
  const csv = join(dir, 'state.csv');
  const out = createWriteStream(csv);
  out.write('image,instruction\n');
  for (let i = 0; i < rows; i++) {
    if (!out.write(`img${i % count}.png,make row ${i} a little warmer\n`)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return csv;
}

async function main(): Promise<void> {
  const reuse = option('reuse', '');
  let rows = Number(process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : 1_000_000);
  const concurrency = Number(option('concurrency', '32'));
  const pageBudgetS = Number(option('page-budget', '120'));
  const withResults = process.argv.includes('--results');
  // Loaded here: the activities pull in the whole row path.
  const { createOrchestrationActivities } = await import('../activities/orchestration');
  const { writeResultsTables } = await import('../activities/resultsTables');
  const { RunStore, commitRow, ledgerEntry } = await import('../lib/run/runStore');
  const { readPlanMeta, readPlanRows } = await import('../lib/run/plan');
  const { readLedgerEntry } = await import('../lib/run/ledger');

  const dir = reuse || mkdtempSync(join(option('dir', tmpdir()), 'atelier-state-'));
  if (reuse) rows = (await readPlanMeta(join(dir, 'out'))).totalRows;
  const outputDir = join(dir, 'out');
  // Each figure is printed as soon as its phase ends: removing a 1M-row folder takes minutes.
  console.log(`${rows} rows, run folder on the local disk (${dir}), load average at start ${loadNow()}:`);
  const lines = { push: (text: string) => console.log(text) };
  const line = (name: string, f: PhaseFigures, extra = ''): void => {
    lines.push(
      `  ${name}: ${f.seconds.toFixed(1)} s${extra}, peak RSS ${f.peakRssMb.toFixed(0)} MB (+${f.growthMb.toFixed(0)} MB over the phase), load ${f.load}`,
    );
  };
  try {
    const csv = reuse ? join(dir, 'state.csv') : await writeDataset(dir, rows, 4);
    const input = {
      ...benchInput('state-scale', csv, outputDir, 32),
      model: 'bench',
      retry: { maxAttempts: 1, initialIntervalMs: 1000, maximumIntervalMs: 1000 },
    };
    const activities = createOrchestrationActivities();

    if (!reuse) await buildRun();
    async function buildRun(): Promise<void> {
      // (a) Planning a fresh run.
      const planned = await phase('planning', () => activities.planRun(input));
      if (planned.result.totalRows !== rows) throw new Error(`planned ${planned.result.totalRows} rows, expected ${rows}`);
      line('(a) planning, fresh', planned.figures, ` (${(rows / planned.figures.seconds).toFixed(0)} rows/s)`);

      // (b) Every row committed through the run store, as a row activity commits: output, then entry.
      const store = RunStore.open(outputDir);
      const output = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#aa6633' } })
        .png()
        .toBuffer();
      const committed = await phase('ledger', async () => {
        const CHUNK = 4096;
        let won = 0;
        for (let start = 0; start < rows; start += CHUNK) {
          const page = await readPlanRows(outputDir, start, CHUNK);
          let next = 0;
          const lane = async (): Promise<void> => {
            while (next < page.length) {
              const row = page[next++]!;
              const path = row.outputs[0]!.path;
              const entry = ledgerEntry(
                { index: row.index, position: row.position, runId: input.runId, model: input.model, digest: row.digest },
                undefined,
                { status: 'ok', outputImages: [path], attempts: 1, requestIds: [`req-${row.index}`], latencyMs: 1000, costUsd: 0.04 },
              );
              const result = await commitRow(store, {
                outputs: [{ path, bytes: output }],
                entry,
                startedFrom: null,
                paid: true,
              });
              if (result.won) won += 1;
            }
          };
          await Promise.all(Array.from({ length: concurrency }, lane));
          if ((start / CHUNK) % 25 === 0) console.error(`    ${start + page.length} rows committed, load ${loadNow()}`);
        }
        return won;
      });
      if (committed.result !== rows) throw new Error(`${committed.result} commits won, expected ${rows}`);
      line(
        `(b) ledger written through RunStore commitRow (concurrency ${concurrency})`,
        committed.figures,
        ` (${(rows / committed.figures.seconds).toFixed(0)} rows/s)`,
      );

      // (c) A re-run plans over the finished run: every row must be found done.
      const replanned = await phase('re-run planning', () => activities.planRun(input));
      if (replanned.result.alreadyOk !== rows)
        throw new Error(`re-run planning found ${replanned.result.alreadyOk} rows done, expected ${rows}`);
      line('(c) re-run planning (no results records)', replanned.figures, `, ${replanned.result.alreadyOk} found done`);

      // (d) The re-run's pages over the plan: nothing left to do.
      const limit = 128; // the row window's page at window 32: max(100, 4 × window)
      const paged = await phase('re-run pages', async () => {
        let cursor: number | null = 0;
        let pages = 0;
        let pending = 0;
        const start = performance.now();
        while (cursor !== null && performance.now() - start < pageBudgetS * 1000) {
          const page = await activities.nextRowsPage({ outputDir, cursor, limit, carryRows: true });
          pending += page.rows.length;
          cursor = page.nextCursor;
          pages += 1;
        }
        return { pages, pending, finished: cursor === null, rowsPaged: cursor ?? rows };
      });
      const { pages, pending, finished, rowsPaged } = paged.result;
      if (pending !== 0) throw new Error(`the re-run's pages found ${pending} rows to do, expected 0`);
      const perPage = paged.figures.seconds / pages;
      line(
        `(d) re-run pages (nextRowsPage, ${limit} rows a page)`,
        paged.figures,
        finished
          ? ` for all ${pages} pages (${(1000 * perPage).toFixed(0)} ms a page), 0 rows to do`
          : ` for ${pages} of ${Math.ceil(rows / limit)} pages (${rowsPaged} rows, ${(1000 * perPage).toFixed(0)} ms a page; stopped at the ${pageBudgetS} s budget: all pages ≈ ${((perPage * Math.ceil(rows / limit)) / 60).toFixed(0)} min), 0 rows to do`,
      );
    }

    if (withResults) {
      // (e) The final results tables in full, then a re-run's planning with the records they leave.
      try {
        const tables = await phase('results tables (full)', () => writeResultsTables({ runId: input.runId, outputDir }));
        line(
          '(e) final results tables, full pass',
          tables.figures,
          `, ${tables.result.summary.ok} ok, CPU ${tables.figures.cpuMs.toFixed(0)} ms`,
        );
        const again = await phase('re-run planning with records', () => activities.planRun(input));
        if (again.result.alreadyOk !== rows) throw new Error(`re-run planning found ${again.result.alreadyOk} rows done, expected ${rows}`);
        line('(e) re-run planning with the results records', again.figures, `, ${again.result.alreadyOk} found done`);

        // (f) Refreshes after N rows finished, against a full rewrite of the same tables.
        const n = Math.min(rows, Number(option('refresh-rows', '1000')));
        const finish = async (indexes: number[]): Promise<void> => {
          // The rows finish again (as a redo would: set aside, entry replaced): the tables show the new latency.
          for (const index of indexes) {
            const entry = (await readLedgerEntry(outputDir, index))!;
            await RunStore.open(outputDir).writeEntry({ ...entry, latencyMs: (entry.latencyMs ?? 0) + 1 }, { setAside: true });
          }
        };
        const refreshOf = async (name: string, indexes: number[]) => {
          await finish(indexes);
          const ranges = indexes.map((i): [number, number] => [i, i]);
          const done = await phase(name, () => writeResultsTables({ runId: input.runId, outputDir, changedRows: ranges }));
          return done;
        };
        const middle = Math.floor((rows - n) / 2);
        const contiguous = await refreshOf(
          'refresh, rows in a row',
          Array.from({ length: n }, (_, i) => middle + i),
        );
        const spread = await refreshOf(
          'refresh, rows spread',
          Array.from({ length: n }, (_, i) => Math.floor((i * rows) / n)),
        );
        const full = await phase('full rewrite', () => writeResultsTables({ runId: input.runId, outputDir }));
        const ratio = (f: PhaseFigures): string =>
          ` (${(f.seconds / full.figures.seconds).toFixed(3)} of the full rewrite's time, ${(f.cpuMs / full.figures.cpuMs).toFixed(3)} of its CPU)`;
        const cpu = (f: PhaseFigures): string => `, CPU ${f.cpuMs.toFixed(0)} ms`;
        line(
          `(f) refresh after ${n} rows finished in a row (${contiguous.result.info.chunksEncoded} chunks encoded)`,
          contiguous.figures,
          `${cpu(contiguous.figures)}${ratio(contiguous.figures)}`,
        );
        line(
          `(f) refresh after ${n} rows spread over the plan (${spread.result.info.chunksEncoded} chunks encoded)`,
          spread.figures,
          `${cpu(spread.figures)}${ratio(spread.figures)}`,
        );
        line('(f) full rewrite of the same tables (records kept)', full.figures, cpu(full.figures));
      } catch (err) {
        lines.push(`  (e) failed: ${(err as Error).stack ?? String(err)}`);
      }
    }
  } finally {
    if (process.argv.includes('--keep') || reuse) lines.push(`  kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
