import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLedgerEntry } from '../../lib/run/ledger';
import { writeReviewMark } from '../../lib/run/review';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../../standins/openai';
import { assertBuilt, atelier, REPO } from '../helpers/cli';
import { tempDir, writePng, writeText } from '../helpers/fixtures';

// `atelier export --format hf` on a real run (built CLI, embedded dev server, the openai SDK against
// the stand-in), loaded back with the real Hugging Face `datasets` library from its own venv
// (built by scripts/setup-datasets-venv.sh before the tests; never installed here).

const API_KEY = 'sk-test-export-7d1f0c2b9e8a4f61';
let standin: OpenAIStandin;
let python: string;
let dir: string;
let outputDir: string;

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: standin.baseURL };
  delete e.TEMPORAL_ADDRESS;
  return e;
}

/** Loads an export with `datasets` and answers what a user of it would see, as JSON. */
const LOAD_SCRIPT = `
import json, sys
import datasets
ds = datasets.load_dataset(sys.argv[1], split="train")
rows = []
for row in ds:
    out = {}
    for name, value in row.items():
        if hasattr(value, "size") and hasattr(value, "getpixel"):
            out[name] = {"image": list(value.size), "mode": value.mode, "pixel": list(value.convert("RGB").getpixel((0, 0)))}
        elif isinstance(value, list) and value and hasattr(value[0], "getpixel"):
            out[name] = [{"image": list(v.size), "pixel": list(v.convert("RGB").getpixel((0, 0)))} for v in value]
        else:
            out[name] = value
    rows.append(out)
def kind(f):
    if isinstance(f, list):
        return ["List", type(f[0]).__name__]
    if hasattr(f, "feature"):
        return [type(f).__name__, type(f.feature).__name__]
    return type(f).__name__
features = {name: kind(f) for name, f in ds.features.items()}
print(json.dumps({"version": datasets.__version__, "num_rows": ds.num_rows, "features": features, "rows": rows}))
`;

interface Loaded {
  version: string;
  num_rows: number;
  features: Record<string, unknown>;
  rows: Array<Record<string, unknown>>;
}

function loadWithDatasets(exportDir: string): Loaded {
  const script = join(dir, 'load.py');
  writeFileSync(script, LOAD_SCRIPT);
  const out = execFileSync(python, [script, exportDir], {
    encoding: 'utf8',
    env: { ...process.env, HF_DATASETS_OFFLINE: '1', HF_HUB_OFFLINE: '1', HF_HOME: join(dir, 'hf-home') },
  });
  return JSON.parse(out.trim().split('\n').at(-1)!) as Loaded;
}

