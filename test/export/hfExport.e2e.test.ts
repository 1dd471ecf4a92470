import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLedgerEntry } from '../../lib/run/ledger';
import { writeReviewMark } from '../../lib/run/review';
import { layout } from '../../lib/run/runStore';
import { startViewer } from '../../web/server';
import { faults, startOpenAIStandin, type OpenAIStandin } from '../../activities/providers/openai/standin';
import { assertBuilt, atelier, CliProcess, REPO } from '../helpers/cli';
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
      // Its image is not there: the row fails with an input error and the export must still work.
      '3,imgs/gone.png,export-missing-3 edit a missing file,web,',
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
    expect(run.stdout).toMatch(/exported 4 rows/);
    expect(readdirSync(join(out, 'data'))).toEqual(['train-00000-of-00001.parquet']);

    const loaded = loadWithDatasets(out);
    expect(loaded.num_rows).toBe(4);
    // Image features, not plain structs: `datasets` decodes them to PIL images.
    expect(loaded.features).toMatchObject({
      input_images: ['List', 'Image'],
      output_image: 'Image',
      instruction: 'Value',
      source: 'Value',
      weight: 'Value',
    });
    const [ok0, ok1, refused, missing] = loaded.rows;
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
    expect(missing).toMatchObject({ index: 3, status: 'failed', input_images: [], output_image: null });
    expect(String(missing!.error)).toMatch(/input image not found/);
  });

  it('a row whose input image is missing is exported without it, and the export says how many rows and which', async () => {
    const out = join(dir, 'hf-missing');
    const run = await atelier(['export', outputDir, '--format', 'hf', '--out', out], env());
    expect(run.code, run.stderr).toBe(0);
    // No stack trace: one line that counts the rows and names them, with the file that is missing.
    expect(run.stderr).not.toMatch(/\bat .*\.js:\d+/);
    expect(run.stderr).toMatch(/1 row exported without its input image/);
    expect(run.stderr).toContain(`row 3 (edits.csv line 5): input image not found: ${join(dir, 'imgs', 'gone.png')}`);
    expect(readdirSync(join(out, 'data'))).toEqual(['train-00000-of-00001.parquet']);
  });

  it('only images are exported: an input that does not decode (HTML named .png, a PNG cut short) is left out and counted, in every format', async () => {
    // Row 3 failed because imgs/gone.png was missing; now a file by that name is there, but it is no picture.
    const gone = join(dir, 'imgs', 'gone.png');
    const red = readFileSync(join(dir, 'imgs', 'red.png'));
    const fakes: Array<[string, Buffer, RegExp]> = [
      ['html', Buffer.from('<html><body>not a picture</body></html>'), /it does not decode as an image/],
      ['cut', red.subarray(0, Math.floor(red.length / 2)), /it does not decode as an image \(.*(libpng|read error)/],
    ];
    try {
      for (const [name, bytes, why] of fakes) {
        writeFileSync(gone, bytes);
        for (const format of ['hf', 'webdataset'] as const) {
          const out = join(dir, `not-image-${name}-${format}`);
          const run = await atelier(['export', outputDir, '--format', format, '--out', out], env());
          expect(run.code, run.stderr).toBe(0);
          expect(run.stderr).toMatch(/1 row exported without its input image/);
          expect(run.stderr).toContain(`row 3 (edits.csv line 5): input image ${gone} is left out: `);
          expect(run.stderr).toMatch(why);
          if (format === 'hf') {
            // datasets decodes every image of every row without an UnidentifiedImageError.
            const loaded = loadWithDatasets(out);
            expect(loaded.rows.map((r) => [r.index, (r.input_images as unknown[]).length])).toEqual([
              [0, 1],
              [1, 2],
              [2, 1],
              [3, 0],
            ]);
          } else {
            const members = execFileSync('tar', ['-tf', join(out, 'shard-000000.tar')], { encoding: 'utf8' })
              .trim()
              .split('\n');
            expect(members.filter((m) => m.startsWith('000003.'))).toEqual(['000003.txt', '000003.json']);
          }
        }
        // The viewer serves it no more than the export embeds it (web/server.ts, the input image route).
        const viewer = await startViewer({ outputDir, runId: 'hf-export-viewer' });
        try {
          const refused = await fetch(`${viewer.url}image/3/in0`);
          expect(refused.status).toBe(415);
          expect(((await refused.json()) as { error: string }).error).toMatch(why);
          expect((await fetch(`${viewer.url}image/0/in0`)).status).toBe(200);
        } finally {
          await viewer.close();
        }
      }
    } finally {
      rmSync(gone, { force: true });
    }
  });

  it('an ok row whose output is not an image stops the export, naming the row, the file and what to do', async () => {
    const scratch = join(dir, 'out-junk');
    execFileSync('cp', ['-r', outputDir, scratch]);
    // As long as the output the row made: a replacement of another size makes the row not done (its
    // recorded size, test/outputDigests.e2e.test.ts), and the export leaves it out as pending.
    const html = Buffer.from('<html>an error page saved as the output</html>');
    const size = statSync(join(scratch, '000000.png')).size;
    writeFileSync(join(scratch, '000000.png'), Buffer.concat([html, Buffer.alloc(size - html.length, ' ')]));
    const out = join(dir, 'hf-junk');
    const run = await atelier(['export', scratch, '--out', out], env());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/error: row 0: output .*000000\.png is not an image to publish: it does not decode as an image/);
    expect(run.stderr).toMatch(/--redo --rows 0/);
    expect(existsSync(out)).toBe(false);
  });

  it('an export that fails part-way leaves no half-written --out behind, and says which row and file', async () => {
    // Row 1's output is there but cannot be read (a link to /proc/self/mem: a regular file whose
    // reads fail with EIO): row 0 is written, then the export fails.
    const scratch = join(dir, 'out-copy');
    execFileSync('cp', ['-r', outputDir, scratch]);
    execFileSync('ln', ['-sf', '/proc/self/mem', join(scratch, '000001.png')]);
    // An entry without output digests (an older ledger) is checked by name only: the link (size 0) still counts as the output.
    const entryFile = join(scratch, layout.ledgerEntry(1));
    const { outputDigests: _digests, ...older } = JSON.parse(readFileSync(entryFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(entryFile, JSON.stringify(older));
    const out = join(dir, 'hf-broken');
    const run = await atelier(['export', scratch, '--out', out], env());
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/error: row 1: output .*000001\.png cannot be read: .*EIO/);
    expect(run.stderr).not.toMatch(/\bat .*\.js:\d+/);
    expect(existsSync(out)).toBe(false);
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
      ['3', 'failed', []],
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
    expect(format.stderr).toMatch(/--format csv: choose hf .* or webdataset/);
    const unknown = await atelier(['export', 'no-such-run', '--out', join(dir, 'y'), '--state-dir', join(dir, 'state')], env());
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no-such-run is neither an output dir nor a run id/);
  });
});

