import { GPU_MODEL_TYPES } from '../lib/gpuContract';
import { BACKEND_NAMES } from '../activities/providers/registry';
import { inGroup, nonNegativeInt, nonNegativeNumber, Opt, percentInt, positiveInt, positiveNumber } from './options';

// The option vocabulary shared by several commands: one declaration (flags, help text, parser,
// default) per option, grouped under the --help heading it is listed with. A command takes a group
// whole (`...WORKERS`) or picks from it (`{ concurrency: WORKERS.concurrency }`), and may make an
// option required or give it its own default (`MODEL.model.required()`); the help text stays one
// per option name across commands (test/unit/cliVocabulary.test.ts checks it). docs/runs.md
// ("Options") lists the groups.

/** Where the state lives: the server to talk to (or start) and the runs known by id. */
export const STATE = inGroup('Server and state:', {
  stateDir: Opt.text(
    '--state-dir <dir>',
    "Atelier's state: the dev server's SQLite DB and logs (when TEMPORAL_ADDRESS is unset) and the runs it knows by id",
  ).default('./.atelier'),
});

/** Ports of the things a command serves (the dev server, a stand-in, the viewer). */
export const PORT = inGroup('Server and state:', {
  port: Opt.parsed(
    '--port <port>',
    'port to listen on (server: gRPC, reached as TEMPORAL_ADDRESS=127.0.0.1:<port>; standin, view: a free one unless given)',
    positiveInt,
  ),
});

/** Which rows a command works on, by position in the dataset. */
export const ROWS = inGroup('Row selection:', {
  rows: Opt.text('--rows <spec>', 'row positions: 0:100, 100:, :50, 0,5,10 or mixes like 0:3,4:6').alias('--filter-rows'),
});

/** The dataset a run reads. */
export const INPUT = inGroup('Input:', {
  input: Opt.text('--input <path>', 'dataset: .csv, .jsonl, .parquet, or a folder of .parquet shards').required(),
  instructionKey: Opt.text('--instruction-key <column>', 'instruction column').default('instruction'),
  imageKey: Opt.text('--image-key <column>', 'image column (default: first present of input_images, image_url, image; JSONL: images)'),
  conversationKey: Opt.text('--conversation-key <key>', 'JSONL conversation list (default: conversations)'),
  maskKey: Opt.text('--mask-key <column>', 'column with an edit mask per row (PNG; transparent pixels mark the area to edit)'),
  allowOutsidePaths: Opt.flag(
    '--allow-outside-paths',
    "image cells may name files or s3:// objects outside the dataset's folder or prefix (refused by default)",
  ),
  imageCacheDir: Opt.text(
    '--image-cache-dir <dir>',
    "cache of downloaded input images, a folder or s3://bucket/prefix (default: the run's <out>/.atelier/image-cache)",
  ),
  maxDownloadMb: Opt.parsed('--max-download-mb <mb>', 'largest input image downloaded from a URL, in MB (default 50)', positiveNumber),
  downloadTimeout: Opt.parsed(
    '--download-timeout <seconds>',
    'longest download of one input image, headers and body (default 60)',
    positiveNumber,
  ),
});

/** The one name of the folder a command writes into. */
export const OUT = inGroup('Output:', {
  outputDir: Opt.text(
    '--out <dir>',
    'output folder: edited images and results tables (edit, estimate, demo), or a new or empty folder for the dataset (export)',
  )
    .alias('--output-dir')
    .required(),
});

/** What a run writes and under which id. */
export const OUTPUT = inGroup('Output:', {
  ...OUT,
  outputNameColumn: Opt.text('--output-name-column <column>', "column holding each row's output path, relative to the output folder"),
  outputCsv: Opt.text('--output-csv <file>', 'results table (default: <out>/results.csv; results.jsonl goes beside it)'),
  numImages: Opt.parsed('--num-images <n>', 'images per row (named _00, _01, ...)', positiveInt).default(1),
  jpegQuality: Opt.parsed('--jpeg-quality <q>', 'quality of .jpg outputs (1-100)', percentInt).default(95),
  webpQuality: Opt.parsed('--webp-quality <q>', 'quality of .webp outputs (1-100)', percentInt).default(95),
  runId: Opt.text('--run-id <id>', 'run id (default: derived from input, output folder, backend, model and parameters)'),
});

/** The model and the parameters every backend takes. */
export const MODEL = inGroup('Model:', {
  backend: Opt.text('--backend <name>', BACKEND_NAMES.join(' | ')).default('openai'),
  model: Opt.text(
    '--model <name>',
    'model name, e.g. gpt-image-2 (`atelier models` lists them); for judge, the vision-language model that scores',
  ).required(),
  size: Opt.text('--size <WxH>', 'output size passed to the model (e.g. 1024x1024, auto)'),
  quality: Opt.text('--quality <q>', 'quality passed to the model (e.g. low, medium, high, auto)'),
  baseUrl: Opt.text(
    '--base-url <url>',
    "the provider's base URL for the in-process workers (e.g. an OpenAI-compatible server); external workers read <BACKEND>_BASE_URL",
  ),
  promptEnhance: Opt.text(
    '--prompt-enhance <model>',
    'rewrite each instruction with this OpenAI-compatible chat model first (kept in instruction_enhanced)',
  ),
  promptEnhanceImages: Opt.flag('--prompt-enhance-images', "let the prompt enhancer see the row's images"),
});

