import type { ModelParams } from '../../lib/shared/types';
import { PROVIDERS } from './registry';
import { lookup, type Backend, type Lifecycle, type ModelCapabilities, type ParamName, type ProviderTable } from './table';

export type { Backend, Entry, Lifecycle, ModelCapabilities, ParamName, Price } from './table';

// Per-model capabilities and prices: each provider keeps its rows in its folder (<name>/models.ts,
// given to the registry by its spec); this module answers questions about them for every backend.
// Adapters ask it what a model takes (inputs, sizes, which optional parameters) instead of special-casing model names; the CLI can use
// `checkParams` to warn about parameters a model ignores, and the run summary `estimateCostUsd`.
//
// Model ids change often (see the lifecycle notes in the providers reference): an id not in the
// table falls back to the longest table id it starts with (`gpt-image-1.5-2025-12-16` ->
// `gpt-image-1.5`, `gemini-3.1-flash-image-preview` -> `gemini-3.1-flash-image`), then to a family
// pattern (`gpt-image-*`, `google/*` on OpenRouter), then to the backend's permissive default.
// Prices are estimates (USD, standard tier, not batch) as published in Nov 2026; they are for run
// summaries, not billing. A price that is not known is left out, and costs come out as unknown
// (undefined), never as 0.
//
// Every entry has a lifecycle (`current`, `deprecated` with a shutdown date and a replacement,
// `retired` with a replacement): `modelStatus` reads it against the date, so a deprecated model
// past its shutdown date counts as retired. The CLI refuses retired models before anything is
// planned or spent, and warns about deprecated ones. Sources: developers.openai.com/api/docs/
// deprecations (gpt-image-1.5, gpt-image-1-mini, chatgpt-image-latest: shut down 2026-12-01, use
// gpt-image-2.6-sunburst or -flare); developers.openai.com/ja-JP/api/docs/models/gpt-image-1
// (retired 2026-10-23, points to gpt-image-2.5-sunburst); developers.openai.com/api/docs/models/
// dall-e-2.md ("deprecated and removed from the API").
//
// The table is the fallback: at plan time the provider's own list (OpenAI `GET /v1/models` with
// `shutdown_date`, Gemini `models.list`, OpenRouter `/api/v1/models`) decides whether an id is served
// (activities/providers/modelCheck.ts). Lifecycles are per backend: the Gemini API and Vertex AI retire
// the same id on different dates. Each lifecycle fact in the rows carries its source and the day it
// was checked (`checked 2026-12-07`: shared/reference/providers-audit-2026-12.md, whose source tags are used).

/** What a model takes and costs. Unknown ids get the backend's permissive default (`known: false`). */
export function capabilities(backend: Backend, model: string): ModelCapabilities {
  const table = PROVIDERS[backend].table;
  if (table.resolve) return table.resolve(model, capabilities);
  const caps = tableCapabilities(backend, table, model);
  return table.adjust ? table.adjust(caps) : caps;
}

function tableCapabilities(backend: Backend, table: ProviderTable, model: string): ModelCapabilities {
  const hit = lookup(table.models, model);
  if (hit) return { backend, entry: hit[0], known: true, ...hit[1] };
  const family = table.families?.find((f) => f.test.test(model));
  if (family) return { backend, entry: family.name, known: true, ...family.entry(model) };
  return { backend, entry: `${backend} default`, known: false, ...table.default };
}

/** Every model id of the table, with its backend (for `atelier models`). */
export function tableModels(backend?: Backend): { backend: Backend; model: string }[] {
  return (Object.keys(PROVIDERS) as Backend[])
    .filter((b) => !backend || b === backend)
    .flatMap((b) => {
      const table = PROVIDERS[b].table;
      return (table.ids ? table.ids() : Object.keys(table.models)).map((model) => ({ backend: b, model }));
    });
}

export interface ModelStatus {
  /** `deprecated` past its shutdown date reads `retired`. */
  status: Lifecycle['status'];
  shutdown?: string;
  since?: string;
  replacement?: string;
}

/** YYYY-MM-DD of a date, in UTC. */
function day(date: Date): string {
  return date.toISOString().slice(0, 10);
}

/** A model's lifecycle on a date (default: now). A deprecated model counts as retired from its shutdown date on. */
export function modelStatus(backend: Backend, model: string, now: Date = new Date()): ModelStatus {
  const lifecycle = capabilities(backend, model).lifecycle ?? { status: 'current' };
  if (lifecycle.status === 'deprecated') {
    if (day(now) >= lifecycle.shutdown) return { status: 'retired', since: lifecycle.shutdown, replacement: lifecycle.replacement };
    return { status: 'deprecated', shutdown: lifecycle.shutdown, replacement: lifecycle.replacement };
  }
  return { ...lifecycle };
}