describe('an export is whole or absent', () => {
  // Big enough that writing the export takes a while: 12 failed rows, each with a 1000x1000
  // uncompressed PNG (3 MB) as input, which the export embeds (the rows are refused, so the run is
  // cheap), in 8 MB shards: the kill comes once the first shard is on disk, three more to go.
  const ROWS = 12;
  let big: string;

  beforeAll(async () => {
    const noise = Buffer.alloc(1000 * 1000 * 3);
    for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761) >>> 24;
    await sharp(noise, { raw: { width: 1000, height: 1000, channels: 3 } })
      .png({ compressionLevel: 0 })
      .toFile(join(dir, 'imgs', 'noise.png'));
    writeText(
      join(dir, 'big.csv'),
      ['image,instruction', ...Array.from({ length: ROWS }, (_, i) => `imgs/noise.png,export-kill-${i} refuse me`)].join('\n'),
    );
    standin.script('export-kill-', [faults.moderationBlocked()], { repeat: true });
    big = join(dir, 'out-big');
    const run = await atelier(
      [
        'edit',
        '--input',
        join(dir, 'big.csv'),
        '--output-dir',
        big,
        '--backend',
        'openai',
        '--model',
        'gpt-image-2',
        '--state-dir',
        join(dir, 'state'),
      ],
      env(),
    );
    expect(run.code, run.stderr).toBe(2);
  });

  /** Starts `atelier export` into `out` and SIGKILLs it once its staging folder beside `out` holds a shard being written. */
  async function killMidWrite(out: string): Promise<void> {
    const parent = join(out, '..');
    const name = out.slice(parent.length + 1);
    const child = new CliProcess(['export', big, '--out', out, '--shard-size-mb', '8'], env());
    const deadline = Date.now() + 120_000;
    for (;;) {
      // Today's code wrote into --out itself; the staged export writes beside it. Either way: a part file with bytes in it.
      const places = [
        out,
        ...readdirSync(parent)
          .filter((n) => n.startsWith(`.${name}.atelier-`))
          .map((n) => join(parent, n)),
      ];
      const writing = places.some((p) => {
        try {
          return readdirSync(join(p, 'data')).some((f) => f.startsWith('.part-') && statSync(join(p, 'data', f)).size > 0);
        } catch {
          return false;
        }
      });
      if (writing) break;
      if (child.child.exitCode !== null) throw new Error(`export ended (${child.child.exitCode}) before it was killed:\n${child.output}`);
      if (Date.now() > deadline) throw new Error(`no export was being written:\n${child.output}`);
      await sleep(2);
    }
    child.child.kill('SIGKILL');
    await child.exited;
    expect(child.child.signalCode).toBe('SIGKILL');
  }

  it('a SIGKILLed export leaves the previous export or nothing, and running the command again proceeds', async () => {
    // Nothing there before: nothing there after the kill.
    const fresh = join(dir, 'hf-killed-fresh');
    await killMidWrite(fresh);
    expect(existsSync(fresh)).toBe(false);
    const again = await atelier(['export', big, '--out', fresh], env());
    expect(again.code, again.stderr).toBe(0);
    expect(loadWithDatasets(fresh).num_rows).toBe(ROWS);
    // What the killed export left beside it was cleared by the next one.
    expect(readdirSync(dir).filter((n) => n.startsWith('.hf-killed-fresh.'))).toEqual([]);

    // A previous export there: killed while replacing it, the previous one is still whole.
    const first = loadWithDatasets(fresh);
    await killMidWrite(fresh);
    const after = loadWithDatasets(fresh);
    expect(after.num_rows).toBe(ROWS);
    expect(after.rows.map((r) => r.index)).toEqual(first.rows.map((r) => r.index));
    const replaced = await atelier(['export', big, '--out', fresh, '--only', 'all'], env());
    expect(replaced.code, replaced.stderr).toBe(0);
    expect(loadWithDatasets(fresh).num_rows).toBe(ROWS);
    expect(readdirSync(dir).filter((n) => n.startsWith('.hf-killed-fresh.'))).toEqual([]);
  });
});
