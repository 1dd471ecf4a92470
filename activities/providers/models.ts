import type { ImageLimits } from '../../lib/images';
import type { ModelParams } from '../../lib/types';
import type { ImageEditProvider } from './provider';

// Per-model capabilities and prices, in one table. Adapters ask this table what a model takes
// (inputs, sizes, which optional parameters) instead of special-casing model names; the CLI can use
// `checkParams` to warn about parameters a model ignores, and the run summary `estimateCostUsd`.
//
// Model ids change often (see the lifecycle notes in the providers reference): an id not in the
// table falls back to the longest table id it starts with (`gpt-image-1.5-2025-12-16` ->
// `gpt-image-1.5`, `gemini-3.1-flash-image-preview` -> `gemini-3.1-flash-image`), then to a family
// pattern (`gpt-image-*`, `google/*` on OpenRouter), then to the backend's permissive default.
// Prices are estimates (USD, standard tier, not batch) as published in Nov 2026; they are for run
// summaries, not billing.

/** The cloud API backends (those served by a TypeScript adapter). */
export type Backend = ImageEditProvider['backend'];

/** Optional request parameters (ModelParams fields) a model may take. */
export type ParamName = keyof ModelParams;

export interface Price {
  /**
   * USD per 1M tokens, used when the provider reports token counts: `input` for text (and images
   * unless `imageInput` is given), `output` for image output (and text unless `textOutput` is given).
   */
  tokens?: { input: number; imageInput?: number; output: number; textOutput?: number };
  /**
   * USD per output image when no usage is reported: `perImage[quality][size]`, with `*` matching any
   * quality or size. `size` is the OpenAI size (`1024x1024`; other WxH map to square, portrait or
   * landscape) or the Gemini image size (`1K`, `2K`, `4K`).
   */
  perImage?: Record<string, Record<string, number>>;
  /** The provider reports the cost of each call in its usage (OpenRouter `usage.cost`). */
  fromUsage?: boolean;
  /** Free (ModelScope's daily free quota). */
  free?: boolean;
}

export interface ModelCapabilities {
  backend: Backend;
  /** The table entry that matched: a model id, a family (`gpt-image-*`) or `<backend> default`. */
  entry: string;
  /** False when the id matched only the backend's permissive default. */
  known: boolean;
  /** An image model that can edit (takes input images). False for text-to-image-only models. */
  editCapable: boolean;
  /** Most input images one call takes. */
  maxInputImages: number;
  /** What one input image may be; larger inputs are shrunk to fit. */
  inputLimits: ImageLimits;
  /** The model takes exactly one square PNG (dall-e-2): the adapter pads, resizes and converts. */
  squarePngInput?: boolean;
  /** Takes a mask for the first image. */
  mask: boolean;
  /** Most images one call returns (`n`); adapters make several calls above it. */
  maxImagesPerCall: number;
  /** Optional parameters the model takes; others are left out of the request. `any`: unknown model, all passed. */
  params: readonly ParamName[] | 'any';
  /** Accepted `size` values (OpenAI), when the model has a fixed list. */
  sizes?: readonly string[];
  /** gpt-image-2: any WxH within these bounds. */
  flexibleSize?: { multipleOf: number; maxSide: number; maxPixels: number; maxAspect: number };
  qualities?: readonly string[];
  /** transparent background supported (OpenAI). */
  transparentBackground?: boolean;
  /** Gemini / OpenRouter aspect ratios. */
  aspectRatios?: readonly string[];
  /** Gemini / OpenRouter image sizes. */
  imageSizes?: readonly string[];
  /** OpenRouter `modalities`: image and text for Gemini-style models, image alone for image-only models. */
  outputModalities?: readonly ('image' | 'text')[];
  /** Send `response_format: b64_json` (dall-e-2 only; GPT image models reject the field). */
  responseFormat?: boolean;
  /** Prompt length limit in characters, when the API has one. */
  maxPromptChars?: number;
  price: Price;
}

type Entry = Omit<ModelCapabilities, 'backend' | 'entry' | 'known'>;