/**
 * The lifecycle verdict the CLI acts on: `error` for a retired model (refuse, naming the
 * replacement), `warning` for a deprecated one, neither for a current or unknown model.
 */
export function lifecycleProblem(backend: Backend, model: string, now: Date = new Date()): { error?: string; warning?: string } {
  const s = modelStatus(backend, model, now);
  if (s.status === 'retired') {
    return {
      error: `${model} was retired${s.since ? ` on ${s.since}` : ''} and no longer answers; use ${s.replacement} instead (\`atelier models --backend ${backend}\` lists current models)`,
    };
  }
  if (s.status === 'deprecated') {
    const days = Math.ceil((Date.parse(`${s.shutdown}T00:00:00Z`) - now.getTime()) / 86_400_000);
    return {
      warning: `${model} is deprecated and shuts down on ${s.shutdown} (${days <= 1 ? 'tomorrow' : `in ${days} days`}); move to ${s.replacement}`,
    };
  }
  return {};
}

/** Whether the model takes an optional parameter (unknown models take everything). */
export function supportsParam(caps: ModelCapabilities, param: ParamName): boolean {
  return caps.params === 'any' || caps.params.includes(param);
}

/**
 * Parameters a run is refused for at planning, before any call, rather than warned about: left out
 * of the request they would change what every row is asked for without the user knowing
 * (`complexity`, which only gpt-image-2.6 takes), and a value the model does not take would fail
 * every row with the provider's 400. One sentence, or undefined.
 */
export function refusedParams(backend: Backend, model: string, params: ModelParams): string | undefined {
  if (params.complexity === undefined) return undefined;
  const caps = capabilities(backend, model);
  if (!supportsParam(caps, 'complexity')) {
    const takers = tableModels(backend).filter((m) => capabilities(backend, m.model).complexities);
    return `${model} does not take --complexity${takers.length ? ` (${takers.map((m) => m.model).join(', ')} do)` : ''}; drop it or pick one of those models`;
  }
  if (caps.complexities && !caps.complexities.includes(params.complexity))
    return `--complexity ${params.complexity}: ${model} takes ${caps.complexities.join(', ')}`;
  return undefined;
}