beforeAll(async () => {
  assertBuilt();
  const venv = spawnSync('bash', [join(REPO, 'scripts', 'setup-datasets-venv.sh'), '--check'], { encoding: 'utf8' });
  if (venv.status !== 0) throw new Error(`the datasets venv is missing (npm test builds it first): ${venv.stderr}`);
  python = join(venv.stdout.trim().split('\n').at(-1)!, 'bin', 'python');
  standin = await startOpenAIStandin();
  dir = tempDir('atelier-export-');
  await writePng(join(dir, 'imgs', 'red.png'), '#ff0000', 48);
  await writePng(join(dir, 'imgs', 'blue.png'), '#0000ff', 32);
  writeText(
    join(dir, 'edits.csv'),
    [
      'index,input_images,instruction,source,weight',
      '0,imgs/red.png,export-ok-0 make it cyan,camera,1.5',
      '1,"[""imgs/red.png"",""imgs/blue.png""]",export-ok-1 combine them,web,2',
      '2,imgs/blue.png,export-refused-2 refuse me,web,',
    ].join('\n'),
  );
  standin.script('export-refused-2', [faults.moderationBlocked()], { repeat: true });
  outputDir = join(dir, 'out');
  const run = await atelier(
    [
      'edit',
      '--input',
      join(dir, 'edits.csv'),
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
  expect(run.code, run.stderr).toBe(2);
});
afterAll(async () => standin?.close());

describe('atelier export --format hf', () => {
  it('writes Parquet shards that datasets loads as they are: images decoded, statuses, costs and the input columns', async () => {
    const out = join(dir, 'hf-all');
    const run = await atelier(['export', outputDir, '--format', 'hf', '--out', out], env());
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/exported 3 rows/);
    expect(readdirSync(join(out, 'data'))).toEqual(['train-00000-of-00001.parquet']);

    const loaded = loadWithDatasets(out);
    expect(loaded.num_rows).toBe(3);
    // Image features, not plain structs: `datasets` decodes them to PIL images.
    expect(loaded.features).toMatchObject({
      input_images: ['List', 'Image'],
      output_image: 'Image',
      instruction: 'Value',
      source: 'Value',
      weight: 'Value',
    });
    const [ok0, ok1, refused] = loaded.rows;
    // CSV cells are text: the input's own columns keep the reader's strings.
    // The stand-in's "edit" inverts the input: red in, cyan out.
    expect(ok0).toMatchObject({
      index: 0,
      status: 'ok',
      error: null,
      instruction: 'export-ok-0 make it cyan',
      source: 'camera',
      weight: '1.5',
      attempts: 1,
    });
    expect(ok0!.input_images).toEqual([{ image: [48, 48], pixel: [255, 0, 0] }]);
    expect(ok0!.output_image).toMatchObject({ pixel: [0, 255, 255] });
    expect(ok0!.cost_usd).toBeGreaterThan(0);
    expect(ok0!.latency_ms).toBeGreaterThanOrEqual(0);
    expect(ok1!.input_images).toEqual([
      { image: [48, 48], pixel: [255, 0, 0] },
      { image: [32, 32], pixel: [0, 0, 255] },
    ]);
    expect(refused).toMatchObject({ index: 2, status: 'failed', output_image: null, source: 'web' });
    expect(String(refused!.error)).toMatch(/^Blocked: /);
  });

  it('--only ok and --only accepted keep the rows asked for; no match is an error that says so', async () => {
    const okOnly = join(dir, 'hf-ok');
    expect((await atelier(['export', outputDir, '--out', okOnly, '--only', 'ok'], env())).code).toBe(0);
    expect(loadWithDatasets(okOnly).rows.map((r) => r.index)).toEqual([0, 1]);

    const none = await atelier(['export', outputDir, '--out', join(dir, 'hf-none'), '--only', 'accepted'], env());
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no row of .* matches --only accepted/);

    const entry = (await readLedgerEntry(outputDir, 1))!;
    await writeReviewMark(outputDir, {
      index: 1,
      verdict: 'accepted',
      outputImages: entry.outputImages!,
      entryFinishedAt: entry.finishedAt,
      at: new Date().toISOString(),
    });
    const accepted = join(dir, 'hf-accepted');
    expect((await atelier(['export', outputDir, '--out', accepted, '--only', 'accepted'], env())).code).toBe(0);
    const rows = loadWithDatasets(accepted).rows;
    expect(rows.map((r) => [r.index, r.review])).toEqual([[1, 'accepted']]);
  });

  it('results.parquet lies beside results.csv: every row, typed, read by pyarrow', () => {
    const script =
      "import json, sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); print(json.dumps({'schema': {f.name: str(f.type) for f in t.schema}, 'rows': t.to_pylist()}))";
    const out = JSON.parse(execFileSync(python, ['-c', script, join(outputDir, 'results.parquet')], { encoding: 'utf8' })) as {
      schema: Record<string, string>;
      rows: Array<Record<string, unknown>>;
    };
    expect(out.schema).toMatchObject({
      index: 'string',
      instruction: 'string',
      output_image: 'list<element: string>',
      status: 'string',
      attempts: 'int64',
      cost_usd: 'double',
    });
    expect(out.rows.map((r) => [r.index, r.status, r.output_image])).toEqual([
      ['0', 'ok', ['000000.png']],
      ['1', 'ok', ['000001.png']],
      ['2', 'failed', []],
    ]);
  });

  it('refuses a non-empty --out, an unknown format and an unknown run, naming them', async () => {
    const busy = join(dir, 'busy');
    writeText(join(busy, 'keep.txt'), 'mine');
    const full = await atelier(['export', outputDir, '--out', busy], env());
    expect(full.code).toBe(1);
    expect(full.stderr).toContain(`--out ${busy} is not empty`);
    const format = await atelier(['export', outputDir, '--out', join(dir, 'x'), '--format', 'csv'], env());
    expect(format.code).toBe(1);
    expect(format.stderr).toMatch(/--format csv: the only format is hf/);
    const unknown = await atelier(['export', 'no-such-run', '--out', join(dir, 'y'), '--state-dir', join(dir, 'state')], env());
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no-such-run is neither an output dir nor a run id/);
  });
});