const MB = 1024 * 1024;

// ---- OpenAI ------------------------------------------------------------------------------------

const GPT_SIZES = ['1024x1024', '1536x1024', '1024x1536', 'auto'] as const;
const GPT_QUALITIES = ['low', 'medium', 'high', 'auto'] as const;
const GPT_PARAMS: readonly ParamName[] = ['size', 'quality', 'background', 'outputFormat', 'outputCompression', 'inputFidelity', 'moderation'];
const GPT_PARAMS_NO_FIDELITY = GPT_PARAMS.filter((p) => p !== 'inputFidelity');

/** Per-image price table for the three classic GPT sizes. */
function gptPerImage(low: [number, number], medium: [number, number], high: [number, number]) {
  const row = ([square, rect]: [number, number]) => ({ '1024x1024': square, '1024x1536': rect, '1536x1024': rect });
  return { low: row(low), medium: row(medium), high: row(high) };
}

const gptImage: Entry = {
  editCapable: true,
  maxInputImages: 16,
  inputLimits: { maxBytes: 50 * MB },
  mask: true,
  maxImagesPerCall: 10,
  params: GPT_PARAMS,
  sizes: GPT_SIZES,
  qualities: GPT_QUALITIES,
  transparentBackground: true,
  maxPromptChars: 32_000,
  price: {},
};

const OPENAI: Record<string, Entry> = {
  'gpt-image-1': {
    ...gptImage,
    price: { tokens: { input: 5, imageInput: 10, output: 40 }, perImage: gptPerImage([0.011, 0.016], [0.042, 0.063], [0.167, 0.25]) },
  },
  'gpt-image-1.5': {
    ...gptImage,
    price: { tokens: { input: 5, imageInput: 8, output: 32 }, perImage: gptPerImage([0.009, 0.013], [0.034, 0.05], [0.133, 0.2]) },
  },
  'chatgpt-image-latest': {
    ...gptImage,
    price: { tokens: { input: 5, imageInput: 8, output: 32 }, perImage: gptPerImage([0.009, 0.013], [0.034, 0.05], [0.133, 0.2]) },
  },
  'gpt-image-1-mini': {
    ...gptImage,
    params: GPT_PARAMS_NO_FIDELITY,
    price: { tokens: { input: 2, imageInput: 2.5, output: 8 }, perImage: gptPerImage([0.005, 0.006], [0.011, 0.015], [0.036, 0.052]) },
  },
  'gpt-image-2': {
    ...gptImage,
    // input_fidelity is rejected by gpt-image-2 (always high fidelity); no transparent background.
    params: GPT_PARAMS_NO_FIDELITY,
    sizes: undefined,
    flexibleSize: { multipleOf: 16, maxSide: 3840, maxPixels: 3840 * 2160, maxAspect: 3 },
    transparentBackground: false,
    price: { tokens: { input: 5, imageInput: 8, output: 30 }, perImage: gptPerImage([0.006, 0.005], [0.053, 0.041], [0.211, 0.165]) },
  },
  'dall-e-2': {
    editCapable: true,
    maxInputImages: 1,
    inputLimits: { maxBytes: 4 * MB, maxSide: 1024 },
    squarePngInput: true,
    mask: true,
    maxImagesPerCall: 10,
    params: ['size'],
    sizes: ['256x256', '512x512', '1024x1024'],
    qualities: ['standard'],
    responseFormat: true,
    maxPromptChars: 1000,
    price: { perImage: { '*': { '256x256': 0.016, '512x512': 0.018, '1024x1024': 0.02 } } },
  },
};

// ---- Gemini ------------------------------------------------------------------------------------

const GEMINI_RATIOS = ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'] as const;
/** Inline images: 7 MB a file; the whole request should stay under about 20 MB. */
const GEMINI_INPUT: ImageLimits = { maxBytes: 7 * MB, maxSide: 4096 };

