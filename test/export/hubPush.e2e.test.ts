import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HubStandin } from '../../standins/hub';
import type { OpenAIStandin } from '../../activities/providers/openai/standin';
import { atelier, type CliRun } from '../helpers/cli';
import { startHubTestbed, type HubTestbed } from '../helpers/hubTestbed';

// The Hub round trip the issue asks for, through the Hub stand-in (standins/hub.ts) with the real
// Python `huggingface_hub` and `datasets` on HF_ENDPOINT: huggingface_hub uploads a Parquet repo
// with images and a card naming two splits → `atelier edit --input hf://...` against the OpenAI
// stand-in → `atelier export --push-to-hub` (one commit through @huggingface/hub, stale shards
// removed, the card's own text kept) → `datasets.load_dataset` opens it with decoded images. Also:
// the commit an hf:// run read is pinned (a re-run after the branch moved reads the old rows), a
// private repo without HF_TOKEN fails clearly both ways, and a bad split/config is named with no
// provider call.

const HF_TOKEN = 'hf_test_roundtrip_7d3a9c1e5b2f4086';
const API_KEY = 'sk-test-hubpush-1f2e3d4c5b6a7980';
let bed: HubTestbed;
let hub: HubStandin;
let standin: OpenAIStandin;
let dir: string;

function edit(input: string, outputDir: string, token: string | null = HF_TOKEN): Promise<CliRun> {
  const args = ['edit', '--input', input, '--output-dir', outputDir, '--backend', 'openai', '--model', 'gpt-image-2'];
  return atelier([...args, '--state-dir', join(dir, 'state')], bed.cliEnv(token));
}

/** Nothing the CLI printed holds a token. */
function expectNoToken(run: CliRun): void {
  for (const secret of [HF_TOKEN, 'hf_wrong_token_0000']) expect(`${run.stdout}${run.stderr}`).not.toContain(secret);
}

const TABLE = `
import os, datasets
from PIL import Image
from huggingface_hub import HfApi
api = HfApi()
def table(colors, prefix):
    features = datasets.Features({"image": datasets.Image(), "instruction": datasets.Value("string")})
    return datasets.Dataset.from_dict({
        "image": [Image.new("RGB", (16, 16), c) for c in colors],
        "instruction": [f"{prefix}-{i} invert" for i in range(len(colors))],
    }, features=features)
def folder(name, files, readme):
    root = os.path.join(os.getcwd(), name)
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    for path, ds in files.items():
        ds.to_parquet(os.path.join(root, path))
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write(readme)
    return root
`;

// The source repo: a card with configs naming train and test; uploaded with huggingface_hub itself.
// The target repo already holds a two-shard export and a hand-written card, as a previous push would.
const SETUP = `${TABLE}
card = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
# Source rows
"""
api.create_repo("acme/source", repo_type="dataset")
api.upload_folder(repo_id="acme/source", repo_type="dataset", commit_message="source rows", folder_path=folder("source", {
    "data/train-00000-of-00001.parquet": table(["red", "lime", "blue"], "rt"),
    "data/test-00000-of-00001.parquet": table(["white"], "rt-test"),
}, card))
api.create_repo("acme/out", repo_type="dataset")
api.upload_folder(repo_id="acme/out", repo_type="dataset", commit_message="an earlier export", folder_path=folder("out", {
    "data/train-00000-of-00002.parquet": table(["black", "black"], "stale"),
    "data/train-00001-of-00002.parquet": table(["black"], "stale"),
}, "---\\nlicense: mit\\npretty_name: Inverted\\n---\\n# Hand-written notes\\n"))
table(["red", "lime"], "pin").push_to_hub("acme/moving")
table(["red"], "secret").push_to_hub("acme/secret", private=True)
print("ready")
`;

beforeAll(async () => {
  bed = await startHubTestbed({ token: HF_TOKEN, apiKey: API_KEY, dirPrefix: 'atelier-hub-push-' });
  ({ hub, standin, dir } = bed);
  expect(await bed.pyLast(SETUP)).toBe('ready');
}, 300_000);
afterAll(async () => bed?.close());

const commitsTo = (repo: string, branch = 'main') =>
  hub.requests.filter((r) => r.method === 'POST' && r.path === `/api/datasets/${repo}/commit/${branch}`).length;