/** Parameters only OpenAI's image models take. */
export const OPENAI_PARAMS = inGroup('OpenAI parameters:', {
  background: Opt.text('--background <b>', 'transparent, opaque or auto'),
  outputFormat: Opt.text('--output-format <f>', "png, jpeg or webp from the API (outputs are saved in their names' format)"),
  outputCompression: Opt.parsed('--output-compression <n>', '0-100 for jpeg/webp API output', nonNegativeInt),
  inputFidelity: Opt.text('--input-fidelity <f>', 'high or low (models that support it)'),
  complexity: Opt.text('--complexity <c>', 'low, medium or high (gpt-image-2.6 only; refused for other models)'),
  moderation: Opt.text('--moderation <m>', 'auto or low'),
});

/** Parameters of Gemini's image models (and OpenRouter's, which passes them on). */
export const GEMINI_PARAMS = inGroup('Gemini / OpenRouter parameters:', {
  aspectRatio: Opt.text('--aspect-ratio <r>', '1:1, 16:9, ...'),
  imageSize: Opt.text('--image-size <s>', '1K, 2K, 4K'),
});

/** Sampling parameters of diffusion models: the GPU workers' (diffusers) or a --base-url diffusion server's. */
export const DIFFUSION_PARAMS = inGroup('Diffusion parameters (diffusers, --base-url diffusion servers):', {
  modelType: Opt.text(
    '--model-type <type>',
    `diffusers: ${GPU_MODEL_TYPES.join(' | ')} (default: from the model name or its model_index.json; plugin: a worker started with --adapter)`,
  ),
  seed: Opt.parsed('--seed <n>', "base seed (ModelScope's too); each row's seed derives from it and the row index", nonNegativeInt),
  numInferenceSteps: Opt.parsed('--num-inference-steps <n>', "denoising steps (default: the model's)", positiveInt),
  guidanceScale: Opt.parsed('--guidance-scale <x>', 'guidance scale', nonNegativeNumber),
  trueCfgScale: Opt.parsed('--true-cfg-scale <x>', 'true CFG scale (Qwen, LongCat)', nonNegativeNumber),
  negativePrompt: Opt.text('--negative-prompt <text>', 'negative prompt'),
  gpus: Opt.text('--gpus <list>', 'diffusers, embedded server: GPUs for the GPU worker it starts (0,1,... or cpu)'),
  batchSize: Opt.parsed('--batch-size <n>', 'diffusers, embedded server: micro-batch size of the GPU worker it starts', positiveInt),
});

/** A provider's batch API instead of one call per row. */
export const BATCH = inGroup('Batch API (openai, gemini):', {
  batch: Opt.flag('--batch', "send the rows through the provider's batch API first (half price, answered within 24 h; see docs/batch.md)"),
  batchFallback: Opt.text(
    '--batch-fallback <mode>',
    "with --batch: rows the batch did not answer (per-line errors, an expired batch) and multi-turn rows go down the direct path (direct) or stay failed with the provider's reason (fail)",
  ).choices(['direct', 'fail']),
  batchPollMs: Opt.parsed(
    '--batch-poll-ms <ms>',
    'with --batch: first wait between polls of a provider batch (default 30 s, doubling up to 10 min)',
    positiveInt,
  ).hidden(),
});

/** How much runs at once, how often it is retried, and who runs it. */
export const WORKERS = inGroup('Workers and concurrency:', {
  concurrency: Opt.parsed(
    '--concurrency <n>',
    'calls in flight per provider worker this process runs (model calls; judge calls for judge)',
    positiveInt,
  ).default(16),
  window: Opt.parsed(
    '--window <n>',
    'rows in flight at once (edit: default twice --concurrency, so the provider queue never runs dry)',
    positiveInt,
  ),
  rpm: Opt.parsed(
    '--rpm <n>',
    "calls per minute for the whole provider queue (judge: the judge's queue), shared by every worker",
    positiveInt,
  ),
  maxRetries: Opt.parsed(
    '--max-retries <n>',
    'retries per row after the first attempt, for transient failures (judge: an unreadable answer included)',
    nonNegativeInt,
  ).default(4),
  withWorkers: Opt.flag('--with-workers', 'with TEMPORAL_ADDRESS set, still run the workers in this process'),
});

/** Knobs of a run's execution that only tune how it is driven (20 s heartbeat: see edit.ts). */
export const EXECUTION = inGroup('Workers and concurrency:', {
  // 20 s, not 60: a call lost with its worker (kill -9, a task handed to a poll as the worker shut
  // down) is retried after this long; the activity beats every third of it while it works.
  heartbeatTimeout: Opt.parsed(
    '--heartbeat-timeout <seconds>',
    'a model call whose worker stops heartbeating this long is retried elsewhere',
    positiveInt,
  ).default(20),
  retryInitialMs: Opt.parsed('--retry-initial-ms <ms>', 'first retry delay', positiveInt).hidden(),
  maxHistoryEvents: Opt.parsed('--max-history-events <n>', 'continue as new past this many events', positiveInt).hidden(),
});

/** Starting a run and leaving it, and its budget. */
export const RUN_CONTROL = inGroup('Run control:', {
  detach: Opt.flag('--detach', 'start (or attach to) the run, print its run id as the last line, and exit'),
  maxCost: Opt.parsed(
    '--max-cost <usd>',
    'budget in USD: the run pauses when the estimated spend of its finished rows reaches it (`atelier resume <run-id> --max-cost N` raises it)',
    positiveNumber,
  ),
});

/** The options of a run on a dataset: `edit` and `estimate` (`demo` takes them less the backend's). */
export const RUN_OPTIONS = {
  ...INPUT,
  ...OUTPUT,
  ...ROWS,
  ...MODEL,
  ...OPENAI_PARAMS,
  ...GEMINI_PARAMS,
  ...DIFFUSION_PARAMS,
  ...BATCH,
  ...WORKERS,
  ...EXECUTION,
  maxCost: RUN_CONTROL.maxCost,
  ...STATE,
};
