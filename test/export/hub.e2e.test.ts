import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDataset, type DatasetRow } from '../../lib/dataset';
import { runBlobStore } from '../../lib/dataset/blobs';
import { readHubDataset, type HubReadStats } from '../../lib/dataset/hub';
import type { HubStandin } from '../../standins/hub';
import { LocalStorage } from '../../storage/local';
import type { OpenAIStandin } from '../../activities/providers/openai/standin';
import { atelier } from '../helpers/cli';
import { tempDir } from '../helpers/fixtures';
import { startHubTestbed, type HubTestbed } from '../helpers/hubTestbed';

// Datasets on the Hub, through the Hub stand-in (standins/hub.ts) checked with the real Python
// `huggingface_hub` and `datasets` (HF_ENDPOINT pointing at it): `datasets.push_to_hub` uploads a
// repo (preupload, the LFS batch API and the commit API), and the built CLI edits it from hf://
// with ranged reads. HF_HUB_DISABLE_XET: the stand-in offers Git LFS only, as a Hub mirror may.

const HF_TOKEN = 'hf_test_writer_5c1e8b7a2d9f4036';
const API_KEY = 'sk-test-hub-8e1d2c3b4a5f6e70';
let bed: HubTestbed;
let hub: HubStandin;
let standin: OpenAIStandin;
let dir: string;

const PUSH = `
import datasets
from PIL import Image
features = datasets.Features({"image": datasets.Image(), "instruction": datasets.Value("string")})
ds = datasets.Dataset.from_dict({
    "image": [Image.new("RGB", (16, 16), c) for c in ["red", "lime", "blue"]],
    "instruction": ["hub-0 invert", "hub-1 invert", "hub-2 invert"],
}, features=features)
ds.push_to_hub("acme/edits")
ds.select([0]).push_to_hub("acme/secret", private=True)
print("pushed")
`;

beforeAll(async () => {
  bed = await startHubTestbed({ token: HF_TOKEN, apiKey: API_KEY, dirPrefix: 'atelier-hub-' });
  ({ hub, standin, dir } = bed);
  await bed.py(PUSH);
}, 300_000);
afterAll(async () => bed?.close());

describe('the Hub stand-in, with the real huggingface_hub and datasets', () => {
  it('datasets.push_to_hub uploads through preupload, LFS and commit; load_dataset reads it back', async () => {
    expect(hub.requests.some((r) => r.method === 'POST' && r.path.endsWith('.git/info/lfs/objects/batch'))).toBe(true);
    expect(hub.requests.some((r) => r.method === 'PUT' && r.path.startsWith('/lfs-upload/'))).toBe(true);
    const out = await bed.py(`
import datasets
ds = datasets.load_dataset("acme/edits", split="train")
print(ds.num_rows, ds[2]["instruction"], ds[2]["image"].getpixel((0, 0)))
`);
    expect(out.trim().split('\n').at(-1)).toBe('3 hub-2 invert (0, 0, 255)');
  });

  it('a private repo without the token is the client RepositoryNotFoundError (401)', async () => {
    const out = await bed.py(
      `
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError
try:
    HfApi().dataset_info("acme/secret")
    print("read")
except RepositoryNotFoundError as e:
    print("not found", e.response.status_code)
`,
      bed.pyEnv(null),
    );
    expect(out.trim()).toBe('not found 401');
  });
});

/** Reads an hf:// input in this process, with HF_ENDPOINT and HF_TOKEN as given. */
async function readHub(input: string, token: string | undefined, stats?: HubReadStats): Promise<DatasetRow[]> {
  const saved = { endpoint: process.env.HF_ENDPOINT, token: process.env.HF_TOKEN };
  process.env.HF_ENDPOINT = hub.baseURL;
  if (token) process.env.HF_TOKEN = token;
  else delete process.env.HF_TOKEN;
  try {
    const storeBlob = runBlobStore(new LocalStorage(join(tempDir(), 'out')));
    const options = { instructionKey: 'instruction', storeBlob };
    const rows: DatasetRow[] = [];
    const source = stats ? readHubDataset(input, options, undefined, stats) : readDataset(input, options, () => undefined);
    for await (const row of source) rows.push(row);
    return rows;
  } finally {
    for (const [key, value] of [
      ['HF_ENDPOINT', saved.endpoint],
      ['HF_TOKEN', saved.token],
    ] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

describe('--input hf://datasets/<org>/<name>', () => {
  it('atelier edit reads a Hub repo at its resolved commit with ranged reads and edits every row', async () => {
    const outputDir = join(dir, 'hub-out');
    const run = await atelier(
      [
        'edit',
        '--input',
        'hf://datasets/acme/edits',
        '--output-dir',
        outputDir,
        '--backend',
        'openai',
        '--model',
        'gpt-image-2',
        '--state-dir',
        join(dir, 'state'),
      ],
      bed.cliEnv(),
    );
    expect(run.code, run.stderr).toBe(0);
    expect(standin.calls.map((c) => c.prompt).sort()).toEqual(['hub-0 invert', 'hub-1 invert', 'hub-2 invert']);
    // The Parquet file was read by ranges at the commit main pointed to, not downloaded whole by name.
    const head = hub.head('acme/edits')!;
    const reads = hub.requests.filter((r) => r.method === 'GET' && r.path.includes('/resolve/') && r.path.endsWith('.parquet') && r.range);
    expect(reads.length).toBeGreaterThan(0);
    expect(reads.every((r) => r.path.includes(`/resolve/${head}/`))).toBe(true);
  });

  it('a private repo needs HF_TOKEN: without it the error names the repo and the variable; with it the rows are read', async () => {
    await expect(readHub('hf://datasets/acme/secret', undefined)).rejects.toThrow(
      /hf:\/\/datasets\/acme\/secret: the Hub answered 401 for dataset acme\/secret: .*needs a token with read access in HF_TOKEN \(none is set\)/,
    );
    await expect(readHub('hf://datasets/acme/secret', 'hf_wrong')).rejects.toThrow(/the token in HF_TOKEN has no access to it/);
    const rows = await readHub('hf://datasets/acme/secret', HF_TOKEN);
    expect(rows.map((r) => r.turns[0])).toEqual(['hub-0 invert']);
  });

  it('a repo that does not exist and a revision that does not exist are named', async () => {
    await expect(readHub('hf://datasets/acme/nothing', HF_TOKEN)).rejects.toThrow(
      /no dataset repo acme\/nothing on http:\/\/127\.0\.0\.1:\d+/,
    );
    await expect(readHub('hf://datasets/acme/edits@v9', HF_TOKEN)).rejects.toThrow(/dataset acme\/edits has no revision "v9"/);
    await expect(readHub('hf://models/acme/edits', HF_TOKEN)).rejects.toThrow(/expected hf:\/\/datasets\/<org>\/<name>/);
  });

  it('a revision and a path pick what is read; the stats say the commit and the bytes read', async () => {
    const stats: HubReadStats = { repoBytes: 0, bytesRead: 0, requests: 0 };
    const head = hub.head('acme/edits')!;
    const rows = await readHub(`hf://datasets/acme/edits@${head}/data`, undefined, stats);
    expect(rows.map((r) => r.where)).toEqual([0, 1, 2].map((i) => `data/train-00000-of-00001.parquet row ${i}`));
    expect(stats.commit).toBe(head);
    expect(stats.bytesRead).toBeGreaterThan(0);
  });
});
