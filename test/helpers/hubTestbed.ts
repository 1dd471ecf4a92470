import { execFile, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startHubStandin, type HubStandin } from '../../standins/hub';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { assertBuilt, REPO } from './cli';
import { tempDir } from './fixtures';

// What the Hub round-trip tests (test/export/hub*.e2e) share: the Hub stand-in with one token for
// org `acme`, the OpenAI stand-in, the datasets venv's Python (the real huggingface_hub and
// datasets) pointed at the stand-in, and the environments for Python and for the built CLI.

const execFileAsync = promisify(execFile);

export interface HubTestbed {
  hub: HubStandin;
  standin: OpenAIStandin;
  /** A temporary folder: Python's working directory and HF_HOME live in it. */
  dir: string;
  /** Python's environment: HF_ENDPOINT on the stand-in, Git LFS (no Xet), HF_TOKEN unless `token` is null. */
  pyEnv(token?: string | null): NodeJS.ProcessEnv;
  /** Runs a Python script (without blocking this process: the Hub stand-in it talks to lives here); its stdout. */
  py(script: string, env?: NodeJS.ProcessEnv): Promise<string>;
  /** The last line the script printed. */
  pyLast(script: string, env?: NodeJS.ProcessEnv): Promise<string>;
  /** The CLI's environment: the OpenAI stand-in, HF_ENDPOINT, HF_TOKEN unless `token` is null, no TEMPORAL_ADDRESS. */
  cliEnv(token?: string | null): NodeJS.ProcessEnv;
  close(): Promise<void>;
}

export async function startHubTestbed(options: { token: string; apiKey: string; dirPrefix: string }): Promise<HubTestbed> {
  assertBuilt();
  const venv = spawnSync('bash', [join(REPO, 'scripts', 'setup-datasets-venv.sh'), '--check'], { encoding: 'utf8' });
  if (venv.status !== 0) throw new Error(`the datasets venv is missing (npm test builds it first): ${venv.stderr}`);
  const python = join(venv.stdout.trim().split('\n').at(-1)!, 'bin', 'python');
  const hub = await startHubStandin({ tokens: { [options.token]: 'acme' } });
  const standin = await startOpenAIStandin();
  const dir = tempDir(options.dirPrefix);
  const withToken = (e: NodeJS.ProcessEnv, token: string | null): NodeJS.ProcessEnv => {
    delete e.HF_TOKEN;
    if (token) e.HF_TOKEN = token;
    return e;
  };
  const pyEnv = (token: string | null = options.token): NodeJS.ProcessEnv =>
    withToken(
      { ...process.env, HF_ENDPOINT: hub.baseURL, HF_HUB_DISABLE_XET: '1', HF_HOME: join(dir, 'hf-home'), HF_HUB_DISABLE_TELEMETRY: '1' },
      token,
    );
  const py = async (script: string, env = pyEnv()): Promise<string> => {
    const file = join(dir, `script-${Math.random().toString(36).slice(2)}.py`);
    writeFileSync(file, script);
    const { stdout } = await execFileAsync(python, [file], { encoding: 'utf8', cwd: dir, env, timeout: 240_000 });
    return stdout;
  };
  return {
    hub,
    standin,
    dir,
    pyEnv,
    py,
    pyLast: async (script, env) => (await py(script, env)).trim().split('\n').at(-1)!,
    cliEnv(token: string | null = options.token) {
      const e = withToken(
        { ...process.env, OPENAI_API_KEY: options.apiKey, OPENAI_BASE_URL: standin.baseURL, HF_ENDPOINT: hub.baseURL },
        token,
      );
      delete e.TEMPORAL_ADDRESS;
      return e;
    },
    async close() {
      await standin.close();
      await hub.close();
    },
  };
}
