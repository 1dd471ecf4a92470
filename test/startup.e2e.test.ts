import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { optionalTsToMs } from '@temporalio/common/lib/time';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevServer } from '../lib/temporal/devServer';
import { findTemporalCli } from '../lib/temporal/temporalCli';
import { startOpenAIStandin, type OpenAIStandin } from '../activities/providers/openai/standin';
import { assertBuilt, atelier, REPO } from './helpers/cli';
import { tempDir, writePng, writeText } from './helpers/fixtures';

// Start-up (issue 26). What a command loads before it can start its server is paid on every run:
// packages for one input format, one command or one provider load where they are used. A
// provider's SDK is loaded only where its queue is served: @google/genai alone costs a few hundred
// ms of module loading. The real CLI runs an OpenAI edit (in-process
// workers serving the orchestrator and api-openai queues) with a preload that writes every module
// it required to a file at exit; the Gemini SDK must not be among them, the OpenAI SDK must.

let standin: OpenAIStandin;

beforeAll(async () => {
  assertBuilt();
  standin = await startOpenAIStandin();
});
afterAll(async () => standin?.close());

/** The modules a process required, written at exit by a preload (`--require`). */
function loadedModulesHook(dir: string): { hook: string; list: string } {
  const hook = join(dir, 'loaded-modules.cjs');
  const list = join(dir, 'loaded-modules.json');
  writeText(
    hook,
    `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(list)}, JSON.stringify(Object.keys(require.cache))));\n`,
  );
  return { hook, list };
}

describe('provider SDKs load with their queue', () => {
  it('an OpenAI edit (CLI and its in-process workers) never loads @google/genai', async () => {
    const dir = tempDir('atelier-lazy-sdks-');
    await writePng(join(dir, 'a.png'));
    writeText(join(dir, 'edits.csv'), ['input_images,instruction', 'a.png,lazy-sdk brighten', 'a.png,lazy-sdk darken'].join('\n'));
    const { hook, list } = loadedModulesHook(dir);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      OPENAI_API_KEY: 'sk-test-lazy-sdks',
      OPENAI_BASE_URL: standin.baseURL,
      // Keys of other providers present: their queues are still not served by this run.
      GEMINI_API_KEY: 'gemini-key-not-used',
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${hook}`.trim(),
    };
    delete env.TEMPORAL_ADDRESS;
    const run = await atelier(
      [
        'edit',
        '--input',
        join(dir, 'edits.csv'),
        '--output-dir',
        join(dir, 'out'),
        '--backend',
        'openai',
        '--model',
        'gpt-image-2',
        '--state-dir',
        join(dir, 'state'),
      ],
      env,
    );
    expect(run.code, run.stderr).toBe(0);
    const loaded = JSON.parse(readFileSync(list, 'utf8')) as string[];
    // The hook sees SDKs at all: the served provider's is there.
    expect(loaded.some((p) => /[/\\]node_modules[/\\]openai[/\\]/.test(p))).toBe(true);
    expect(loaded.filter((p) => /[/\\]node_modules[/\\]@google[/\\]genai[/\\]/.test(p))).toEqual([]);
    // A local CSV in, a local folder out: no other format's reader, no S3 client, no GPU contract.
    expect(loaded.filter((p) => FORMAT_PACKAGES.test(p))).toEqual([]);
  });
});

/** Packages for one input format (Arrow, Parquet, the Hub), S3, the GPU contract's validator, the card's YAML. */
const FORMAT_PACKAGES =
  /[/\\]node_modules[/\\](apache-arrow|@huggingface[/\\]hub|hyparquet|hyparquet-compressors|@aws-sdk[/\\]client-s3|ajv|yaml)[/\\]/;

describe('the CLI before its command runs', () => {
  it('loads no provider SDK, worker SDK, image library, format reader or S3 client', () => {
    // What `require('dist/cli/main.js')` pulls in is loaded before any command can start a server.
    const script = `require(${JSON.stringify(join(REPO, 'dist', 'cli', 'main.js'))}); process.stdout.write(JSON.stringify(Object.keys(require.cache)))`;
    const loaded = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as string[];
    expect(loaded.some((p) => /[/\\]node_modules[/\\]commander[/\\]/.test(p))).toBe(true);
    const eager =
      /[/\\]node_modules[/\\](openai|@google[/\\]genai|@temporalio[/\\]worker|sharp|hyparquet-writer|@huggingface[/\\]hub|apache-arrow|hyparquet|@aws-sdk[/\\][^/\\]+|ajv|yaml)[/\\]/;
    expect(loaded.filter((p) => eager.test(p)).map((p) => p.replace(/.*[/\\]node_modules[/\\]/, ''))).toEqual([]);
  });
});

describe('the embedded dev server', () => {
  it('starts with 30 days of retention on its namespace (set over gRPC, not by a second CLI process)', async () => {
    const server = await startDevServer({
      temporalPath: findTemporalCli(),
      stateDir: join(tempDir('atelier-retention-'), 'state'),
      headless: true,
    });
    const connection = await Connection.connect({ address: server.address });
    try {
      const described = await connection.workflowService.describeNamespace({ namespace: 'default' });
      expect(optionalTsToMs(described.config?.workflowExecutionRetentionTtl)).toBe(30 * 24 * 3600_000);
    } finally {
      await connection.close();
      await server.stop();
    }
  });
});
