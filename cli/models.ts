import type { ListedModel } from '../activities/providers/catalog';
import {
  capabilities,
  modalitiesFor,
  modelStatus,
  tableModels,
  type Backend,
  type ModelCapabilities,
} from '../activities/providers/models';
import { UsageError } from '../lib/shared/errors';
import { API_BACKEND_NAMES, API_BACKENDS, listProviderModels, PROVIDERS } from '../activities/providers/registry';
import type { ProviderSpec } from '../activities/providers/spec';
import type { Client } from '@temporalio/client';
import type { ModelCheckInput, ModelCheckResult } from '../activities/providers/modelCheck';
import { tableKnowsPrice } from '../activities/providers/modelCheck';
import { ORCHESTRATOR_QUEUE } from '../lib/shared/constants';
import type { ApiBackend } from '../lib/shared/backends';
import type { Command } from 'commander';
import { cliNow, ExitCodes, type CliIO, type CommandContext } from './io';
import { addExamples, addOptions, Opt, type OptionsOf } from './options';
import { MODEL } from './optionGroups';

// `atelier models [--backend B]`: the capability table (status, what a model takes, prices), merged
// with what the provider's list endpoint says when its key (or base URL) is in the environment:
// models the provider lists that the table lacks, table models the provider no longer lists, and
// OpenRouter's declared output modalities and prices.

export const MODELS_OPTIONS = {
  // Every API backend unless given (diffusers models are listed in gpu-workers/README.md).
  backend: MODEL.backend.optional(),
  /** Only the table; no provider calls. */
  offline: Opt.flag('--offline', 'the table only, no provider calls'),
  json: Opt.flag('--json', 'one JSON array instead of tables'),
};

export type ModelsOptions = OptionsOf<typeof MODELS_OPTIONS>;

export interface ModelRow {
  backend: Backend;
  model: string;
  status: string;
  edits: string;
  inputs: string;
  options: string;
  price: string;
  /** listed | not listed | only listed (not in Atelier's table) | - (no list asked) | no list endpoint */
  provider: string;
}

function statusText(backend: Backend, model: string, now: Date, listedShutdown?: string): string {
  const s = modelStatus(backend, model, now);
  if (s.status === 'retired') return `retired${s.since ? ` ${s.since}` : ''} -> ${s.replacement}`;
  if (s.status === 'deprecated') return `deprecated, shuts down ${s.shutdown} -> ${s.replacement}`;
  return listedShutdown ? `provider lists shutdown ${listedShutdown}` : 'current';
}

function optionsText(caps: ModelCapabilities): string {
  const parts: string[] = [];
  if (caps.flexibleSize)
    parts.push(
      `size WxH /${caps.flexibleSize.multipleOf}, ≤${caps.flexibleSize.maxSide}px, ${caps.flexibleSize.minPixels}-${caps.flexibleSize.maxPixels} px, ≤${caps.flexibleSize.maxAspect}:1`,
    );
  else if (caps.sizes) parts.push(`size ${caps.sizes.join('|')}`);
  if (caps.qualities) parts.push(`quality ${caps.qualities.join('|')}`);
  if (caps.aspectRatios) parts.push(`aspect ${caps.aspectRatios.length} ratios`);
  if (caps.imageSizes && (caps.params === 'any' || caps.params.includes('imageSize')))
    parts.push(`image size ${caps.imageSizes.join('|')}`);
  if (caps.outputModalities) parts.push(`modalities ${caps.outputModalities.join('+')}`);
  if (caps.mask) parts.push('mask');
  return parts.join('; ') || '-';
}

function priceText(caps: ModelCapabilities, listed?: ListedModel): string {
  const p = caps.price;
  if (p.free) return 'free quota';
  if (p.tokens) {
    const t = p.tokens;
    return `$/1M in ${t.input}${t.imageInput !== undefined ? ` (image ${t.imageInput})` : ''}${t.cachedInput !== undefined ? ` cached ${t.cachedInput}` : ''}, out ${t.output}${t.textOutput !== undefined ? ` (text ${t.textOutput})` : ''}`;
  }
  if (p.perImage) return 'per image';
  if (p.fromUsage) {
    const lp = listed?.pricing;
    return lp
      ? `from usage (listed: prompt ${lp.prompt ?? '?'}, completion ${lp.completion ?? '?'}${lp.image ? `, image ${lp.image}` : ''} $/token)`
      : 'from usage.cost';
  }
  return 'unknown';
}

