import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO } from '../helpers/cli';
import { composeCheck, composeCheckBinary } from '../helpers/composeCheck';
import { tempDir } from '../helpers/fixtures';

// docker-compose.yml as `docker compose` would load it (schema, interpolation, references), with
// .env.example as the env file, with and without the gpu profile; and broken copies, which must be
// refused with a message naming the problem. No Docker engine is involved.

interface Project {
  services: Record<
    string,
    {
      image?: string;
      profiles?: string[];
      deploy?: { replicas?: number; resources?: { reservations?: { devices?: Array<{ driver?: string; capabilities?: string[] }> } } };
      environment?: Record<string, string>;
      depends_on?: Record<string, { condition: string }>;
    }
  >;
}

const ENV_FILE = join(REPO, '.env.example');
let bin: string;

beforeAll(async () => {
  bin = await composeCheckBinary();
}, 600_000);

async function load(args: string[], cwd = REPO): Promise<Project> {
  const r = await composeCheck(bin, ['-json', '-env-file', ENV_FILE, ...args], cwd);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as Project;
}

/** A copy of the compose file with `edit` applied, in a folder of its own. */
function brokenCopy(edit: (text: string) => string): string {
  const dir = tempDir('atelier-compose-');
  const text = readFileSync(join(REPO, 'docker-compose.yml'), 'utf8');
  const changed = edit(text);
  expect(changed).not.toBe(text); // the edit must have applied, or the test proves nothing
  writeFileSync(join(dir, 'docker-compose.yml'), changed);
  return dir;
}

describe('docker-compose.yml', () => {
  it('loads without profiles: the cluster and scalable workers, no GPU worker', async () => {
    const p = await load(['docker-compose.yml']);
    expect(Object.keys(p.services).sort()).toEqual([
      'atelier-worker',
      'postgresql',
      's3',
      'temporal',
      'temporal-namespace',
      'temporal-schema',
      'temporal-ui',
    ]);
    expect(p.services.temporal?.image).toBe('temporalio/server:1.30.1');
    expect(p.services['temporal-schema']?.image).toBe('temporalio/admin-tools:1.30.1');
    expect(p.services['temporal-ui']?.image).toBe('temporalio/ui:2.34.0');
    expect(p.services.postgresql?.image).toBe('postgres:16');
    expect(p.services.s3?.image).toBe('versity/versitygw:v1.8.0');
    expect(p.services['atelier-worker']?.deploy?.replicas).toBe(2);
    expect(p.services.temporal?.depends_on?.['temporal-schema']?.condition).toBe('service_completed_successfully');
    const env = p.services['atelier-worker']?.environment ?? {};
    expect(env.TEMPORAL_ADDRESS).toBe('temporal:7233');
    expect(env.AWS_ACCESS_KEY_ID).toBe('atelier');
    expect(Object.keys(env)).toEqual(
      expect.arrayContaining(['OPENAI_API_KEY', 'GEMINI_API_KEY', 'OPENROUTER_API_KEY', 'MODELSCOPE_API_KEY', 'AWS_SECRET_ACCESS_KEY']),
    );
  });

  it('loads with -profiles gpu: the GPU worker reserves NVIDIA GPUs', async () => {
    const p = await load(['-profiles', 'gpu', 'docker-compose.yml']);
    const gpu = p.services['gpu-worker'];
    expect(gpu?.profiles).toEqual(['gpu']);
    expect(gpu?.deploy?.resources?.reservations?.devices).toEqual([expect.objectContaining({ driver: 'nvidia', capabilities: ['gpu'] })]);
    expect(Object.keys(p.services)).toContain('atelier-worker');
  });

  it('refuses an unknown key, naming it', async () => {
    const dir = brokenCopy((t) => t.replace('    deploy:\n      replicas:', '    replica: 3\n    deploy:\n      replicas:'));
    const r = await composeCheck(bin, ['-q', '-env-file', ENV_FILE, 'docker-compose.yml'], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/services\.atelier-worker\.replica false schema/);
  });

  it('refuses depends_on naming a service that does not exist', async () => {
    const dir = brokenCopy((t) => t.replace('    depends_on:\n      temporal-schema:', '    depends_on:\n      temporal-schemaa:'));
    const r = await composeCheck(bin, ['-q', '-env-file', ENV_FILE, 'docker-compose.yml'], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/temporal-schemaa/);
    expect(r.stderr).toMatch(/depends on undefined service|undefined/);
  });

  it('refuses to start without a required variable, naming it', async () => {
    const dir = tempDir('atelier-compose-');
    copyFileSync(join(REPO, 'docker-compose.yml'), join(dir, 'docker-compose.yml'));
    const env = readFileSync(ENV_FILE, 'utf8')
      .split('\n')
      .filter((l) => !l.startsWith('POSTGRES_PASSWORD='))
      .join('\n');
    writeFileSync(join(dir, 'partial.env'), env);
    const r = await composeCheck(bin, ['-q', '-env-file', 'partial.env', 'docker-compose.yml'], dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/required variable POSTGRES_PASSWORD is missing a value: set POSTGRES_PASSWORD in \.env/);
  });
});
