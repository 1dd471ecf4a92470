import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevServer, type DevServerHandle } from '../lib/temporal/devServer';
import { UsageError } from '../lib/shared/errors';
import { findTemporalCli } from '../lib/temporal/temporalCli';
import { clientConnectionOptions, connectNative, describeTarget, temporalTargetFromEnv } from '../lib/temporal/temporalConnection';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier, CliProcess, REPO } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';
import { makePki, startTlsFront, type Pki, type TlsFront } from './helpers/tlsFront';

// Connecting to a TLS Temporal with the environment settings Temporal's CLI and SDKs use. The dev
// server has no TLS option, so a TLS-terminating gRPC front (test/helpers/tlsFront.ts: mutual TLS,
// a server certificate valid only for `temporal.test`, not for 127.0.0.1) stands before it; the
// CLI client and an `atelier worker` process both go through it.

const SERVER_NAME = 'temporal.test';
const API_KEY = 'tmprl-test-key-8c1f0b6d2e4a';

let dir: string;
let pki: Pki;
let server: DevServerHandle;
let front: TlsFront;
let standin: OpenAIStandin;

beforeAll(async () => {
  assertBuilt();
  dir = tempDir('atelier-tls-');
  pki = makePki(dir, SERVER_NAME);
  server = await startDevServer({ temporalPath: findTemporalCli(), stateDir: join(dir, 'server'), headless: true });
  front = await startTlsFront(pki, server.address);
  standin = await startOpenAIStandin();
});
afterAll(async () => {
  await front?.close();
  await server?.stop();
  await standin?.close();
});

function tlsEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    TEMPORAL_ADDRESS: front.address,
    TEMPORAL_TLS_CLIENT_CERT_PATH: pki.clientCert,
    TEMPORAL_TLS_CLIENT_KEY_PATH: pki.clientKey,
    TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.ca,
    TEMPORAL_TLS_SERVER_NAME: SERVER_NAME,
    TEMPORAL_API_KEY: API_KEY,
    ...extra,
  };
}

function filesUnder(root: string): string[] {
  return readdirSync(root, { recursive: true, encoding: 'utf8' })
    .map((f) => join(root, f))
    .filter((f) => statSync(f).isFile());
}