function rowFor(backend: Backend, model: string, now: Date, provider: string, listed?: ListedModel): ModelRow {
  const caps = capabilities(backend, model);
  const status = statusText(backend, model, now, listed?.shutdownDate);
  // A retired model answers nothing: what it took no longer matters.
  if (modelStatus(backend, model, now).status === 'retired')
    return { backend, model, status, edits: '-', inputs: '-', options: '-', price: '-', provider };
  // The modalities a list declares per model (OpenRouter's), next to what the table asks for.
  const declared = listed?.outputModalities;
  const options = declared
    ? `${optionsText({ ...caps, outputModalities: undefined })}; outputs ${declared.join('+')} (asks ${modalitiesFor(declared, caps.outputModalities).join('+')})`
    : optionsText(caps);
  return {
    backend,
    model,
    status,
    edits: caps.editCapable ? 'yes' : 'no',
    inputs: caps.editCapable
      ? `${caps.maxInputImages}${caps.recommendedMaxInputImages ? ` (best ≤${caps.recommendedMaxInputImages})` : ''}`
      : '0',
    options,
    price: priceText(caps, listed),
    provider,
  };
}

/** Image models in a provider's list (OpenAI's and Gemini's lists hold every model). */
function imageModels(backend: Backend, listed: ListedModel[], baseURL: string | undefined): ListedModel[] {
  return (PROVIDERS[backend] as ProviderSpec).listing.imageModels?.(listed, !!baseURL) ?? listed;
}

/** The table rows for a backend, merged with its list endpoint's answer (when there is one). */
export function mergeModels(backend: Backend, listed: ListedModel[] | undefined, now: Date, baseURL?: string): ModelRow[] {
  const table = tableModels(backend).map((m) => m.model);
  if (!listed) return table.map((model) => rowFor(backend, model, now, '-'));
  const images = imageModels(backend, listed, baseURL);
  const byId = new Map(images.map((m) => [m.id, m]));
  const rows = table.map((model) => {
    const hit = byId.get(model);
    const retired = modelStatus(backend, model, now).status === 'retired';
    return rowFor(backend, model, now, hit ? 'listed' : retired ? 'not listed (retired)' : 'not listed', hit);
  });
  for (const m of images) {
    if (table.includes(m.id)) continue;
    const caps = capabilities(backend, m.id);
    rows.push(
      rowFor(backend, m.id, now, caps.known ? `listed (table: ${caps.entry})` : 'listed, not in the table (capabilities unknown)', m),
    );
  }
  return rows;
}

/** The widest line `atelier models` prints: a terminal's 100 columns. */
export const MODELS_WIDTH = 100;

/**
 * Breaks `text` at spaces into lines of at most `width` characters: the first starts with `first`,
 * the others with `indent`. A word longer than a line (a long model id) is cut.
 */
function wrap(text: string, width: number, first: string, indent: string): string[] {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (let word of text.split(' ').filter(Boolean)) {
    for (;;) {
      const candidate = empty ? line + word : `${line} ${word}`;
      if (candidate.length <= width) {
        line = candidate;
        empty = false;
        break;
      }
      if (!empty) {
        lines.push(line);
        line = indent;
        empty = true;
        continue;
      }
      // Alone on its line and still too long: cut it.
      const room = width - line.length;
      lines.push(line + word.slice(0, room));
      word = word.slice(room);
      line = indent;
    }
  }
  if (!empty) lines.push(line);
  return lines;
}

/**
 * One block per model, each line within MODELS_WIDTH: the model and what it is (status, whether it
 * edits, how many inputs, what the provider's list says), then its options and price, indented.
 * A table's columns ran ~230 characters wide.
 */
function formatTable(rows: ModelRow[]): string[] {
  return rows.flatMap((r) => {
    const provider = r.provider === '-' ? '' : `; provider: ${r.provider}`;
    return [
      ...wrap(`${r.status}; edits ${r.edits}, inputs ${r.inputs}${provider}`, MODELS_WIDTH, `  ${r.model}  `, '      '),
      ...(r.options !== '-' ? wrap(r.options, MODELS_WIDTH, '    options: ', '      ') : []),
      ...(r.price !== '-' ? wrap(r.price, MODELS_WIDTH, '    price: ', '      ') : []),
    ];
  });
}