describe('Hub → atelier edit → atelier export --push-to-hub → datasets.load_dataset', () => {
  it('edits the train split of a repo huggingface_hub uploaded, pushes it in one commit, and load_dataset reads decoded images', async () => {
    const out = join(dir, 'edited');
    const run = await edit('hf://datasets/acme/source', out);
    expect(run.code, run.stderr).toBe(0);
    // The card's configs: the train split only (the test split's row is not edited).
    expect(standin.calls.map((c) => c.prompt).sort()).toEqual(['rt-0 invert', 'rt-1 invert', 'rt-2 invert']);

    const before = commitsTo('acme/out');
    const push = await atelier(['export', out, '--format', 'hf', '--push-to-hub', 'acme/out', '--only', 'ok'], bed.cliEnv());
    expect(push.code, push.stderr).toBe(0);
    expectNoToken(push);
    expect(commitsTo('acme/out')).toBe(before + 1);
    expect(push.stderr).toMatch(/push: 1 shard\(s\), .* to dataset acme\/out@main .*removing 2 file\(s\) of the previous push/);
    expect(push.stderr).toMatch(/push: data\/train-00000-of-00001\.parquet uploaded/);
    expect(push.stdout).toMatch(
      /pushed 3 rows \(--only ok\) to dataset acme\/out@main in commit [0-9a-f]{40} \(2 file\(s\) of the previous push removed\)/,
    );

    const loaded = await bed.pyLast(`
import datasets, json
from huggingface_hub import HfApi, hf_hub_download
files = sorted(HfApi().list_repo_files("acme/out", repo_type="dataset"))
card = open(hf_hub_download("acme/out", "README.md", repo_type="dataset")).read()
ds = datasets.load_dataset("acme/out", split="train").sort("index")
f = ds.features
print(json.dumps({
    "files": files,
    "card": ["license: mit" in card, "# Hand-written notes" in card, "config_name: default" in card],
    "features": [type(f["input_image"]).__name__, type(f["output_image"]).__name__, f["instruction"].dtype],
    "rows": ds.num_rows,
    "instructions": list(ds["instruction"]),
    "pixels": [(r["input_image"].getpixel((0, 0)), r["output_image"].getpixel((0, 0))) for r in ds],
    "status": sorted(set(list(ds["status"]))),
}))
`);
    expect(JSON.parse(loaded)).toEqual({
      files: ['.gitattributes', 'README.md', 'data/train-00000-of-00001.parquet'],
      card: [true, true, true],
      features: ['Image', 'Image', 'string'],
      rows: 3,
      instructions: ['rt-0 invert', 'rt-1 invert', 'rt-2 invert'],
      // The OpenAI stand-in answers the input colour-inverted.
      pixels: [
        [
          [255, 0, 0],
          [0, 255, 255],
        ],
        [
          [0, 255, 0],
          [255, 0, 255],
        ],
        [
          [0, 0, 255],
          [255, 255, 0],
        ],
      ],
      status: ['ok'],
    });

    // Pushing again is one more commit that replaces the shard and card and leaves nothing behind.
    const again = await atelier(['export', out, '--format', 'hf', '--push-to-hub', 'acme/out'], bed.cliEnv());
    expect(again.code, again.stderr).toBe(0);
    expect(commitsTo('acme/out')).toBe(before + 2);
    expect(again.stdout).not.toMatch(/previous push removed/);
  }, 600_000);

  it('--private creates a private repo on a --revision branch: load_dataset needs the token', async () => {
    const out = join(dir, 'edited');
    const push = await atelier(
      ['export', out, '--format', 'hf', '--push-to-hub', 'acme/private-out', '--private', '--revision', 'dev'],
      bed.cliEnv(),
    );
    expect(push.code, push.stderr).toBe(0);
    expect(push.stderr).toMatch(/push: created private dataset repo acme\/private-out/);
    expect(push.stderr).toMatch(/push: created branch dev of acme\/private-out/);
    expect(hub.head('acme/private-out', 'dev')).not.toBe(hub.head('acme/private-out', 'main'));
    const script = `
import datasets
from huggingface_hub.errors import RepositoryNotFoundError
try:
    ds = datasets.load_dataset("acme/private-out", revision="dev", split="train")
    print(ds.num_rows, type(ds[0]["output_image"]).__name__)
except Exception as e:
    print("refused", type(e).__name__)
`;
    // Without the token first: with it, the HF cache would hold the data and datasets would fall back to it.
    expect(await bed.pyLast(script, bed.pyEnv(null))).toMatch(/^refused /);
    expect(await bed.pyLast(script)).toBe('3 PngImageFile');
  }, 300_000);

  it('a push without HF_TOKEN, or with a token that cannot write, fails naming the repo and HF_TOKEN', async () => {
    const out = join(dir, 'edited');
    const none = await atelier(['export', out, '--format', 'hf', '--push-to-hub', 'acme/out'], bed.cliEnv(null));
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/--push-to-hub acme\/out: set HF_TOKEN to a Hugging Face token with write access \(none is set/);
    const wrong = await atelier(['export', out, '--format', 'hf', '--push-to-hub', 'acme/out'], bed.cliEnv('hf_wrong_token_0000'));
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/--push-to-hub acme\/out: the Hub answered 401 .*the token in HF_TOKEN cannot write to dataset acme\/out/);
    expectNoToken(wrong);
    const badName = await atelier(['export', out, '--format', 'hf', '--push-to-hub', 'not-a-repo'], bed.cliEnv());
    expect(badName.code).toBe(1);
    expect(badName.stderr).toMatch(/--push-to-hub not-a-repo: expected <org>\/<name>/);
  }, 300_000);
});

