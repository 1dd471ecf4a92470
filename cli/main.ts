import { Command, InvalidArgumentError, Option } from 'commander';
import { UsageError } from '../lib/shared/errors';
import { tracePhase } from '../lib/phaseTrace';
import { runDemo } from './demo';
import { runEdit, type EditOptions } from './edit';
import { ExitCodes, type CliIO } from './io';
import { runCancel, runList, runPause, runResume, runRetry, runStatus, runWatch, type ManageOptions, type RetryOptions } from './manage';
import { runGpuWorker } from './gpuWorker';
import { GPU_MODEL_TYPES } from '../lib/gpuContract';
import { runEstimate } from './estimate';
import { runExport, type ExportOptions } from './export';
import { runView, type ViewOptions } from './view';
import { runJudge, type JudgeOptions } from './judge';
import { runModels, type ModelsOptions } from './models';
import { runServer } from './server';
import { runStandin, STANDINS } from './standin';
import { runWorker } from './worker';
import { API_BACKEND_NAMES, BACKEND_NAMES } from '../lib/shared/backends';

function positiveInt(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
    return Number(value);
  };
}

function nonNegativeInt(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${name} must be a non-negative integer`);
    return Number(value);
  };
}

function qualityInt(name: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 100)
      throw new InvalidArgumentError(`${name} must be an integer from 1 to 100`);
    return Number(value);
  };
}

function nonNegativeNumber(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative number`);
    return n;
  };
}

