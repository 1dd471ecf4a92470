import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLedgerEntry } from '../lib/run/ledger';
import type { DatasetWorkflowInput } from '../lib/shared/types';
import { freePort } from '../lib/temporal/devServer';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { UNREACHABLE_ROWS } from '../workflows/dataset/runState';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { startTestServer, testInput, watchDatasetRun } from './helpers/temporalEnv';

// Runs that stop where the user would want them to (issue 24), on a real dev server with the real
// workers: --max-cost with a window of rows in flight stops within a row of the budget, and a
// provider nobody answers on pauses the run instead of failing the whole dataset.

const KEYS = { OPENAI_API_KEY: 'sk-test-saferuns-5c4b3a29' };
// gpt-image-2 on the stand-in: (50*5 + 323*8 + 1056*30 + 24*10) / 1e6 = $0.034754 a row.
const PER_ROW = 0.034754;

let env: TestWorkflowEnvironment;
let openai: OpenAIStandin;

beforeAll(async () => {
  ({ env } = await startTestServer());
  // Each answer takes a while, as a real model's does: the window's rows are in flight together.
  openai = await startOpenAIStandin({ latencyMs: 400 });
});
afterAll(async () => {
  await openai?.close();
  await env?.teardown();
});

async function rowsCsv(tag: string, rows: number): Promise<{ csv: string; outputDir: string }> {
  const dir = tempDir(`atelier-saferuns-${tag}-`);
  await writePng(join(dir, 'a.png'));
  writeText(
    join(dir, 'rows.csv'),
    ['input_images,instruction', ...Array.from({ length: rows }, (_, i) => `a.png,${tag}-${i} x`)].join('\n'),
  );
  return { csv: join(dir, 'rows.csv'), outputDir: join(dir, 'out') };
}

/** Starts the run with the real workers (keys and provider URL in their environment). */
const startRun = (input: DatasetWorkflowInput, workerEnv: NodeJS.ProcessEnv) => watchDatasetRun(env, input, workerEnv);

describe('--max-cost with a window of rows in flight', () => {
  it('pauses within one row of the budget (the rows in flight are reserved for)', async () => {
    const { csv, outputDir } = await rowsCsv('reserve', 24);
    const budget = 0.3;
    const run = await startRun(
      testInput({ runId: 'safe-reserve', inputPath: csv, outputDir, model: 'gpt-image-2', window: 8, maxCostUsd: budget }),
      { ...KEYS, OPENAI_BASE_URL: openai.baseURL },
    );
    try {
      const paused = await run.progressUntil((p) => p.paused?.budget === true && p.inFlight === 0);
      // Without the reserve, 8 rows were in flight when the 9th crossed $0.30: $0.52 spent.
      expect(paused.spentUsd).toBeGreaterThanOrEqual(budget);
      expect(paused.spentUsd!).toBeLessThanOrEqual(budget + PER_ROW + 1e-6);
      expect(openai.callsFor('reserve-').length).toBe(paused.ok);
    } finally {
      await run.stop();
    }
  });
});

describe('a provider nobody answers on', () => {
  it('names the host in each row error and pauses the run after consecutive connection failures', async () => {
    const deadPort = await freePort();
    const { csv, outputDir } = await rowsCsv('dead', 40);
    const run = await startRun(testInput({ runId: 'safe-unreachable', inputPath: csv, outputDir, model: 'gpt-image-2', window: 4 }), {
      ...KEYS,
      OPENAI_BASE_URL: `http://127.0.0.1:${deadPort}/v1?token=sk-in-a-query-0000`,
    });
    try {
      const paused = await run.progressUntil((p) => p.paused?.unreachable === true && p.inFlight === 0);
      expect(paused.paused!.reason).toMatch(
        new RegExp(
          `^provider unreachable: ${UNREACHABLE_ROWS} rows in a row could not connect \\(row \\d+: connection error: cannot reach 127\\.0\\.0\\.1:${deadPort} \\(ECONNREFUSED\\)`,
        ),
      );
      expect(paused.paused!.reason).toContain('atelier resume safe-unreachable');
      // The rows in flight when it paused finish; the rest of the dataset is not tried.
      expect(paused.failed).toBeGreaterThanOrEqual(UNREACHABLE_ROWS);
      expect(paused.failed).toBeLessThan(UNREACHABLE_ROWS + 4);
      expect(paused.pending).toBeGreaterThan(30);
      const entry = await readLedgerEntry(outputDir, 0);
      expect(entry).toMatchObject({ status: 'failed', errorType: 'Retryable' });
      expect(entry!.error).toBe(`connection error: cannot reach 127.0.0.1:${deadPort} (ECONNREFUSED)`);
      expect(JSON.stringify(paused)).not.toContain('sk-in-a-query');
    } finally {
      await run.stop();
    }
  });
});