describe('hf:// inputs: pinned commits and bad inputs', () => {
  it('a re-run reads the commit the first plan read, after the branch moved, and says it is pinned', async () => {
    const out = join(dir, 'pinned');
    const first = await edit('hf://datasets/acme/moving', out);
    expect(first.code, first.stderr).toBe(0);
    const pinned = hub.head('acme/moving')!;
    const plan = () => JSON.parse(readFileSync(join(out, '.atelier', 'plan.json'), 'utf8')) as { inputCommit?: string };
    expect(plan().inputCommit).toBe(pinned);

    expect(await bed.pyLast(`${TABLE}\ntable(["red", "lime"], "moved").push_to_hub("acme/moving")\nprint("moved")`)).toBe('moved');
    expect(hub.head('acme/moving')).not.toBe(pinned);
    const calls = standin.calls.length;
    // --dry-run counts at the pinned commit too: both rows done, none changed.
    const dryArgs = ['edit', '--input', 'hf://datasets/acme/moving', '--output-dir', out, '--backend', 'openai'];
    const dry = await atelier([...dryArgs, '--model', 'gpt-image-2', '--dry-run'], bed.cliEnv());
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/2 already done/);
    expect(dry.stdout).not.toMatch(/another request/);
    const readsBefore = hub.requests.length;
    const again = await edit('hf://datasets/acme/moving', out);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain(`hf://datasets/acme/moving: pinned to commit ${pinned}, which this run's first plan read`);
    // No row changed, so nothing was sent again; the Parquet reads were at the pinned commit.
    expect(standin.calls.length).toBe(calls);
    expect(again.stdout).toMatch(/ok\D*2/);
    expect(plan().inputCommit).toBe(pinned);
    const reads = hub.requests.slice(readsBefore).filter((r) => r.path.includes('/resolve/') && r.path.endsWith('.parquet'));
    expect(reads.length).toBeGreaterThan(0);
    expect(reads.every((r) => r.path.includes(`/resolve/${pinned}/`))).toBe(true);
    const rows = readFileSync(join(out, '.atelier', 'plan.jsonl'), 'utf8')
      .trim()
      .split('\n');
    expect(rows.map((l) => (JSON.parse(l) as { turns: string[] }).turns[0])).toEqual(['pin-0 invert', 'pin-1 invert']);
  }, 600_000);

  it('a private repo without HF_TOKEN, a split or config that does not exist: named, and no provider call', async () => {
    const calls = standin.calls.length;
    const secret = await edit('hf://datasets/acme/secret', join(dir, 'secret'), null);
    expect(secret.code).toBe(1);
    expect(secret.stderr).toMatch(
      /hf:\/\/datasets\/acme\/secret: the Hub answered 401 for dataset acme\/secret: .*needs a token with read access in HF_TOKEN \(none is set\)/,
    );
    const split = await edit('hf://datasets/acme/source/validation', join(dir, 'split'));
    expect(split.code).toBe(1);
    expect(split.stderr).toMatch(
      /hf:\/\/datasets\/acme\/source\/validation: dataset acme\/source@main \(commit [0-9a-f]{40}\) has no config, split, folder or Parquet file "validation" \(configs: default; splits: train, test\)/,
    );
    const configSplit = await edit('hf://datasets/acme/source/default/dev', join(dir, 'config-split'));
    expect(configSplit.code).toBe(1);
    expect(configSplit.stderr).toMatch(
      /config "default" of dataset acme\/source@main \(commit [0-9a-f]{40}\) has no split "dev"; its splits: train, test/,
    );
    expect(standin.calls.length).toBe(calls);
    // The test split by name reads its one row.
    const test = await edit('hf://datasets/acme/source/test', join(dir, 'test-split'));
    expect(test.code, test.stderr).toBe(0);
    expect(standin.calls.slice(calls).map((c) => c.prompt)).toEqual(['rt-test-0 invert']);
  }, 600_000);
});
