import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, CliProcess, waitUntil } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';

// The results tables are rewritten while a run goes (every few percent of rows, at most every
// 10 s), not only at its end: a run stopped half-way leaves a table of what it finished. The built
// CLI runs 40 slow rows one at a time; the test reads the tables while the run is still going.

const API_KEY = 'sk-test-refresh-2c8e4a6f0b1d3957';
let standin: OpenAIStandin;

beforeAll(async () => {
  assertBuilt();
  standin = await startOpenAIStandin({ latencyMs: 400 });
});
afterAll(async () => standin?.close());

describe('results while a run goes', () => {
  it('results.csv, .jsonl and .parquet appear and fill in before the run ends', async () => {
    const dir = tempDir('atelier-refresh-');
    await writePng(join(dir, 'a.png'));
    writeText(
      join(dir, 'edits.csv'),
      ['input_images,instruction', ...Array.from({ length: 40 }, (_, i) => `a.png,refresh-${i} edit`)].join('\n'),
    );
    const outputDir = join(dir, 'out');
    const env: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
    delete env.TEMPORAL_ADDRESS;
    const edit = new CliProcess(
      [
        'edit',
        '--input',
        join(dir, 'edits.csv'),
        '--output-dir',
        outputDir,
        '--backend',
        'openai',
        '--model',
        'gpt-image-2',
        '--window',
        '1',
        '--state-dir',
        join(dir, 'state'),
      ],
      env,
    );
    try {
      await waitUntil(() => existsSync(join(outputDir, 'results.csv')), 60_000, 'a first results table');
      const callsThen = standin.callsFor('refresh-').length;
      const rows = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Array<{
        status: string;
        output_image: string;
      }>;
      // Every input row is in it; the finished ones with their outputs, the rest pending.
      expect(rows).toHaveLength(40);
      const ok = rows.filter((r) => r.status === 'ok');
      expect(ok.length).toBeGreaterThanOrEqual(2);
      expect(ok.length).toBeLessThan(40);
      expect(ok.every((r) => r.output_image.endsWith('.png'))).toBe(true);
      expect(rows.filter((r) => r.status === 'pending').length).toBe(40 - ok.length);
      expect(existsSync(join(outputDir, 'results.jsonl'))).toBe(true);
      expect(existsSync(join(outputDir, 'results.parquet'))).toBe(true);
      expect(callsThen).toBeLessThan(40); // the run was still going
    } finally {
      expect(await edit.exited).toBe(0);
    }
    const final = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Array<{ status: string }>;
    expect(final.every((r) => r.status === 'ok')).toBe(true);
  });
});