const geminiImage: Entry = {
  editCapable: true,
  maxInputImages: 14,
  inputLimits: GEMINI_INPUT,
  mask: false,
  maxImagesPerCall: 1,
  params: ['aspectRatio', 'imageSize'],
  aspectRatios: GEMINI_RATIOS,
  imageSizes: ['1K', '2K', '4K'],
  price: {},
};

const GEMINI: Record<string, Entry> = {
  'gemini-2.5-flash-image': {
    ...geminiImage,
    // "Works best with up to 3 images"; one fixed size tier (about 1024 px, 1290 output tokens).
    maxInputImages: 3,
    params: ['aspectRatio'],
    imageSizes: undefined,
    price: { tokens: { input: 0.3, output: 30, textOutput: 2.5 }, perImage: { '*': { '*': 0.039 } } },
  },
  'gemini-3-pro-image': {
    ...geminiImage,
    // 1120 output tokens at 1K/2K, 2000 at 4K, $120/M image output tokens.
    price: { tokens: { input: 2, output: 120, textOutput: 12 }, perImage: { '*': { '1K': 0.134, '2K': 0.134, '4K': 0.24 } } },
  },
  'gemini-3.1-flash-image': {
    ...geminiImage,
    aspectRatios: [...GEMINI_RATIOS, '1:4', '4:1', '1:8', '8:1'],
    imageSizes: ['512', '1K', '2K', '4K'],
    // 747 / 1120 / 1680 / 2520 output tokens at 512 / 1K / 2K / 4K, $60/M image output tokens.
    price: { tokens: { input: 0.5, output: 60, textOutput: 3 }, perImage: { '*': { '512': 0.045, '1K': 0.067, '2K': 0.101, '4K': 0.151 } } },
  },
};

// ---- ModelScope --------------------------------------------------------------------------------

const modelscopeEdit: Entry = {
  editCapable: true,
  maxInputImages: 3,
  inputLimits: { maxBytes: 10 * MB, maxSide: 2048 },
  mask: false,
  maxImagesPerCall: 1,
  params: ['size', 'seed'],
  price: { free: true },
};

const MODELSCOPE: Record<string, Entry> = {
  'Qwen/Qwen-Image-Edit': { ...modelscopeEdit, maxInputImages: 1 },
  'Qwen/Qwen-Image-Edit-2509': modelscopeEdit,
  'Qwen/Qwen-Image-Edit-2511': modelscopeEdit,
  'Qwen/Qwen-Image': { ...modelscopeEdit, editCapable: false, maxInputImages: 0 },
};

// ---- Family patterns and defaults ---------------------------------------------------------------

interface Family {
  backend: Backend;
  name: string;
  test: RegExp;
  entry: (model: string) => Entry;
}