function parseSize(size: string | undefined): [number, number] | undefined {
  const m = /^(\d+)x(\d+)$/.exec(size ?? '');
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

/**
 * Problems with the parameters for this model, one sentence each (empty when fine). Parameters a
 * model does not take are left out of requests by the adapters, so these are warnings unless the
 * caller decides otherwise.
 */
export function checkParams(
  backend: Backend,
  model: string,
  params: ModelParams,
  options: { numImages?: number; inputImages?: number; promptChars?: number } = {},
): string[] {
  const caps = capabilities(backend, model);
  const problems: string[] = [];
  const given = (Object.keys(params) as ParamName[]).filter((k) => params[k] !== undefined);
  for (const p of given) {
    if (!supportsParam(caps, p)) problems.push(`${model} does not take ${p}; it is left out of the request`);
  }
  if (params.size && supportsParam(caps, 'size')) {
    if (caps.sizes && !caps.sizes.includes(params.size)) problems.push(`${model} takes size ${caps.sizes.join(', ')}, not ${params.size}`);
    if (caps.flexibleSize && params.size !== 'auto') {
      const wh = parseSize(params.size);
      const f = caps.flexibleSize;
      if (!wh) problems.push(`size must be WxH or auto, not ${params.size}`);
      else {
        const [w, h] = wh;
        if (w % f.multipleOf || h % f.multipleOf) problems.push(`${model} needs both sides of size divisible by ${f.multipleOf}`);
        if (Math.max(w, h) > f.maxSide || w * h > f.maxPixels)
          problems.push(`${model} takes sizes up to ${f.maxSide} px a side and ${f.maxPixels} pixels`);
        if (w * h < f.minPixels) problems.push(`${model} takes sizes of at least ${f.minPixels} pixels in all, not ${params.size}`);
        if (Math.max(w, h) / Math.min(w, h) > f.maxAspect) problems.push(`${model} takes aspect ratios up to ${f.maxAspect}:1`);
      }
    }
  }
  if (params.quality && caps.qualities && supportsParam(caps, 'quality') && !caps.qualities.includes(params.quality)) {
    problems.push(`${model} takes quality ${caps.qualities.join(', ')}, not ${params.quality}`);
  }
  if (params.complexity && caps.complexities && supportsParam(caps, 'complexity') && !caps.complexities.includes(params.complexity)) {
    problems.push(`${model} takes complexity ${caps.complexities.join(', ')}, not ${params.complexity}`);
  }
  if (params.background === 'transparent' && supportsParam(caps, 'background')) {
    if (caps.transparentBackground === false) problems.push(`${model} does not support a transparent background`);
    if (caps.transparentBackground === 'preview') problems.push(`${model}: a transparent background is in preview at OpenAI`);
    if (params.outputFormat === 'jpeg') problems.push('a transparent background needs png or webp output, not jpeg');
  }
  if (params.aspectRatio && caps.aspectRatios && supportsParam(caps, 'aspectRatio') && !caps.aspectRatios.includes(params.aspectRatio)) {
    problems.push(`${model} takes aspect ratios ${caps.aspectRatios.join(', ')}, not ${params.aspectRatio}`);
  }
  if (params.imageSize && caps.imageSizes && supportsParam(caps, 'imageSize') && !caps.imageSizes.includes(params.imageSize)) {
    problems.push(`${model} takes image sizes ${caps.imageSizes.join(', ')}, not ${params.imageSize}`);
  }
  if (options.inputImages !== undefined && options.inputImages > caps.maxInputImages) {
    problems.push(`${model} takes at most ${caps.maxInputImages} input image(s), not ${options.inputImages}`);
  } else if (
    options.inputImages !== undefined &&
    caps.recommendedMaxInputImages !== undefined &&
    options.inputImages > caps.recommendedMaxInputImages
  ) {
    problems.push(`${model} works best with up to ${caps.recommendedMaxInputImages} input images; the row has ${options.inputImages}`);
  }
  if (options.promptChars !== undefined && caps.maxPromptChars !== undefined && options.promptChars > caps.maxPromptChars) {
    problems.push(`${model} takes prompts of at most ${caps.maxPromptChars} characters, not ${options.promptChars}`);
  }
  if (options.inputImages && !caps.editCapable) problems.push(`${model} is not an image-editing model`);
  return problems;
}

/** The per-image table key for a size: `1024x1024`-style sizes map to square, portrait or landscape. */
function sizeKey(table: Record<string, number>, size: string | undefined, fallback: string): string {
  if (size && table[size] !== undefined) return size;
  const wh = parseSize(size);
  if (wh && table['1024x1024'] !== undefined) {
    const [w, h] = wh;
    return w === h ? '1024x1024' : w < h ? '1024x1536' : '1536x1024';
  }
  return fallback;
}

/**
 * Estimated cost in USD of calls that returned `images` images with this (summed) usage, or
 * undefined when unknown (never 0 for a missing price). `usage` has the keys the adapters report:
 * inputTokens, inputTextTokens, inputImageTokens, cachedInputTokens, cachedInputImageTokens,
 * outputTokens, outputImageTokens, outputTextTokens, thoughtsTokens, costUsd. Each token class is
 * priced as the provider prices it (text vs image output, cached input); token prices are used when
 * the provider reported tokens, else the per-image table.
 */
export function estimateCostUsd(
  backend: Backend,
  model: string,
  params: ModelParams,
  usage: Record<string, number> | undefined,
  images: number,
): number | undefined {
  const { price } = capabilities(backend, model);
  if (price.free) return 0;
  if (price.fromUsage) return usage?.costUsd;
  const u = usage ?? {};
  if (price.tokens && (u.inputTokens !== undefined || u.outputTokens !== undefined)) {
    const t = price.tokens;
    const inputImage = u.inputImageTokens ?? 0;
    const inputText = u.inputTextTokens ?? Math.max(0, (u.inputTokens ?? 0) - inputImage);
    // Cached tokens are part of the input counts; they are billed at the cached rate instead.
    const cachedImage = Math.min(inputImage, u.cachedInputImageTokens ?? 0);
    const cachedText = Math.min(inputText, Math.max(0, (u.cachedInputTokens ?? 0) - cachedImage));
    const outputText = (u.outputTextTokens ?? 0) + (u.thoughtsTokens ?? 0);
    const outputImage = u.outputImageTokens ?? Math.max(0, (u.outputTokens ?? 0) - (u.outputTextTokens ?? 0));
    const imageInputRate = t.imageInput ?? t.input;
    const usd =
      (inputText - cachedText) * t.input +
      cachedText * (t.cachedInput ?? t.input) +
      (inputImage - cachedImage) * imageInputRate +
      cachedImage * (t.cachedImageInput ?? t.cachedInput ?? imageInputRate) +
      outputImage * t.output +
      outputText * (t.textOutput ?? t.output);
    return round(usd / 1e6);
  }
  if (price.perImage) {
    // Unknown quality counts as high: an estimate should not undercount.
    const qualityKey = params.quality && price.perImage[params.quality] ? params.quality : price.perImage.high ? 'high' : '*';
    const byQuality = price.perImage[qualityKey] ?? price.perImage['*'];
    if (!byQuality) return undefined;
    const fallback = byQuality['*'] !== undefined ? '*' : byQuality['1K'] !== undefined ? '1K' : '1024x1024';
    const perImage = byQuality[sizeKey(byQuality, params.imageSize ?? params.size, fallback)] ?? byQuality[fallback];
    return perImage === undefined ? undefined : round(perImage * images);
  }
  return undefined;
}

/**
 * Chat models used as prompt enhancers and judges: USD per 1M tokens. gpt-4.1/4o: OpenAI pricing page
 * as published in 2025 (they shut down 2027-01-14, [OA-dep] via the audit). GPT-5.4 $2.50/$15, GPT-5.5
 * $5/$30, GPT-5.6 Sol $5/$30, Terra $2.50/$15, Luna $1/$6 (calcaas.com and lushbinary.com, 2026-06-28,
 * from OpenAI's preview post; benchr.org for 5.4/5.5; cached rates not published, so none given).
 * All checked 2026-12-07.
 */
const ENHANCER_PRICES: Record<string, { input: number; cachedInput?: number; output: number }> = {
  'gpt-5.4': { input: 2.5, output: 15 },
  'gpt-5.5': { input: 5, output: 30 },
  'gpt-5.6-sol': { input: 5, output: 30 },
  'gpt-5.6-terra': { input: 2.5, output: 15 },
  'gpt-5.6-luna': { input: 1, output: 6 },
  'gpt-4.1': { input: 2, cachedInput: 0.5, output: 8 },
  'gpt-4.1-mini': { input: 0.4, cachedInput: 0.1, output: 1.6 },
  'gpt-4.1-nano': { input: 0.1, cachedInput: 0.025, output: 0.4 },
  'gpt-4o': { input: 2.5, cachedInput: 1.25, output: 10 },
  'gpt-4o-mini': { input: 0.15, cachedInput: 0.075, output: 0.6 },
};

/**
 * Cost of the prompt enhancer's calls, at the enhancer's own rates: what the server reported
 * (`costUsd`, OpenRouter), else the chat model's token prices, else undefined (unknown).
 */
export function estimateEnhancerCostUsd(model: string, usage: Record<string, number> | undefined): number | undefined {
  if (!usage || Object.keys(usage).length === 0) return 0;
  if (usage.costUsd !== undefined) return usage.costUsd;
  const id = model.replace(/^openai\//, '');
  const hit = Object.keys(ENHANCER_PRICES)
    .filter((k) => id === k || id.startsWith(`${k}-20`))
    .sort((a, b) => b.length - a.length)[0];
  if (!hit) return undefined;
  const p = ENHANCER_PRICES[hit]!;
  const cached = Math.min(usage.inputTokens ?? 0, usage.cachedInputTokens ?? 0);
  return round(
    (((usage.inputTokens ?? 0) - cached) * p.input + cached * (p.cachedInput ?? p.input) + (usage.outputTokens ?? 0) * p.output) / 1e6,
  );
}

/**
 * A row's cost: the image model's calls at its rates plus the prompt enhancer's at the enhancer's
 * rates; undefined (unknown) when either part is unknown.
 */
export function rowCostUsd(
  backend: Backend,
  model: string,
  params: ModelParams,
  usage: Record<string, number> | undefined,
  images: number,
  enhancer?: { model: string; usage: Record<string, number> | undefined },
): number | undefined {
  const image = estimateCostUsd(backend, model, params, usage, images);
  const enhance = enhancer ? estimateEnhancerCostUsd(enhancer.model, enhancer.usage) : 0;
  return image === undefined || enhance === undefined ? undefined : round(image + enhance);
}

function round(usd: number): number {
  return Math.round(usd * 1e6) / 1e6;
}

/**
 * The `modalities` to ask OpenRouter for: image, plus text only where the model outputs text. Here,
 * not in openrouter/adapter.ts, so `atelier models` shows it without loading the adapter's SDK.
 */
export function modalitiesFor(
  declared: readonly string[] | undefined,
  fallback: readonly ('image' | 'text')[] | undefined,
): ('image' | 'text')[] {
  if (declared?.includes('image')) return declared.includes('text') ? ['image', 'text'] : ['image'];
  return [...(fallback ?? ['image', 'text'])];
}