/** `atelier models`: exit 0; 1 for an unknown backend. A failed list request is reported, not fatal. */
export async function runModels(options: ModelsOptions, io: CliIO, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const now = cliNow(env);
  if (options.backend && !(API_BACKEND_NAMES as string[]).includes(options.backend)) {
    throw new UsageError(
      `--backend ${options.backend}: choose one of ${API_BACKEND_NAMES.join(', ')} (diffusers models are listed in gpu-workers/README.md)`,
    );
  }
  const backends = (options.backend ? [options.backend] : API_BACKEND_NAMES) as Backend[];
  const all: ModelRow[] = [];
  for (const backend of backends) {
    const names = API_BACKENDS[backend];
    const apiKey = names.keys.map((k) => env[k]).find((v) => v);
    const baseURL = env[names.baseUrl] || undefined;
    let listed: ListedModel[] | undefined;
    let note: string;
    const tableOnly = (PROVIDERS[backend] as ProviderSpec).listing.tableOnly;
    if (options.offline) note = 'table only (--offline)';
    else if (tableOnly) note = tableOnly;
    else if (!apiKey && !baseURL) note = `${names.keys.join(' or ')} not set: table only`;
    else {
      try {
        listed = await listProviderModels(backend, { apiKey: apiKey ?? 'none', baseURL });
        note = `merged with ${baseURL ?? 'the provider'}'s model list (${listed?.length ?? 0} models)`;
      } catch (err) {
        note = `the model list could not be read (${(err as Error).message.slice(0, 200)}): table only`;
      }
    }
    const rows = mergeModels(backend, listed, now, baseURL);
    all.push(...rows);
    if (!options.json) {
      for (const line of wrap(note, MODELS_WIDTH, `${backend}: `, '  ')) io.out(line);
      for (const line of formatTable(rows)) io.out(line);
      io.out('');
    }
  }
  if (options.json) io.out(JSON.stringify(all, null, 2));
  else
    for (const line of wrap(
      `status as of ${now.toISOString().slice(0, 10)}; prices are estimates (USD, standard tier), "unknown" where none is published in the table`,
      MODELS_WIDTH,
      '',
      '',
    ))
      io.out(line);
  return ExitCodes.ok;
}

/**
 * Before a run sends anything: asks the provider's workers (on its own queue, where its key lives)
 * whether the provider lists the model. A model it does not serve is refused here, with the
 * provider's words and a replacement (a UsageError: exit 1 before the first row, no edit call); a
 * listed model the table cannot price is run, and said once. A check that cannot be made (no list
 * for this backend, the list unreadable, no worker answering in time) leaves the table to decide.
 */
export async function checkModelWithProvider(
  client: Client,
  input: { runId: string; backend: ApiBackend; model: string; endpoint?: string | undefined },
  io: CliIO,
  now: Date = cliNow(),
  /** The in-process workers' check (Session.checkModelInProcess); else a workflow asks the provider's queue. */
  inProcess?: (input: ModelCheckInput) => Promise<ModelCheckResult>,
): Promise<ModelCheckResult | undefined> {
  if ((PROVIDERS[input.backend] as ProviderSpec).listing.tableOnly) return undefined;
  const question: ModelCheckInput = {
    backend: input.backend,
    model: input.model,
    now: now.toISOString(),
    ...(input.endpoint ? { endpoint: input.endpoint } : {}),
  };
  let result: ModelCheckResult;
  try {
    result = inProcess
      ? await inProcess(question)
      : await client.workflow.execute('modelCheckWorkflow', {
          taskQueue: ORCHESTRATOR_QUEUE,
          workflowId: `${input.runId}/model-check/${now.getTime().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
          args: [question],
          // No worker for the provider's queue answers: the rows would wait too; the table decides.
          workflowExecutionTimeout: '3 minutes',
        });
  } catch (err) {
    io.err(
      `warning: could not ask ${input.backend} whether it serves ${input.model} (${(err as Error).message.slice(0, 160)}); going by Atelier's table`,
    );
    return undefined;
  }
  if (result.verdict === 'refused') throw new UsageError(result.reason ?? `${input.backend} does not serve ${input.model}`);
  if (result.warning) io.err(`warning: ${result.warning}`);
  if (result.verdict === 'listed' && !tableKnowsPrice(input.backend, input.model)) {
    io.err(
      `note: ${input.backend} lists ${input.model}, but Atelier's table has no price for it: its cost is reported as unknown (price unknown)`,
    );
  }
  return result;
}

export function registerModels(program: Command, { io, setExit }: CommandContext): void {
  const cmd = program
    .command('models')
    .description(
      "models with their capabilities, lifecycle status and prices (every API backend unless --backend); merged with the provider's own model list when its key (or base URL) is in the environment",
    );
  addOptions(cmd, MODELS_OPTIONS).action(async (opts: ModelsOptions) => setExit(await runModels(opts, io)));
  addExamples(cmd, [
    ['atelier models --offline', "Atelier's table of every API backend, no provider calls"],
    ['OPENROUTER_API_KEY=... atelier models --backend openrouter', "OpenRouter's models, merged with its own list"],
  ]);
}
