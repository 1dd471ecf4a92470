import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parse } from 'csv-parse/sync';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrchestrationActivities } from '../../activities/orchestration';
import { ORCHESTRATOR_QUEUE } from '../../lib/shared/constants';
import type { DatasetRunSummary, DatasetWorkflowInput, ProgressSnapshot } from '../../lib/shared/types';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { createWorkers, runWorkersUntil } from '../../workers';
import { progressQuery, resumeSignal } from '../../workflows/messages';
import { tempDir, writePng, writeText } from '../helpers/fixtures';
import { runDataset as runWith, startTestServer, testInput } from '../helpers/temporalEnv';

// One test per data-plane defect found by trying Atelier as a new user would (issue 10). Each
// failed on the code before the storage layer.

const API_KEY = 'sk-test-dataplane-3d9c1b7e20aa4f65';

let env: TestWorkflowEnvironment;
let standin: OpenAIStandin;
const workerEnv = () => ({ OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL });

beforeAll(async () => {
  ({ env } = await startTestServer());
  standin = await startOpenAIStandin();
});

afterAll(async () => {
  await standin?.close();
  await env?.teardown();
});

const runDataset = (input: DatasetWorkflowInput) => runWith(env, input, workerEnv());

function results(csv: string): Record<string, string>[] {
  return parse(readFileSync(csv), { columns: true }) as Record<string, string>[];
}

/** A dataset of `rows` rows with one input image each; instructions carry `tag` so calls can be counted. */
async function dataset(tag: string, rows: number, extraColumns: (i: number) => Record<string, string> = () => ({})): Promise<string> {
  const dir = tempDir('atelier-dp-data-');
  await writePng(join(dir, 'in.png'), '#101010');
  const extra = Object.keys(extraColumns(0));
  const lines = [['input_images', 'instruction', ...extra].join(',')];
  for (let i = 0; i < rows; i++) lines.push(['in.png', `${tag} row ${i}`, ...extra.map((k) => extraColumns(i)[k])].join(','));
  writeText(join(dir, 'rows.csv'), lines.join('\n'));
  return join(dir, 'rows.csv');
}

