import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDataset, type DatasetRow } from '../../lib/dataset';
import { runBlobStore } from '../../lib/dataset/blobs';
import { DatasetError } from '../../lib/shared/errors';
import { startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { LocalStorage } from '../../storage/local';
import { assertBuilt, atelier, REPO } from '../helpers/cli';
import { tempDir } from '../helpers/fixtures';

// `datasets`' on-disk format and WebDataset shards, in and out, with the real Python libraries on
// both sides (from the cached venv scripts/setup-datasets-venv.sh builds; nothing installed here):
// `datasets` (save_to_disk) and `webdataset` (TarWriter) make the inputs, the built CLI edits them
// against the OpenAI stand-in (which inverts colours: red in, cyan out), and `datasets`
// (load_from_disk) and `webdataset` (WebDataset) read what `atelier export` wrote.

const API_KEY = 'sk-test-formats-4b2e9a0c7d1f3e85';
let standin: OpenAIStandin;
let python: string;
let dir: string;

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
  delete e.TEMPORAL_ADDRESS;
  return e;
}

function py(script: string, ...args: string[]): string {
  const file = join(dir, `script-${Math.random().toString(36).slice(2)}.py`);
  writeFileSync(file, script);
  return execFileSync(python, [file, ...args], {
    encoding: 'utf8',
    cwd: dir,
    env: { ...process.env, HF_DATASETS_OFFLINE: '1', HF_HUB_OFFLINE: '1', HF_HOME: join(dir, 'hf-home') },
  });
}

/** Inputs made by the libraries users make them with. */
const MAKE_INPUTS = `
import io, json, os, tarfile
import datasets, webdataset as wds
from PIL import Image

def png(color, size=16):
    b = io.BytesIO(); Image.new("RGB", (size, size), color).save(b, "PNG"); return b.getvalue()

features = datasets.Features({"image": datasets.Image(), "instruction": datasets.Value("string"), "source": datasets.Value("string")})
rows = {
    "image": [Image.new("RGB", (16, 16), c) for c in ["red", "lime", "blue"]],
    "instruction": ["fmt-arrow-0 invert", "fmt-arrow-1 invert", "fmt-arrow-2 invert"],
    "source": ["a", "b", "c"],
}
datasets.Dataset.from_dict(rows, features=features).save_to_disk("arrow-in", num_shards=2)
dd = datasets.DatasetDict({
    "train": datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8), "red")], "instruction": ["fmt-dd-0 invert"], "source": ["t"]}, features=features),
    "test": datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8), "blue")], "instruction": ["fmt-dd-test invert"], "source": ["u"]}, features=features),
})
dd.save_to_disk("dd")

# Big enough (noise, ~480 KB each: a row with its output nears 1 MB) that a 1 MB export shard holds at most two rows.
def noise(seed, size=400):
    import random
    r = random.Random(seed)
    return Image.frombytes("RGB", (size, size), bytes(r.getrandbits(8) for _ in range(size * size * 3)))

with wds.TarWriter("wds-000000.tar") as sink:
    sink.write({"__key__": "s000", "png": noise(0), "txt": "fmt-wds-0 invert"})
    sink.write({"__key__": "s001", "png": noise(1), "json": {"instruction": "fmt-wds-1 invert", "tag": "json"}})
with wds.TarWriter("wds-000001.tar") as sink:
    sink.write({"__key__": "s002", "jpg": Image.new("RGB", (16, 16), "red"), "txt": "fmt-wds-2 invert"})

# Bad shards: images and no instruction; a shard cut in the middle of an image.
with wds.TarWriter("no-instructions.tar") as sink:
    sink.write({"__key__": "k0", "png": png("red")})
good = open("wds-000000.tar", "rb").read()
open("truncated.tar", "wb").write(good[:8000])
print(json.dumps({"datasets": datasets.__version__, "webdataset": getattr(wds, "__version__", "?")}))
`;