const FAMILIES: Family[] = [
  // Newer GPT image models (gpt-image-2.5-flare, -sunburst, ...): gpt-image-2's shape, price unknown.
  { backend: 'openai', name: 'gpt-image-*', test: /^(gpt-image|chatgpt-image)/, entry: () => ({ ...OPENAI['gpt-image-2']!, qualities: [...GPT_QUALITIES, 'xhigh', 'max'], price: {} }) },
  // OpenRouter's Google image models: Gemini's limits, cost from the response.
  {
    backend: 'openrouter',
    name: 'google/*',
    test: /^google\//,
    entry: (model) => {
      const gemini = lookup(GEMINI, model.slice('google/'.length));
      const base = gemini ? gemini[1] : geminiImage;
      // OpenRouter's image_config takes 0.5K ... 4K.
      return { ...base, params: ['aspectRatio', 'imageSize'], imageSizes: ['0.5K', '1K', '2K', '4K'], inputLimits: { maxBytes: 7 * MB, maxSide: 4096 }, outputModalities: ['image', 'text'], price: { fromUsage: true } };
    },
  },
  // OpenRouter's image-only models (Flux, Riverflow) answer with images alone.
  { backend: 'openrouter', name: 'image-only', test: /^(black-forest-labs|sourceful)\//, entry: () => ({ ...DEFAULTS.openrouter, maxInputImages: 8, outputModalities: ['image'] }) },
  { backend: 'modelscope', name: 'Qwen-Image-Edit*', test: /Image-Edit/i, entry: () => modelscopeEdit },
];

const DEFAULTS: Record<Backend, Entry> = {
  // Any OpenAI-compatible server: pass every parameter the user gave; the server decides.
  openai: { ...gptImage, params: 'any', sizes: undefined, qualities: undefined, transparentBackground: undefined, maxPromptChars: undefined, price: {} },
  gemini: { ...geminiImage, price: {} },
  openrouter: { ...geminiImage, maxInputImages: 16, maxImagesPerCall: 1, inputLimits: { maxBytes: 10 * MB, maxSide: 4096 }, imageSizes: ['0.5K', '1K', '2K', '4K'], aspectRatios: undefined, outputModalities: ['image', 'text'], price: { fromUsage: true } },
  modelscope: { ...modelscopeEdit, price: { free: true } },
};

const TABLES: Record<Backend, Record<string, Entry>> = { openai: OPENAI, gemini: GEMINI, openrouter: {}, modelscope: MODELSCOPE };

/** Exact id, else the longest id the model starts with followed by `-` (dated or preview versions). */
function lookup(table: Record<string, Entry>, model: string): [string, Entry] | undefined {
  const exact = table[model];
  if (exact) return [model, exact];
  let best: [string, Entry] | undefined;
  for (const [id, entry] of Object.entries(table)) {
    if (model.startsWith(`${id}-`) && (!best || id.length > best[0].length)) best = [id, entry];
  }
  return best;
}

/** What a model takes and costs. Unknown ids get the backend's permissive default (`known: false`). */
export function capabilities(backend: Backend, model: string): ModelCapabilities {
  const hit = lookup(TABLES[backend], model);
  if (hit) return { backend, entry: hit[0], known: true, ...hit[1] };
  const family = FAMILIES.find((f) => f.backend === backend && f.test.test(model));
  if (family) return { backend, entry: family.name, known: true, ...family.entry(model) };
  return { backend, entry: `${backend} default`, known: false, ...DEFAULTS[backend] };
}

/** Whether the model takes an optional parameter (unknown models take everything). */
export function supportsParam(caps: ModelCapabilities, param: ParamName): boolean {
  return caps.params === 'any' || caps.params.includes(param);
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
export function checkParams(backend: Backend, model: string, params: ModelParams, options: { numImages?: number; inputImages?: number } = {}): string[] {
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
        if (Math.max(w, h) > f.maxSide || w * h > f.maxPixels) problems.push(`${model} takes sizes up to ${f.maxSide} px a side and ${f.maxPixels} pixels`);
        if (Math.max(w, h) / Math.min(w, h) > f.maxAspect) problems.push(`${model} takes aspect ratios up to ${f.maxAspect}:1`);
      }
    }
  }
  if (params.quality && caps.qualities && supportsParam(caps, 'quality') && !caps.qualities.includes(params.quality)) {
    problems.push(`${model} takes quality ${caps.qualities.join(', ')}, not ${params.quality}`);
  }
  if (params.background === 'transparent' && supportsParam(caps, 'background')) {
    if (caps.transparentBackground === false) problems.push(`${model} does not support a transparent background`);
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
 * undefined when unknown. `usage` has the keys the adapters report: inputTokens, inputTextTokens,
 * inputImageTokens, outputTokens, outputImageTokens, outputTextTokens, thoughtsTokens, costUsd.
 * Token prices are used when the provider reported tokens, else the per-image table.
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
    const outputText = (u.outputTextTokens ?? 0) + (u.thoughtsTokens ?? 0);
    const outputImage = u.outputImageTokens ?? Math.max(0, (u.outputTokens ?? 0) - (u.outputTextTokens ?? 0));
    const usd = inputText * t.input + inputImage * (t.imageInput ?? t.input) + outputImage * t.output + outputText * (t.textOutput ?? t.output);
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

function round(usd: number): number {
  return Math.round(usd * 1e6) / 1e6;
}