function positiveNumber(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number`);
    return n;
  };
}

function makeIO(): CliIO {
  let interrupt: () => void = () => undefined;
  const interrupted = new Promise<void>((resolve) => (interrupt = resolve));
  let count = 0;
  process.on('SIGINT', () => {
    count += 1;
    if (count > 1) process.exit(ExitCodes.interrupted);
    interrupt();
  });
  process.on('SIGTERM', () => interrupt());
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    interrupted,
    isTTY: Boolean(process.stderr.isTTY),
  };
}

/** Options shared by `edit` and `demo`. */
function addRunOptions(cmd: Command): Command {
  return (
    cmd
      .option('--instruction-key <column>', 'instruction column', 'instruction')
      .option('--image-key <column>', 'image column (default: first present of input_images, image_url, image; JSONL: images)')
      .option('--conversation-key <key>', 'JSONL conversation list (default: conversations)')
      .option('--output-name-column <column>', "column holding each row's output path, relative to the output dir")
      .option('--output-csv <file>', 'results table (default: <output-dir>/results.csv; results.jsonl goes beside it)')
      .option(
        '--image-cache-dir <dir>',
        'cache for downloaded images, a folder or s3://bucket/prefix (default: <output-dir>/.atelier/image-cache)',
      )
      .option(
        '--max-download-mb <mb>',
        'largest input image downloaded from a URL, in MB (default 50)',
        positiveNumber('--max-download-mb'),
      )
      .option(
        '--download-timeout <seconds>',
        'longest download of one input image, headers and body (default 60)',
        positiveNumber('--download-timeout'),
      )
      .option('--filter-rows <spec>', 'rows to attempt by position: 0:100, 100:, :50, 0,5,10 or mixes like 0:3,4:6')
      .option('--num-images <n>', 'images per row (named _00, _01, ...)', positiveInt('--num-images'), 1)
      .option('--jpeg-quality <q>', 'quality of .jpg outputs (1-100)', qualityInt('--jpeg-quality'), 95)
      .option('--webp-quality <q>', 'quality of .webp outputs (1-100)', qualityInt('--webp-quality'), 95)
      .option('--run-id <id>', 'run id (default: derived from input, output dir, backend, model and parameters)')
      .option('--state-dir <dir>', 'embedded Temporal server state (SQLite DB, logs)', './.atelier')
      .option('--size <WxH>', 'output size passed to the model (e.g. 1024x1024, auto)')
      .option('--quality <q>', 'quality passed to the model (e.g. low, medium, high, auto)')
      .option('--background <b>', 'OpenAI: transparent, opaque or auto')
      .option('--output-format <f>', "OpenAI: png, jpeg or webp from the API (outputs are saved in their names' format)")
      .option('--output-compression <n>', 'OpenAI: 0-100 for jpeg/webp API output', nonNegativeInt('--output-compression'))
      .option('--input-fidelity <f>', 'OpenAI: high or low (models that support it)')
      .option('--moderation <m>', 'OpenAI: auto or low')
      .option('--aspect-ratio <r>', 'Gemini / OpenRouter: 1:1, 16:9, ...')
      .option('--image-size <s>', 'Gemini / OpenRouter: 1K, 2K, 4K')
      .option('--mask-key <column>', 'column with an edit mask per row (PNG; transparent pixels mark the area to edit)')
      .option('--allow-outside-paths', "image cells may name files or s3:// objects outside the dataset's folder or prefix", false)
      .option(
        '--prompt-enhance <model>',
        'rewrite each instruction with this OpenAI-compatible chat model first (kept in instruction_enhanced)',
      )
      .option('--prompt-enhance-images', "let the prompt enhancer see the row's images", false)
      .option(
        '--base-url <url>',
        "the provider's base URL for the in-process workers (e.g. an OpenAI-compatible server); external workers read <BACKEND>_BASE_URL",
      )
      .option('--rpm <n>', 'model calls per minute for the whole provider queue, shared by every worker', positiveInt('--rpm'))
      .option(
        '--max-cost <usd>',
        'pause the run when the estimated spend of its finished rows reaches this many USD (`atelier resume <run-id> --max-cost N` raises it)',
        positiveNumber('--max-cost'),
      )
      .option(
        '--batch',
        'openai, gemini: send the rows through the provider\'s batch API first (half price, answered within 24 h; see README "Batch mode")',
        false,
      )
      .addOption(
        new Option(
          '--batch-fallback <mode>',
          "with --batch: rows the batch did not answer (per-line errors, an expired batch) and multi-turn rows go down the direct path (direct) or stay failed with the provider's reason (fail)",
        ).choices(['direct', 'fail']),
      )
      .addOption(
        new Option(
          '--batch-poll-ms <ms>',
          'with --batch: first wait between polls of a provider batch (default 30 s, doubling up to 10 min)',
        )
          .argParser(positiveInt('--batch-poll-ms'))
          .hideHelp(),
      )
      .option(
        '--window <n>',
        'rows in flight at once (default: twice --concurrency, so the provider queue never runs dry)',
        positiveInt('--window'),
      )
      .option('--max-retries <n>', 'retries per row after the first attempt, for transient failures', nonNegativeInt('--max-retries'), 4)
      .option('--concurrency <n>', 'model calls in flight per in-process provider worker', positiveInt('--concurrency'), 16)
      // 20 s, not 60: a call lost with its worker (kill -9, a task handed to a poll as the worker shut
      // down) is retried after this long; the activity beats every third of it while it works.
      .option(
        '--heartbeat-timeout <seconds>',
        'a model call whose worker stops heartbeating this long is retried elsewhere',
        positiveInt('--heartbeat-timeout'),
        20,
      )
      .addOption(new Option('--retry-initial-ms <ms>', 'first retry delay').argParser(positiveInt('--retry-initial-ms')).hideHelp())
      .addOption(
        new Option('--max-history-events <n>', 'continue as new past this many events')
          .argParser(positiveInt('--max-history-events'))
          .hideHelp(),
      )
      .option('--with-workers', 'with TEMPORAL_ADDRESS set, still run the workers in this process', false)
  );
}

const STATE_DIR_HELP = 'state dir of the dev server (`atelier server`) when TEMPORAL_ADDRESS is unset';

export function buildProgram(io: CliIO, setExit: (code: number) => void, argv: string[] = process.argv): Command {
  const program = new Command('atelier')
    .description('Durable batch image editing on Temporal: a dataset of images + instructions in, edited images and a results table out.')
    // One line of advice after a usage error, not the command's whole help (edit's is over 100 lines,
    // which buried the one line that says what was wrong).
    .showHelpAfterError('(add --help for the options)')
    .exitOverride();

  /** The options of a run on a dataset (`edit` and `estimate`). */
  const datasetCommand = (name: string, description: string) =>
    addRunOptions(
      program
        .command(name)
        .description(description)
        .requiredOption('--input <path>', 'dataset: .csv, .jsonl, .parquet, or a folder of .parquet shards')
        .requiredOption('--output-dir <dir>', 'where edited images and results.csv go')
        .addOption(new Option('--backend <name>', BACKEND_NAMES.join(' | ')).default('openai'))
        .requiredOption('--model <name>', 'model name, e.g. gpt-image-2 (`atelier models` lists them)')
        .option(
          '--model-type <type>',
          `diffusers: ${GPU_MODEL_TYPES.join(' | ')} (default: from the model name or its model_index.json; plugin: a worker started with --adapter)`,
        )
        .option(
          '--seed <n>',
          "diffusers and --base-url diffusion servers (ModelScope too): base seed; each row's seed derives from it and the row index",
          nonNegativeInt('--seed'),
        )
        .option(
          '--num-inference-steps <n>',
          "diffusers, --base-url diffusion servers: denoising steps (default: the model's)",
          positiveInt('--num-inference-steps'),
        )
        .option('--guidance-scale <x>', 'diffusers, --base-url diffusion servers: guidance scale', nonNegativeNumber('--guidance-scale'))
        .option(
          '--true-cfg-scale <x>',
          'diffusers, --base-url diffusion servers: true CFG scale (Qwen, LongCat)',
          nonNegativeNumber('--true-cfg-scale'),
        )
        .option('--negative-prompt <text>', 'diffusers, --base-url diffusion servers: negative prompt')
        .option('--gpus <list>', 'diffusers, embedded server: GPUs for the GPU worker it starts (0,1,... or cpu)')
        .option(
          '--batch-size <n>',
          'diffusers, embedded server: micro-batch size of the GPU worker it starts',
          positiveInt('--batch-size'),
        ),
    );

  datasetCommand('edit', 'edit every row of a dataset; running the same command again resumes the same run')
    .option('--detach', 'start (or attach to) the run, print its run id as the last line, and exit', false)
    .option('--dry-run', 'print the rows, model calls and estimated cost, and start nothing (as `atelier estimate`)', false)
    .action(async (opts: EditOptions) => setExit(await (opts.dryRun ? runEstimate(opts, io) : runEdit(opts, io))));

  datasetCommand('estimate', 'rows, model calls and estimated cost of an edit run, before anything is started or spent').action(
    async (opts: EditOptions) => setExit(await runEstimate(opts, io)),
  );

  addRunOptions(
    program
      .command('demo')
      .description('run the example dataset end to end (against the bundled stand-in provider when OPENAI_API_KEY is unset)')
      .option('--input <file>', "dataset file (default: the package's examples/edits.csv)")
      .option('--output-dir <dir>', 'output folder (default: a new folder under the system temp dir)')
      .option('--model <name>', 'model name', 'gpt-image-2'),
  ).action(async (opts: Omit<EditOptions, 'backend' | 'input' | 'outputDir'> & { input?: string; outputDir?: string }, cmd: Command) =>
    setExit(await runDemo({ ...opts, backend: 'openai' }, io, cmd.getOptionValueSource('stateDir') === 'default')),
  );

  program
    .command('models')
    .description(
      "models with their capabilities, lifecycle status and prices; merged with the provider's own model list when its key (or base URL) is in the environment",
    )
    .option('--backend <name>', `${API_BACKEND_NAMES.join(' | ')} (default: all)`)
    .option('--offline', 'the table only, no provider calls', false)
    .option('--json', 'one JSON array instead of tables', false)
    .action(async (opts: ModelsOptions) => setExit(await runModels(opts, io)));

  program
    .command('worker')
    .description('run long-lived workers against TEMPORAL_ADDRESS (orchestration and provider queues)')
    .option('--queues <list>', 'comma-separated task queues to serve (default: all)')
    .option('--concurrency <n>', 'model calls in flight per provider worker', positiveInt('--concurrency'), 16)
    .action(async (opts: { queues?: string; concurrency: number }) => setExit(await runWorker(opts, io)));

  program
    .command('gpu-worker')
    .description(
      'run the Python GPU workers (one process per GPU) for --backend diffusers against TEMPORAL_ADDRESS; options go to `python -m atelier_gpu.worker` (see gpu-workers/README.md)',
    )
    .allowUnknownOption()
    .allowExcessArguments()
    .helpOption(false)
    // Everything after `gpu-worker` goes to the Python worker as it is.
    .action(async () => setExit(await runGpuWorker(argv.slice(argv.indexOf('gpu-worker') + 1), io)));

  program
    .command('server')
    .description('run the dev server in the foreground (SQLite under the state dir, UI on its own port)')
    .option('--state-dir <dir>', 'where the SQLite database and logs live', './.atelier')
    .option('--port <port>', 'gRPC port (clients use TEMPORAL_ADDRESS=127.0.0.1:<port>)', positiveInt('--port'), 7233)
    .option('--ui-port <port>', 'web UI port (default: port + 1000)', positiveInt('--ui-port'))
    .action(async (opts: { stateDir: string; port: number; uiPort?: number }) =>
      setExit(await runServer({ ...opts, uiPort: opts.uiPort ?? opts.port + 1000 }, io)),
    );

  program
    .command('standin <provider>')
    .description(
      `a provider stand-in on loopback, for trying Atelier without keys (${Object.keys(STANDINS).join(', ')}); prints the worker environment to export`,
    )
    .option('--port <port>', 'port (default: a free one)', positiveInt('--port'))
    .action(async (provider: string, opts: { port?: number }) => setExit(await runStandin(provider, opts, io)));

  const manage = (name: string, description: string, run: (runId: string, opts: ManageOptions, io: CliIO) => Promise<number>) =>
    program
      .command(`${name} <run-id>`)
      .description(description)
      .option('--state-dir <dir>', STATE_DIR_HELP, './.atelier')
      .action(async (runId: string, opts: ManageOptions) => setExit(await run(runId, opts, io)));
  manage('status', 'counts (ok, failed by class, pending, in flight), rate and ETA of a run', runStatus);
  manage('watch', 'a live progress bar until the run ends; exit codes as for edit', runWatch);
  manage('cancel', 'cancel a run and its rows in flight', runCancel);
  manage('pause', 'stop dispatching rows (rows in flight finish)', runPause);
  program
    .command('resume <run-id>')
    .description('dispatch rows again after a pause, a quota stop or a budget stop (--max-cost raises the budget)')
    .option('--max-cost <usd>', "the run's new budget in USD", positiveNumber('--max-cost'))
    .option('--state-dir <dir>', STATE_DIR_HELP, './.atelier')
    .action(async (runId: string, opts: ManageOptions) => setExit(await runResume(runId, opts, io)));
  program
    .command('list')
    .description('runs on the server, newest first, with their state')
    .option('--state-dir <dir>', STATE_DIR_HELP, './.atelier')
    .action(async (opts: ManageOptions) => setExit(await runList(opts, io)));
  program
    .command('retry <run-id>')
    .description(
      'run failed rows again, or with --redo make done rows again: an open run takes them at once; a closed run gets a new execution from its ledger',
    )
    .option('--failed', 'every failed row')
    .option('--rows <spec>', 'only these row positions (0:100, 3,7,10:20 ...), among failed rows')
    .option(
      '--error-type <list>',
      'only rows failed with these classes: retryable, blocked, invalid-request, quota-exhausted, input-error, ...',
    )
    .option(
      '--redo',
      'make done rows again (with --rows): a new seed where the backend takes one, the old output kept in .atelier/history/',
    )
    .option('--rejected', 'make again the done rows rejected in `atelier view` (implies --redo; with --score-below: either)')
    .option(
      '--score-below <x>',
      'make again the done rows `atelier judge` scored below this overall score, 0-10 (implies --redo)',
      nonNegativeNumber('--score-below'),
    )
    .option('--include-accepted', 'with --score-below: also rows a person accepted in `atelier view` (kept and reported otherwise)')
    .option('--state-dir <dir>', STATE_DIR_HELP, './.atelier')
    .option('--detach', 'for a closed run: start the retry and exit', false)
    .option('--with-workers', 'with TEMPORAL_ADDRESS set, run the workers in this process', false)
    .action(async (runId: string, opts: RetryOptions) => setExit(await runRetry(runId, opts, io)));

  program
    .command('export <run-or-output-dir>')
    .description(
      'publish a run as a dataset: --format hf writes Parquet shards (images embedded) that Hugging Face datasets loads as they are; arrow a save_to_disk folder; webdataset .tar shards',
    )
    .requiredOption(
      '--out <dir>',
      'a new or empty folder for the dataset (data/train-*.parquet; data-*.arrow for arrow; shard-*.tar for webdataset)',
    )
    .option('--format <format>', 'hf (Parquet shards, load_dataset), arrow (datasets.load_from_disk) or webdataset (.tar shards)', 'hf')
    .option(
      '--only <rows>',
      'ok (rows with outputs), accepted (ok rows accepted in `atelier view`) or score>=X (ok rows `atelier judge` scored X or more); default every row',
    )
    .option('--shard-size-mb <mb>', 'start a new shard past this many MB of images', positiveInt('--shard-size-mb'), 256)
    .option('--image-cache-dir <dir>', 'where the run cached downloaded input images (default: <output-dir>/.atelier/image-cache)')
    .option('--state-dir <dir>', 'state dir that remembers run ids (for a run id instead of an output dir)', './.atelier')
    .action(async (target: string, opts: ExportOptions) => setExit(await runExport(target, opts, io)));

  program
    .command('judge <run-or-output-dir>')
    .description(
      'score the done rows with a vision-language model over an OpenAI-compatible chat API (VIEScore-style: instruction following, preservation, quality, 0-10); key and base URL from ATELIER_JUDGE_API_KEY / ATELIER_JUDGE_BASE_URL',
    )
    .requiredOption('--model <name>', 'the judge model, e.g. gpt-5.6-luna or a VLM on your own server (gpt-4.1 shuts down 2027-01-14)')
    .option('--rpm <n>', 'judge calls per minute, for the judge queue shared by every worker', positiveInt('--rpm'))
    .option('--rows <spec>', 'only these row positions (0:100, 3,7 ...)')
    .option('--rescore', 'score again rows this model already scored', false)
    .option('--window <n>', 'rows judged at once', positiveInt('--window'), 8)
    .option('--concurrency <n>', 'judge calls in flight per in-process worker', positiveInt('--concurrency'), 16)
    .option(
      '--max-retries <n>',
      'retries per row for transient failures (an unreadable answer included)',
      nonNegativeInt('--max-retries'),
      4,
    )
    .option('--state-dir <dir>', STATE_DIR_HELP, './.atelier')
    .option('--with-workers', 'with TEMPORAL_ADDRESS set, run the workers in this process', false)
    .action(async (target: string, opts: JudgeOptions) => setExit(await runJudge(target, opts, io)));

  program
    .command('view <run-or-output-dir>')
    .description('a local web page of a run (live while it runs): before/after thumbnails, filters, row details, accept/reject marks')
    .option('--port <port>', 'loopback port (default: a free one)', positiveInt('--port'))
    .option('--state-dir <dir>', 'state dir that remembers run ids (for a run id instead of an output dir)', './.atelier')
    .action(async (target: string, opts: ViewOptions) => setExit(await runView(target, opts, io)));

  return program;
}

export async function main(argv: string[]): Promise<number> {
  tracePhase('imports done');
  const io = makeIO();
  let exitCode: number = ExitCodes.ok;
  const program = buildProgram(io, (code) => (exitCode = code), argv);
  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      // commander has printed the problem (or the help/version text) already.
      return e.exitCode === 0 ? ExitCodes.ok : ExitCodes.usage;
    }
    if (err instanceof UsageError) {
      io.err(`error: ${err.message}`);
      return ExitCodes.usage;
    }
    io.err(`error: ${(err as Error)?.stack ?? String(err)}`);
    // "Workflow execution failed" says nothing by itself: name the causes (activity, then its error).
    for (
      let cause = (err as { cause?: unknown })?.cause, depth = 0;
      cause && depth < 4;
      cause = (cause as { cause?: unknown }).cause, depth++
    ) {
      const c = cause as { name?: string; message?: string; type?: string };
      io.err(`  caused by ${c.type ?? c.name ?? 'Error'}: ${c.message ?? String(cause)}`);
    }
    return ExitCodes.usage;
  }
}