async function readAll(path: string): Promise<DatasetRow[]> {
  const storeBlob = runBlobStore(new LocalStorage(join(tempDir(), 'out')));
  const rows: DatasetRow[] = [];
  for await (const row of readDataset(path, { instructionKey: 'instruction', storeBlob }, () => undefined)) rows.push(row);
  return rows;
}

async function edit(input: string, outputDir: string) {
  return atelier(
    [
      'edit',
      '--input',
      input,
      '--output-dir',
      outputDir,
      '--backend',
      'openai',
      '--model',
      'gpt-image-2',
      '--state-dir',
      join(dir, 'state'),
      '--retry-initial-ms',
      '100',
    ],
    env(),
  );
}

beforeAll(async () => {
  assertBuilt();
  const venv = spawnSync('bash', [join(REPO, 'scripts', 'setup-datasets-venv.sh'), '--check'], { encoding: 'utf8' });
  if (venv.status !== 0) throw new Error(`the datasets venv is missing (npm test builds it first): ${venv.stderr}`);
  python = join(venv.stdout.trim().split('\n').at(-1)!, 'bin', 'python');
  standin = await startOpenAIStandin();
  dir = tempDir('atelier-formats-');
  py(MAKE_INPUTS);
});
afterAll(async () => standin?.close());

describe('datasets save_to_disk folders (Arrow) in and out', () => {
  it('edits a save_to_disk folder of two shards and exports a folder load_from_disk opens with Image features', async () => {
    const outputDir = join(dir, 'arrow-out');
    const run = await edit(join(dir, 'arrow-in'), outputDir);
    expect(run.code, run.stderr).toBe(0);
    const out = join(dir, 'arrow-export');
    const exported = await atelier(['export', outputDir, '--format', 'arrow', '--out', out], env());
    expect(exported.code, exported.stderr).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['.atelier-export.json', 'data-00000-of-00001.arrow', 'dataset_info.json', 'state.json']);
    const loaded = JSON.parse(
      py(
        `
import json, sys, datasets
ds = datasets.load_from_disk(sys.argv[1])
print(json.dumps({
  "features": {k: type(v).__name__ for k, v in ds.features.items()},
  "rows": [{"index": r["index"], "status": r["status"], "instruction": r["instruction"], "source": r["source"],
            "input": list(r["input_image"].convert("RGB").getpixel((0, 0))),
            "output": list(r["output_image"].convert("RGB").getpixel((0, 0)))} for r in ds],
}))`,
        out,
      ),
    ) as { features: Record<string, string>; rows: Array<Record<string, unknown>> };
    expect(loaded.features).toMatchObject({ input_image: 'Image', output_image: 'Image', instruction: 'Value', source: 'Value' });
    expect(loaded.rows).toEqual([
      { index: 0, status: 'ok', instruction: 'fmt-arrow-0 invert', source: 'a', input: [255, 0, 0], output: [0, 255, 255] },
      { index: 1, status: 'ok', instruction: 'fmt-arrow-1 invert', source: 'b', input: [0, 255, 0], output: [255, 0, 255] },
      { index: 2, status: 'ok', instruction: 'fmt-arrow-2 invert', source: 'c', input: [0, 0, 255], output: [255, 255, 0] },
    ]);
  });

  it('a DatasetDict folder needs a split: without one the error names the splits; with one it reads that split', async () => {
    const whole = await edit(join(dir, 'dd'), join(dir, 'dd-out'));
    expect(whole.code).toBe(1);
    expect(whole.stderr).toContain(
      `${join(dir, 'dd')} is a DatasetDict with splits train, test: give one, e.g. --input ${join(dir, 'dd', 'train')}`,
    );
    const rows = await readAll(join(dir, 'dd', 'test'));
    expect(rows.map((r) => [r.turns, r.where, r.images[0]!.kind])).toEqual([
      [['fmt-dd-test invert'], 'test/data-00000-of-00001.arrow row 0', 'blob'],
    ]);
  });
});

