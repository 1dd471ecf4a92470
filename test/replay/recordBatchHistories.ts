import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, it } from 'vitest';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { runDataset, startTestServer, testInput } from '../helpers/temporalEnv';

// Records the histories of one `--batch` run for test/replay/replay.test.ts (6 rows, one
// line failing in the batch (500) and sent down the direct path, one refused by the safety system
// and left failed) and its batch job child. Not part of the
// suite; run it when the batch workflow code changes on purpose, as
//   ATELIER_FIXTURE_TAG=<short commit> npx vitest run --config test/replay/vitest.recordBatch.mts
// and commit the new folder (old fixtures stay: the code must keep replaying them).

const TAG = process.env.ATELIER_FIXTURE_TAG ?? 'dev';
const OUT = join(__dirname, 'fixtures', `batch-${TAG}`);

let env: TestWorkflowEnvironment;
let openai: OpenAIStandin;

beforeAll(async () => {
  ({ env } = await startTestServer());
  openai = await startOpenAIStandin({ batch: { validatingMs: 50, inProgressMs: 200, finalizingMs: 50 } });
  mkdirSync(OUT, { recursive: true });
});
afterAll(async () => {
  await openai?.close();
  await env?.teardown();
});

it('records a --batch run', async () => {
  const dir = tempDir('atelier-rec-batch-');
  await writePng(join(dir, 'a.png'), '#336699');
  writeText(
    join(dir, 'rows.csv'),
    ['input_images,instruction', ...Array.from({ length: 6 }, (_, i) => `a.png,rec-${i} warmer`)].join('\n'),
  );
  openai.script('rec-3 ', [faults.serverError()]);
  // Refused by the safety system: final, the direct pass leaves it (atelier-batch-fallback-final).
  openai.script('rec-4 ', [faults.moderationBlocked()], { repeat: true });
  const runId = 'rec-batch';
  await runDataset(
    env,
    testInput({
      runId,
      inputPath: join(dir, 'rows.csv'),
      outputDir: join(dir, 'out'),
      batch: { fallback: 'direct', pollInitialMs: 200, pollMaxMs: 400 },
    }),
    { OPENAI_API_KEY: 'sk-record-openai', OPENAI_BASE_URL: openai.baseURL },
  );
  const ids = [runId];
  for await (const execution of env.client.workflow.list({ query: `WorkflowType = 'batchJobWorkflow'` })) ids.push(execution.workflowId);
  for (const [k, id] of ids.entries()) {
    const history = await env.client.workflow.getHandle(id).fetchHistory();
    const name = k === 0 ? 'batch.dataset.binpb' : `batch.job${k > 1 ? k : ''}.binpb`;
    writeFileSync(join(OUT, name), temporal.api.history.v1.History.encode(temporal.api.history.v1.History.fromObject(history)).finish());
  }
});
