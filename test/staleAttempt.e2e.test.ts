import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { readFileSync } from 'node:fs';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../lib/temporal/devServer';
import { startModelScopeStandin, type ModelScopeStandin } from '../activities/providers/modelscope/standin';
import { assertBuilt, atelier, CliProcess, waitUntil } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';

// Stale attempts never pay (issue 23), through real processes, as the issue found it: a provider
// worker frozen (SIGSTOP: a suspended VM, a long GC pause) with its polls open receives the row's
// attempt through one of them; the attempt times out on its heartbeat and the row fails; the worker
// then wakes (SIGCONT) holding that attempt. Paid calls (submits) are counted at the stand-in: the woken
// attempt, long dead for the server, makes none.
//
// (A worker frozen in the middle of an attempt, here while downloading the input, is also stopped
// by the SDK's cancellation once its first heartbeat after waking is refused; the attempt's own
// checks, activities/attemptFence.ts, do not depend on that race.)

// ModelScope: a provider with no model list, so `edit` asks no worker of its queue before the run
// (the frozen worker would take that question instead of the row's attempt).
const API_KEY = 'ms-test-stale-7e6d5c4b3a';
let standin: ModelScopeStandin;
const processes: CliProcess[] = [];

beforeAll(async () => {
  assertBuilt();
  standin = await startModelScopeStandin();
});

afterAll(async () => {
  // Workers first, the server last (SIGINT: it stops the Temporal binary it started).
  for (const p of processes.reverse()) {
    if (p.child.exitCode === null) p.child.kill('SIGCONT');
    await p.stop('SIGINT');
  }
  await standin?.close();
});

function start(args: string[], env: NodeJS.ProcessEnv): CliProcess {
  const p = new CliProcess(args, env);
  processes.push(p);
  return p;
}

describe('stale attempts never pay', () => {
  it("a provider worker frozen with the row's attempt in its poll wakes after the attempt timed out: it makes no call", async () => {
    const stateDir = tempDir('atelier-stale-state-');
    const port = await freePort();
    let uiPort = await freePort();
    while (uiPort === port) uiPort = await freePort();
    const server = start(['server', '--state-dir', stateDir, '--port', String(port), '--ui-port', String(uiPort)], { ...process.env });
    await server.waitForOutput(/address: 127\.0\.0\.1:\d+/);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      TEMPORAL_ADDRESS: `127.0.0.1:${port}`,
      MODELSCOPE_API_KEY: API_KEY,
      MODELSCOPE_BASE_URL: standin.baseURL,
      MODELSCOPE_POLL_INTERVAL_MS: '50',
    };
    const dir = tempDir('atelier-stale-data-');
    await writePng(join(dir, 'in.png'));
    const csv = join(dir, 'rows.csv');
    writeText(csv, ['image,instruction', 'in.png,stale-0 make it warmer'].join('\n'));
    const outputDir = join(dir, 'out');

    // The orchestrator apart from the provider worker, so freezing that one stalls no workflow task.
    const orchestrator = start(['worker', '--queues', 'atelier-orchestrator'], env);
    await orchestrator.waitForOutput(/serving atelier-orchestrator/);
    const frozen = start(['worker', '--queues', 'api-modelscope'], env);
    await frozen.waitForOutput(/serving api-modelscope/);
    // Its polls are open once the server lists it among the queue's pollers (the line above comes first).
    const connection = await Connection.connect({ address: `127.0.0.1:${port}` });
    try {
      await waitUntil(
        async () => {
          const { pollers } = await connection.workflowService.describeTaskQueue({
            namespace: 'default',
            taskQueue: { name: 'api-modelscope' },
            taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
          });
          return (pollers ?? []).some((p) => p.identity?.startsWith(`${frozen.child.pid}@`));
        },
        60_000,
        'the provider worker to poll',
      );
    } finally {
      await connection.close();
    }
    // Frozen with its polls open (a poll lives about a minute on the server): the row's one attempt
    // is handed to one of them.
    frozen.child.kill('SIGSTOP');
    const run = await atelier(
      [
        'edit',
        '--input',
        csv,
        '--output-dir',
        outputDir,
        '--backend',
        'modelscope',
        '--model',
        'Qwen/Qwen-Image-Edit-2509',
        '--heartbeat-timeout',
        '3',
        '--max-retries',
        '0',
        '--state-dir',
        stateDir,
      ],
      env,
    );
    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(2);
    const results = parse(readFileSync(join(outputDir, 'results.csv')), { columns: true }) as Record<string, string>[];
    expect(results.map((r) => r.status)).toEqual(['failed']);
    expect(results[0]!.error).toMatch(/[Hh]eartbeat/);
    expect(standin.callsFor('stale-0')).toHaveLength(0);

    frozen.child.kill('SIGCONT');
    // Until the woken attempt either calls or says why it did not.
    await waitUntil(
      () => standin.callsFor('stale-0').length > 0 || /stale attempt/.test(frozen.output),
      120_000,
      'the woken attempt to call or to stop',
    ).catch((err: Error) => {
      console.error(`the woken worker said:\n${frozen.output.slice(-6000)}`);
      throw err;
    });
    expect(standin.callsFor('stale-0'), frozen.output.slice(-3000)).toHaveLength(0);
    expect(frozen.output).toMatch(/stale attempt 1 of row 0: .*; the provider call \(call 0\) not made/);
  }, 300_000);
});