describe('WebDataset shards in and out', () => {
  it('edits a brace pattern of shards (instruction from .txt or .json) and exports shards of the size asked that webdataset iterates', async () => {
    const outputDir = join(dir, 'wds-out');
    const run = await edit(join(dir, 'wds-{000000..000001}.tar'), outputDir);
    expect(run.code, run.stderr).toBe(0);
    expect(standin.calls.filter((c) => c.prompt.startsWith('fmt-wds-')).map((c) => c.prompt)).toEqual(
      expect.arrayContaining(['fmt-wds-0 invert', 'fmt-wds-1 invert', 'fmt-wds-2 invert']),
    );
    const out = join(dir, 'wds-export');
    const exported = await atelier(['export', outputDir, '--format', 'webdataset', '--shard-size-mb', '1', '--out', out], env());
    expect(exported.code, exported.stderr).toBe(0);
    const shards = readdirSync(out)
      .filter((n) => n !== '.atelier-export.json')
      .sort();
    expect(shards.length).toBeGreaterThan(1);
    expect(shards.every((s) => /^shard-\d{6}\.tar$/.test(s))).toBe(true);
    const samples = JSON.parse(
      py(
        `
import json, sys, webdataset as wds
ds = wds.WebDataset(sys.argv[1], shardshuffle=False).decode("pil")
out = []
for s in ds:
    meta = s["json"]
    out.append({"key": s["__key__"], "fields": sorted(k for k in s if not k.startswith("__")), "txt": s["txt"],
                "status": meta["status"], "__key__": meta["__key__"], "tag": meta.get("tag"),
                "input": list(s["input_image.png"].convert("RGB").getpixel((0, 0))) if "input_image.png" in s else None,
                "output": list(s["output_image.png"].convert("RGB").getpixel((0, 0)))})
print(json.dumps(out))`,
        join(out, `shard-{000000..${String(shards.length - 1).padStart(6, '0')}}.tar`),
      ),
    ) as Array<Record<string, unknown>>;
    expect(samples.map((s) => [s.key, s.txt, s.status, s.__key__, s.tag])).toEqual([
      ['000000', 'fmt-wds-0 invert', 'ok', 's000', null],
      ['000001', 'fmt-wds-1 invert', 'ok', 's001', 'json'],
      ['000002', 'fmt-wds-2 invert', 'ok', 's002', null],
    ]);
    expect(samples[0]!.fields).toEqual(['input_image.png', 'json', 'output_image.png', 'txt']);
    // The JPEG input keeps its type; the stand-in's answer is a PNG.
    expect(samples[2]!.fields).toEqual(['input_image.jpg', 'json', 'output_image.png', 'txt']);
    const output = samples[2]!.output as number[];
    expect(output[0]).toBeLessThan(20);
    expect(output[1]).toBeGreaterThan(235);
  });

  it('a tar with images but no instructions fails planning with the shard and sample named, and no provider call', async () => {
    const before = standin.calls.length;
    const run = await edit(join(dir, 'no-instructions.tar'), join(dir, 'bad-out'));
    expect(run.code).not.toBe(0);
    expect(run.stderr + run.stdout).toMatch(/no-instructions\.tar: sample "k0": no instruction: no \.instruction\.txt or \.txt member/);
    expect(standin.calls.length).toBe(before);
  });

  it('a truncated shard and a missing shard are errors naming the shard and the member', async () => {
    await expect(readAll(join(dir, 'truncated.tar'))).rejects.toThrow(
      /truncated\.tar: truncated in member "s000\.png" \(header at byte \d+\): it needs \d+ bytes, \d+ are there/,
    );
    await expect(readAll(join(dir, 'wds-{000000..000003}.tar'))).rejects.toThrow(
      /2 of 4 shard\(s\) not found: .*wds-000002\.tar, .*wds-000003\.tar/,
    );
    const notTar = join(dir, 'not-a.tar');
    writeFileSync(notTar, readFileSync(join(dir, 'arrow-in', 'state.json')));
    await expect(readAll(notTar)).rejects.toThrow(DatasetError);
  });
});