describe('the data plane never loses, mixes or double-pays a row', () => {
  it('refuses to write through a symlink inside the output dir: the row fails as InputError, nothing lands outside, no call', async () => {
    const inputPath = await dataset('dp-symlink', 2, (i) => ({ name: i === 0 ? 'link/x.png' : 'fine.png' }));
    const outputDir = join(tempDir('atelier-dp-out-'), 'out');
    const elsewhere = tempDir('atelier-dp-elsewhere-');
    mkdirSync(outputDir, { recursive: true });
    symlinkSync(elsewhere, join(outputDir, 'link'));
    const summary = await runDataset(testInput({ runId: 'dp-symlink', inputPath, outputDir, outputNameColumn: 'name' }));
    expect(summary).toMatchObject({ total: 2, ok: 1, failed: 1 });
    expect(readdirSync(elsewhere)).toEqual([]);
    expect(standin.callsFor('dp-symlink row 0')).toHaveLength(0);
    const rows = results(join(outputDir, 'results.csv'));
    expect(rows[0]!.error).toMatch(/^InputError: .*symbolic link/);
    expect(rows[1]!.status).toBe('ok');
  });

  it('lets exactly one of two runs racing for one output dir proceed, and pays each row once', async () => {
    const inputPath = await dataset('dp-race', 8);
    const outputDir = join(tempDir('atelier-dp-out-'), 'out');
    const a = testInput({ runId: 'dp-race-a', inputPath, outputDir, params: { quality: 'low' } });
    const b = testInput({ runId: 'dp-race-b', inputPath, outputDir, params: { quality: 'high' } });
    // One worker set (as one `atelier server` would have), two runs started at the same moment.
    const workers = await createWorkers({
      connection: env.nativeConnection,
      namespace: 'default',
      env: workerEnv(),
      workerOptions: { shutdownGraceTime: '1 second' },
    });
    const start = (input: DatasetWorkflowInput) =>
      env.client.workflow.execute('datasetWorkflow', {
        taskQueue: ORCHESTRATOR_QUEUE,
        workflowId: input.runId,
        args: [input],
      }) as Promise<DatasetRunSummary>;
    const outcomes = await runWorkersUntil(workers, Promise.allSettled([start(a), start(b)]));
    const ok = outcomes.filter((o): o is PromiseFulfilledResult<DatasetRunSummary> => o.status === 'fulfilled');
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(ok).toHaveLength(1);
    expect(refused).toHaveLength(1);
    const cause = (refused[0]!.reason as { cause?: { message?: string; type?: string } }).cause;
    expect(cause?.type).toBe('OutputDirInUse');
    expect(cause?.message).toMatch(/already holds run dp-race-[ab].*--run-id dp-race-[ab]/);
    expect(standin.callsFor('dp-race')).toHaveLength(8);
    const owner = JSON.parse(readFileSync(join(outputDir, '.atelier', 'run.json'), 'utf8')) as { runId: string };
    expect(ok[0]!.value.runId).toBe(owner.runId);
  });

  it('claims an output dir with one create-only write: of concurrent claims by two runs exactly one wins, every time', async () => {
    const inputPath = await dataset('dp-claim', 1);
    const { planRun } = createOrchestrationActivities();
    for (let round = 0; round < 10; round++) {
      const outputDir = join(tempDir('atelier-dp-out-'), 'out');
      const claims = await Promise.allSettled(
        ['a', 'b', 'c', 'd'].map((id) =>
          planRun(testInput({ runId: `dp-claim-${round}-${id}`, inputPath, outputDir, params: { quality: id } })),
        ),
      );
      const refused = claims.filter((c): c is PromiseRejectedResult => c.status === 'rejected');
      expect(claims.filter((c) => c.status === 'fulfilled')).toHaveLength(1);
      expect(refused).toHaveLength(3);
      for (const r of refused) expect((r.reason as { type?: string }).type).toBe('OutputDirInUse');
    }
  });

  it('does a row again when its instruction changes in place, and realigns every row when one is inserted above', async () => {
    const dir = tempDir('atelier-dp-data-');
    await writePng(join(dir, 'red.png'), '#ff0000');
    await writePng(join(dir, 'blue.png'), '#0000ff');
    const csv = join(dir, 'rows.csv');
    writeText(csv, ['input_images,instruction', 'red.png,dp-change first', 'blue.png,dp-change second'].join('\n'));
    const outputDir = join(tempDir('atelier-dp-out-'), 'out');
    const input = testInput({ runId: 'dp-change', inputPath: csv, outputDir });
    await runDataset(input);
    expect(standin.callsFor('dp-change')).toHaveLength(2);

    writeText(csv, ['input_images,instruction', 'red.png,"dp-change first, edited"', 'blue.png,dp-change second'].join('\n'));
    const edited = await runDataset(input);
    expect(edited).toMatchObject({ total: 2, ok: 2 });
    expect(standin.callsFor('dp-change first, edited')).toHaveLength(1);
    expect(standin.callsFor('dp-change second')).toHaveLength(1);
    const jsonl = readFileSync(join(outputDir, 'results.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(jsonl[0]).toMatchObject({ instruction: 'dp-change first, edited', status: 'ok', replaced_changed_output: true });

    // A new row at the top, no index column: every row's index shifts, so every output is redone
    // from its own input (the stand-in inverts colours: red → cyan, blue → yellow).
    writeText(
      csv,
      ['input_images,instruction', 'blue.png,dp-change inserted', 'red.png,"dp-change first, edited"', 'blue.png,dp-change second'].join(
        '\n',
      ),
    );
    await runDataset(input);
    const rows = results(join(outputDir, 'results.csv'));
    expect(rows.map((r) => [r.instruction, r.status, r.output_image])).toEqual([
      ['dp-change inserted', 'ok', '000000.png'],
      ['dp-change first, edited', 'ok', '000001.png'],
      ['dp-change second', 'ok', '000002.png'],
    ]);
    const pixel = async (name: string) => [...(await sharp(join(outputDir, name)).raw().toBuffer()).subarray(0, 3)];
    expect(await pixel('000000.png')).toEqual([255, 255, 0]);
    expect(await pixel('000001.png')).toEqual([0, 255, 255]);
    expect(await pixel('000002.png')).toEqual([255, 255, 0]);
  });

  it('fails names the filesystem refuses at planning, before any call (NUL, 300 characters, file/folder clash)', async () => {
    const names = ['bad\u0000name.png', `${'n'.repeat(300)}.png`, 'clash.png', 'clash.png/inner.png'];
    const dir = tempDir('atelier-dp-data-');
    await writePng(join(dir, 'in.png'));
    writeText(
      join(dir, 'rows.jsonl'),
      names.map((name, i) => JSON.stringify({ images: ['in.png'], instruction: `dp-names row ${i}`, name })).join('\n'),
    );
    const outputDir = join(tempDir('atelier-dp-out-'), 'out');
    const summary = await runDataset(
      testInput({ runId: 'dp-names', inputPath: join(dir, 'rows.jsonl'), outputDir, outputNameColumn: 'name' }),
    );
    expect(summary).toMatchObject({ total: 4, ok: 1, failed: 3 });
    expect(standin.callsFor('dp-names')).toHaveLength(1);
    const rows = results(join(outputDir, 'results.csv'));
    expect(rows.map((r) => r.status)).toEqual(['failed', 'failed', 'ok', 'failed']);
    expect(rows[0]!.error).toMatch(/InputError: .*NUL/);
    expect(rows[1]!.error).toMatch(/InputError: .*304 bytes; the limit is 255/);
    expect(rows[3]!.error).toMatch(/InputError: .*needs clash\.png as a folder/);
  });

  it('pauses the run when writing an output is refused after the provider answered, and finishes from the stored answer on resume: one call', async () => {
    const inputPath = await dataset('dp-readonly', 1, () => ({ name: 'ro/out.png' }));
    const outputDir = join(tempDir('atelier-dp-out-'), 'out');
    const ro = join(outputDir, 'ro');
    mkdirSync(ro, { recursive: true });
    // A read-only mount: EROFS even for root, as a full or foreign disk would answer.
    execFileSync('mount', ['--bind', ro, ro]);
    let mounted = true;
    try {
      execFileSync('mount', ['-o', 'remount,ro,bind', ro]);
      const input = testInput({ runId: 'dp-readonly', inputPath, outputDir, outputNameColumn: 'name' });
      const workers = await createWorkers({
        connection: env.nativeConnection,
        namespace: 'default',
        env: workerEnv(),
        workerOptions: { shutdownGraceTime: '1 second' },
      });
      const handle = await env.client.workflow.start('datasetWorkflow', {
        taskQueue: ORCHESTRATOR_QUEUE,
        workflowId: input.runId,
        args: [input],
      });
      const finished = (async () => {
        let snapshot: ProgressSnapshot | undefined;
        for (let i = 0; i < 200 && snapshot?.phase !== 'paused'; i++) {
          await new Promise((r) => setTimeout(r, 100));
          snapshot = await handle.query(progressQuery);
        }
        expect(snapshot?.phase).toBe('paused');
        expect(snapshot?.paused?.reason).toMatch(/writing the run's files failed: .*ro\/out\.png.*read-only file system/i);
        expect(standin.callsFor('dp-readonly')).toHaveLength(1);
        // Nothing on disk that the ledger does not account for: no output, no temp file.
        expect(readdirSync(ro)).toEqual([]);
        execFileSync('umount', [ro]);
        mounted = false;
        await handle.signal(resumeSignal);
        return (await handle.result()) as DatasetRunSummary;
      })();
      const summary = await runWorkersUntil(workers, finished);
      expect(summary).toMatchObject({ total: 1, ok: 1 });
      expect(standin.callsFor('dp-readonly')).toHaveLength(1);
      expect(existsSync(join(ro, 'out.png'))).toBe(true);
      expect(readdirSync(join(outputDir, '.atelier', 'answers')).filter((n) => n.endsWith('.json'))).toEqual([]);
    } finally {
      if (mounted) execFileSync('umount', [ro]);
    }
  });

  it('fails the run with the storage problem named when the output dir cannot be written at planning', async () => {
    const inputPath = await dataset('dp-plan-ro', 1);
    const outputDir = join(tempDir('atelier-dp-out-'), 'out');
    mkdirSync(outputDir, { recursive: true });
    execFileSync('mount', ['--bind', outputDir, outputDir]);
    try {
      execFileSync('mount', ['-o', 'remount,ro,bind', outputDir]);
      const err = await runDataset(testInput({ runId: 'dp-plan-ro', inputPath, outputDir })).catch((e: unknown) => e);
      const cause = (err as { cause?: { message?: string; type?: string } }).cause;
      expect(cause?.type).toBe('StorageError');
      expect(cause?.message).toMatch(/^planning failed: .*out.*read-only file system/i);
      expect(standin.callsFor('dp-plan-ro')).toHaveLength(0);
    } finally {
      execFileSync('umount', [outputDir]);
    }
  });

  it('keeps the real provider error when it echoes a 3 MB prompt: one call, the error cut to a few KB', async () => {
    const inputPath = await dataset('dp-echo', 1);
    const outputDir = join(tempDir('atelier-dp-out-'), 'out');
    const echoed = 'x'.repeat(3 * 1024 * 1024);
    standin.script(
      'dp-echo',
      [
        {
          status: 400,
          body: { error: { message: `Invalid prompt: ${echoed}`, type: 'invalid_request_error', param: 'prompt', code: null } },
        },
      ],
      { repeat: true },
    );
    const summary = await runDataset(
      testInput({
        runId: 'dp-echo',
        inputPath,
        outputDir,
        retry: { maxAttempts: 3, initialIntervalMs: 100, maximumIntervalMs: 500, heartbeatTimeoutMs: 5000 },
      }),
    );
    expect(summary).toMatchObject({ total: 1, failed: 1, failedByType: { InvalidRequest: 1 } });
    expect(standin.callsFor('dp-echo')).toHaveLength(1);
    const [row] = results(join(outputDir, 'results.csv'));
    expect(row!.error).toMatch(/^InvalidRequest: .*Invalid prompt: x+… \[\d+ more characters cut\]$/);
    expect(row!.error!.length).toBeLessThan(5000);
  });

  describe('bounded downloads', () => {
    let server: Server;
    let web: string;
    let hits: Record<string, number>;

    beforeAll(async () => {
      hits = {};
      const chunk = Buffer.alloc(1024 * 1024, 7);
      server = createServer((req, res) => {
        hits[req.url!] = (hits[req.url!] ?? 0) + 1;
        if (req.url === '/endless.png') {
          // 600 MB, streamed: without a cap the whole of it would be buffered.
          res.writeHead(200, { 'content-type': 'image/png' });
          let sent = 0;
          const pump = () => {
            while (sent < 600 && res.write(chunk)) sent++;
            if (sent < 600) res.once('drain', pump);
            else res.end();
          };
          pump();
        } else if (req.url === '/hang.png') {
          // Headers, then nothing, ever.
          res.writeHead(200, { 'content-type': 'image/png' });
          res.flushHeaders();
        } else if (req.url === '/to-file.png') {
          res.writeHead(302, { location: 'file:///etc/passwd' }).end();
        } else res.writeHead(404).end();
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      web = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(() => {
      server?.closeAllConnections();
      server?.close();
    });

    it('fails an oversized, a hanging and a file:// redirected URL as InputError, in bounded time, each fetched once', async () => {
      const dir = tempDir('atelier-dp-data-');
      writeText(
        join(dir, 'rows.csv'),
        [
          'input_images,instruction',
          `${web}/endless.png,dp-dl big`,
          `${web}/hang.png,dp-dl hang`,
          `${web}/to-file.png,dp-dl redirect`,
        ].join('\n'),
      );
      const outputDir = join(tempDir('atelier-dp-out-'), 'out');
      const started = Date.now();
      const summary = await runDataset(
        testInput({
          runId: 'dp-downloads',
          inputPath: join(dir, 'rows.csv'),
          outputDir,
          download: { maxBytes: 5 * 1024 * 1024, timeoutMs: 2000 },
        }),
      );
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(summary).toMatchObject({ total: 3, failed: 3, failedByType: { InputError: 3 } });
      expect(standin.callsFor('dp-dl')).toHaveLength(0);
      expect(hits).toEqual({ '/endless.png': 1, '/hang.png': 1, '/to-file.png': 1 });
      const rows = results(join(outputDir, 'results.csv'));
      expect(rows[0]!.error).toMatch(/more than the 5 MB limit \(--max-download-mb\)/);
      expect(rows[1]!.error).toMatch(/no complete answer within 2 s/);
      expect(rows[2]!.error).toMatch(/redirected to a file: URL; only http\(s\) is followed/);
    });
  });
});
