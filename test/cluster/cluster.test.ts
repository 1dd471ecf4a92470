import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../testing/localCluster';
import { ALL_SEARCH_ATTRIBUTES } from '../../lib/shared/searchAttributes';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { assertBuilt, atelier, CliProcess, waitUntil } from '../helpers/cli';
import { tempDir, writePng, writeText } from '../helpers/fixtures';

// The cluster stage: a real Temporal server (built from Go modules) on PostgreSQL, not the dev
// server. `atelier edit` is a client only (no provider key) and a separate `atelier worker`
// process serves the rows, as on a deployed cluster. It checks what the dev server hid: that
// Atelier's search attributes register on a PostgreSQL visibility store (they did not, with
// Keyword sent as Text) and that a visibility query by AtelierRunId finds the run.

const ROWS = 6;
let cluster: LocalCluster;
let standin: OpenAIStandin;

beforeAll(async () => {
  assertBuilt();
  // First run on a machine builds the server (~8 min on 2 cores; `npm test` builds it in an
  // earlier step, so this normally finds it cached).
  cluster = await startLocalCluster({ log: (l) => process.stderr.write(`[cluster] ${l}\n`) });
  standin = await startOpenAIStandin({ latencyMs: 200 });
}, 30 * 60_000);

afterAll(async () => {
  await standin?.close();
  await cluster?.close();
}, 120_000);

describe('a real Temporal cluster (PostgreSQL)', () => {
  it('runs `atelier edit --rpm` served by an `atelier worker` process; search attributes register and find the run', async () => {
    const dir = tempDir('atelier-cluster-data-');
    await writePng(join(dir, 'a.png'));
    writeText(
      join(dir, 'edits.csv'),
      ['input_images,instruction', ...Array.from({ length: ROWS }, (_, i) => `a.png,cluster-row-${i} edit`)].join('\n'),
    );
    const base: NodeJS.ProcessEnv = { ...process.env, TEMPORAL_ADDRESS: cluster.address, TEMPORAL_NAMESPACE: cluster.namespace };
    for (const k of ['TEMPORAL_API_KEY', 'TEMPORAL_TLS', 'OPENAI_API_KEY', 'OPENAI_BASE_URL']) delete base[k];
    const worker = new CliProcess(['worker', '--concurrency', '4'], {
      ...base,
      OPENAI_API_KEY: 'sk-cluster-test',
      OPENAI_BASE_URL: standin.baseURL,
      ATELIER_WORKER_LOG: join(dir, 'worker.log'),
    });
    let run: Awaited<ReturnType<typeof atelier>>;
    try {
      await worker.waitForOutput(/serving atelier-orchestrator, api-openai/);
      run = await atelier(
        [
          'edit',
          '--input',
          join(dir, 'edits.csv'),
          '--output-dir',
          join(dir, 'out'),
          '--model',
          'gpt-image-2',
          '--state-dir',
          join(dir, 'state'),
          '--rpm',
          '600',
        ],
        base,
      );
    } finally {
      expect(await worker.stop()).toBe(0);
    }
    expect(run.code, `${run.stderr}\nserver log: ${cluster.serverLog}`).toBe(0);
    expect(run.stderr).toMatch(/registered search attributes AtelierRunId/);
    // The queue rate limit is the server's (UpdateTaskQueueConfig), shared by every worker.
    expect(run.stderr).toMatch(/rate limit: 600 calls\/min on api-openai \(server-side, shared by all its workers\)/);
    const rows = parse(readFileSync(join(dir, 'out', 'results.csv')), { columns: true }) as Record<string, string>[];
    expect(rows.map((r) => r.status)).toEqual(Array(ROWS).fill('ok'));
    expect(standin.callsFor('cluster-row-')).toHaveLength(ROWS);
    const runId = /^run (\S+)/m.exec(run.stderr)?.[1];
    expect(runId).toBeTruthy();

    const connection = await Connection.connect({ address: cluster.address });
    try {
      // Registered, with the types Atelier declares (Keyword as KEYWORD, not TEXT).
      const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace: cluster.namespace });
      const { IndexedValueType } = temporal.api.enums.v1;
      for (const key of ALL_SEARCH_ATTRIBUTES) {
        expect([key.name, customAttributes?.[key.name]]).toEqual([
          key.name,
          key.type === 'INT' ? IndexedValueType.INDEXED_VALUE_TYPE_INT : IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        ]);
      }
      // And usable: the visibility store finds the run by its id and reports its row counts.
      const client = new Client({ connection, namespace: cluster.namespace });
      let found: Array<{ workflowId: string; status: string; rowsOk: unknown }> = [];
      await waitUntil(
        async () => {
          found = [];
          for await (const w of client.workflow.list({ query: `AtelierRunId = "${runId}"` })) {
            found.push({ workflowId: w.workflowId, status: w.status.name, rowsOk: w.searchAttributes.AtelierRowsOk?.[0] });
          }
          const runEntry = found.find((w) => w.workflowId === runId);
          return runEntry?.status === 'COMPLETED' && runEntry.rowsOk === ROWS && found.length === ROWS + 1;
        },
        20_000,
        `a completed run and its ${ROWS} rows with AtelierRunId=${runId} in visibility`,
      );
      expect(found.find((w) => w.workflowId === runId)).toEqual({ workflowId: runId, status: 'COMPLETED', rowsOk: ROWS });
      // The row children carry the run's id too, so the same query lists them.
      expect(found.filter((w) => w.workflowId.startsWith(`${runId}/row/`))).toHaveLength(ROWS);
    } finally {
      await connection.close();
    }
  });
});