describe('Temporal connection settings from the environment', () => {
  it('reads the envconfig names: an API key or a TLS file implies TLS, TEMPORAL_TLS decides, conflicts are refused', () => {
    expect(temporalTargetFromEnv({ TEMPORAL_ADDRESS: 'h:7233' }).tls).toBeUndefined();
    expect(temporalTargetFromEnv({ TEMPORAL_ADDRESS: 'h:7233', TEMPORAL_TLS: 'true' }).tls).toEqual({});
    const cloud = temporalTargetFromEnv({
      TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233',
      TEMPORAL_NAMESPACE: 'ns.acct',
      TEMPORAL_API_KEY: API_KEY,
    });
    expect(cloud.tls).toEqual({});
    expect(cloud.namespace).toBe('ns.acct');
    expect(describeTarget(cloud)).not.toContain(API_KEY);
    expect(temporalTargetFromEnv({ TEMPORAL_ADDRESS: 'h:7233', TEMPORAL_API_KEY: API_KEY, TEMPORAL_TLS: 'false' }).tls).toBeUndefined();
    const data = temporalTargetFromEnv({
      TEMPORAL_ADDRESS: 'h:7233',
      TEMPORAL_TLS_SERVER_CA_CERT_DATA: readFileSync(pki.ca, 'utf8'),
      TEMPORAL_GRPC_META_X_TENANT: 'a',
    });
    expect(Buffer.from(data.tls!.serverRootCACertificate!).toString()).toBe(readFileSync(pki.ca, 'utf8'));
    expect(data.metadata).toEqual({ 'x-tenant': 'a' });
    const refused = (env: Record<string, string>) => () => temporalTargetFromEnv({ TEMPORAL_ADDRESS: 'h:7233', ...env });
    expect(refused({ TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.ca, TEMPORAL_TLS_SERVER_CA_CERT_DATA: 'x' })).toThrow(/not both/);
    expect(refused({ TEMPORAL_TLS_CLIENT_CERT_PATH: pki.clientCert })).toThrow(/needs both/);
    expect(refused({ TEMPORAL_TLS: 'yes' })).toThrow(UsageError);
    expect(refused({ TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: 'true' })).toThrow(/not supported/);
    expect(refused({ TEMPORAL_TLS_CLIENT_CERT_PATH: join(dir, 'nope.pem'), TEMPORAL_TLS_CLIENT_KEY_PATH: pki.clientKey })).toThrow(
      /cannot be read/,
    );
  });

  it('runs `atelier edit` and an `atelier worker` through mutual TLS with an API key; the key is sent, never written', async () => {
    const data = tempDir('atelier-tls-data-');
    await writePng(join(data, 'a.png'));
    writeText(join(data, 'edits.csv'), ['input_images,instruction', 'a.png,tls-row-1 warm', 'a.png,tls-row-2 cool'].join('\n'));
    const base = { ...process.env, ...tlsEnv() } as NodeJS.ProcessEnv;
    const worker = new CliProcess(['worker', '--concurrency', '4'], {
      ...base,
      OPENAI_API_KEY: 'sk-tls-test',
      OPENAI_BASE_URL: standin.baseURL,
    });
    try {
      await worker.waitForOutput(
        /serving atelier-orchestrator, api-openai on .*TLS with client certificate, own CA, server name temporal\.test, API key/,
      );
      const run = await atelier(
        [
          'edit',
          '--input',
          join(data, 'edits.csv'),
          '--output-dir',
          join(data, 'out'),
          '--model',
          'gpt-image-2',
          '--state-dir',
          join(data, 'state'),
        ],
        base,
      );
      expect(run.code, run.stderr).toBe(0);
      expect(readFileSync(join(data, 'out', 'results.csv'), 'utf8').match(/,ok,/g)).toHaveLength(2);
      expect(standin.callsFor('tls-row-')).toHaveLength(2);
      expect(`${run.stdout}${run.stderr}${worker.output}`).not.toContain(API_KEY);
    } finally {
      await worker.stop();
    }
    // Every call, from the client (grpc-js) and the worker (Rust core) alike, came with the
    // client certificate and the key; both kinds of call went through the front.
    const paths = front.calls.map((c) => c.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        '/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution',
        '/temporal.api.workflowservice.v1.WorkflowService/PollActivityTaskQueue',
      ]),
    );
    expect(front.calls.every((c) => c.clientCn === 'atelier-test-client' && c.authorization === `Bearer ${API_KEY}`)).toBe(true);
    for (const f of filesUnder(data)) expect(readFileSync(f).includes(API_KEY), f).toBe(false);
  });

  it('connects the Python GPU worker (atelier_gpu.connect) with the same settings', async () => {
    // The GPU worker's own connect function, in the project's GPU venv (gpu-workers/scripts/python.sh,
    // built by `npm test` before vitest), through the same front.
    const code = [
      'import asyncio',
      'from atelier_gpu.connect import connect',
      'async def main():',
      '    client = await connect(sys.argv[1], "default")',
      '    await client.count_workflows()',
      '    print("connected")',
      'import sys',
      'asyncio.run(main())',
    ].join('\n');
    const before = front.calls.length;
    const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(
        'bash',
        [join(REPO, 'gpu-workers', 'scripts', 'python.sh'), '-c', code, front.address],
        { env: { ...process.env, ...tlsEnv() }, timeout: 120_000 },
        (err, stdout, stderr) =>
          // How it ended goes with the output: an exit code, a signal or a spawn error.
          resolve({
            code: err ? 1 : 0,
            stdout,
            stderr: err
              ? `${stderr}\n[${err.message}; code ${String((err as { code?: unknown }).code)}, signal ${String(err.signal)}]`
              : stderr,
          }),
      ),
    );
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout.trim()).toBe('connected');
    expect(`${out.stdout}${out.stderr}`).not.toContain(API_KEY);
    const calls = front.calls.slice(before);
    expect(calls.map((c) => c.path)).toContain('/temporal.api.workflowservice.v1.WorkflowService/CountWorkflowExecutions');
    expect(calls.every((c) => c.clientCn === 'atelier-test-client' && c.authorization === `Bearer ${API_KEY}`)).toBe(true);
  });

  it('fails to connect without the right CA, server name or client certificate', async () => {
    const attempts: Array<[string, Record<string, string>]> = [
      ['another CA', { TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.otherCa }],
      ['no server name (the certificate is not for 127.0.0.1)', { TEMPORAL_TLS_SERVER_NAME: '' }],
      ['no client certificate', { TEMPORAL_TLS_CLIENT_CERT_PATH: '', TEMPORAL_TLS_CLIENT_KEY_PATH: '' }],
    ];
    for (const [what, extra] of attempts) {
      const target = temporalTargetFromEnv(tlsEnv(extra));
      // A short connect timeout: a refused handshake otherwise waits out the SDK's retries.
      const client = await Connection.connect({ ...clientConnectionOptions(target), connectTimeout: 2000 }).then(
        async (c) => {
          await c.close();
          return 'connected';
        },
        () => 'refused',
      );
      const native = await connectNative(target).then(
        async (c) => {
          await c.close();
          return 'connected';
        },
        () => 'refused',
      );
      expect([what, client, native]).toEqual([what, 'refused', 'refused']);
    }
    // The same settings with everything right do connect (so the refusals above are about TLS).
    const ok = await connectNative(temporalTargetFromEnv(tlsEnv()));
    await ok.close();
  });
});
