import type { ImageLimits } from '../../lib/images';
import type { ModelParams } from '../../lib/shared/types';
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
// the same id on different dates. Each lifecycle fact below carries its source and the day it was
// checked (`checked 2026-12-07`: shared/reference/providers-audit-2026-12.md, whose source tags are used).

/** The cloud API backends (those served by a TypeScript adapter). */
export type Backend = ImageEditProvider['backend'];

/** Optional request parameters (ModelParams fields) a model may take. */
export type ParamName = keyof ModelParams;

export interface Price {
  /**
   * USD per 1M tokens, used when the provider reports token counts: `input` for text (and images
   * unless `imageInput` is given), `output` for image output (and text unless `textOutput` is given).
   */
  tokens?: {
    input: number;
    imageInput?: number;
    output: number;
    textOutput?: number;
    /** Cached input tokens (text, and images unless `cachedImageInput` is given). */
    cachedInput?: number;
    cachedImageInput?: number;
  };
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

/** Where a model is in its provider's lifecycle (dates are YYYY-MM-DD, UTC). */
export type Lifecycle =
  | { status: 'current' }
  | { status: 'deprecated'; shutdown: string; replacement: string }
  | { status: 'retired'; replacement: string; since?: string };

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
  /** Takes a mask for the first image. */
  mask: boolean;
  /** Most images one call returns (`n`); adapters make several calls above it. */
  maxImagesPerCall: number;
  /** Optional parameters the model takes; others are left out of the request. `any`: unknown model, all passed. */
  params: readonly ParamName[] | 'any';
  /** Accepted `size` values (OpenAI), when the model has a fixed list. */
  sizes?: readonly string[];
  /** gpt-image-2: any WxH within these bounds. */
  flexibleSize?: { multipleOf: number; maxSide: number; minPixels: number; maxPixels: number; maxAspect: number };
  qualities?: readonly string[];
  /** gpt-image-2.6: the `complexity` values it takes (a table fact; no CLI flag sends it yet). */
  complexities?: readonly string[];
  /** transparent background supported (OpenAI); `preview` works but OpenAI calls it a preview. */
  transparentBackground?: boolean | 'preview';
  /** Gemini / OpenRouter aspect ratios. */
  aspectRatios?: readonly string[];
  /** Gemini / OpenRouter image sizes. */
  imageSizes?: readonly string[];
  /** OpenRouter `modalities`: image and text for Gemini-style models, image alone for image-only models. */
  outputModalities?: readonly ('image' | 'text')[];
  /** Prompt length limit in characters, when the API has one. */
  maxPromptChars?: number;
  /** Inputs above this count are accepted but the provider advises against them (a warning). */
  recommendedMaxInputImages?: number;
  /** Gemini: the model answers with `responseModalities: ['IMAGE']` alone (no chatty text). */
  imageOnlyResponse?: boolean;
  /** Total size limit of one inline request (base64 included), in bytes, when the API has one. */
  maxRequestBytes?: number;
  /** Mask file size limit in bytes. */
  maxMaskBytes?: number;
  /** Lifecycle; absent means current. */
  lifecycle?: Lifecycle;
  price: Price;
}

type Entry = Omit<ModelCapabilities, 'backend' | 'entry' | 'known'>;

const MB = 1024 * 1024;

// ---- OpenAI ------------------------------------------------------------------------------------

const GPT_SIZES = ['1024x1024', '1536x1024', '1024x1536', 'auto'] as const;
const GPT_QUALITIES = ['low', 'medium', 'high', 'auto'] as const;
const GPT_PARAMS: readonly ParamName[] = [
  'size',
  'quality',
  'background',
  'outputFormat',
  'outputCompression',
  'inputFidelity',
  'moderation',
];
const GPT_PARAMS_NO_FIDELITY = GPT_PARAMS.filter((p) => p !== 'inputFidelity');
/** Shutdown of gpt-image-1.5, gpt-image-1-mini and chatgpt-image-latest [OpenAI deprecations page]. */
const GPT_IMAGE_1_5_SHUTDOWN: Lifecycle = {
  status: 'deprecated',
  shutdown: '2026-12-01',
  replacement: 'gpt-image-2.6-sunburst (or gpt-image-2.6-flare)',
};

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
  maxMaskBytes: 4 * MB,
  maxImagesPerCall: 10,
  params: GPT_PARAMS,
  sizes: GPT_SIZES,
  qualities: GPT_QUALITIES,
  transparentBackground: true,
  maxPromptChars: 32_000,
  price: {},
};

/**
 * gpt-image-2: any WxH with both sides divisible by 16, aspect 1:3 to 3:1, at most 3840 px a side
 * (openai-node src/resources/images.ts), 655,360 to 8,294,400 pixels in all (lobehub/lobehub#14039);
 * no input_fidelity (400 invalid_input_fidelity_model); transparent background "in preview"
 * (openapi.yaml CreateImageEditRequest.background). Token prices: text in $5 (cached $1.25), image
 * in $8 (cached $2), image out $30, text out $10 per 1M (OpenAI pricing page as quoted by
 * tokenmix.ai and robotsatlas.com; text out also in fal.ai/models/openai/gpt-image-2/llms.txt).
 */
const gptImage2: Entry = {
  ...gptImage,
  params: GPT_PARAMS_NO_FIDELITY,
  sizes: undefined,
  flexibleSize: { multipleOf: 16, maxSide: 3840, minPixels: 655_360, maxPixels: 8_294_400, maxAspect: 3 },
  transparentBackground: 'preview',
  price: {
    tokens: { input: 5, cachedInput: 1.25, imageInput: 8, cachedImageInput: 2, output: 30, textOutput: 10 },
    perImage: gptPerImage([0.006, 0.005], [0.053, 0.041], [0.211, 0.165]),
  },
};

/**
 * gpt-image-2.5 / 2.6, flare and sunburst (dated -2026-09-08): $5 text / $8 image in / $30 image out
 * per 1M (developers.openai.com/de-DE/api/docs/models/gpt-image-2.6-sunburst; flare and 2.5 assumed
 * the same). Cached and text-output rates are assumed to be gpt-image-2's (unverified). Size rules
 * are assumed to be gpt-image-2's.
 * - quality auto/low/medium/high/xhigh/max on 2.5 and 2.6 ([Comfy] OpenAIGPTImageNodeV3: 2.5's inputs
 *   "match the 2.6 models, except model.complexity is not offered"; OpenAI's 2.6 page; checked 2026-12-07).
 * - transparent background fully supported on 2.5 and 2.6; only gpt-image-2 is "in preview" ([OA-edit],
 *   [OA-26]; checked 2026-12-07).
 * - 2.6 alone takes `complexity` low/medium/high, default high ([OA-edit], [apidog]; checked 2026-12-07).
 */
const GPT_QUALITIES_2_5 = [...GPT_QUALITIES, 'xhigh', 'max'] as const;
const gptImage25: Entry = {
  ...gptImage2,
  qualities: GPT_QUALITIES_2_5,
  transparentBackground: true,
  price: { tokens: gptImage2.price.tokens! },
};
const gptImage26: Entry = { ...gptImage25, complexities: ['low', 'medium', 'high'] };

/** A retired model: it no longer answers, so only its lifecycle matters. */
function retired(replacement: string, since?: string): Entry {
  return { ...gptImage, lifecycle: { status: 'retired', replacement, ...(since ? { since } : {}) } };
}

const OPENAI: Record<string, Entry> = {
  'gpt-image-2': gptImage2,
  'gpt-image-2.5-flare': gptImage25,
  'gpt-image-2.5-sunburst': gptImage25,
  'gpt-image-2.6-flare': gptImage26,
  'gpt-image-2.6-sunburst': gptImage26,
  'gpt-image-1.5': {
    ...gptImage,
    lifecycle: GPT_IMAGE_1_5_SHUTDOWN,
    price: { tokens: { input: 5, imageInput: 8, output: 32 }, perImage: gptPerImage([0.009, 0.013], [0.034, 0.05], [0.133, 0.2]) },
  },
  'chatgpt-image-latest': {
    ...gptImage,
    lifecycle: GPT_IMAGE_1_5_SHUTDOWN,
    price: { tokens: { input: 5, imageInput: 8, output: 32 }, perImage: gptPerImage([0.009, 0.013], [0.034, 0.05], [0.133, 0.2]) },
  },
  'gpt-image-1-mini': {
    ...gptImage,
    params: GPT_PARAMS_NO_FIDELITY,
    lifecycle: GPT_IMAGE_1_5_SHUTDOWN,
    price: { tokens: { input: 2, imageInput: 2.5, output: 8 }, perImage: gptPerImage([0.005, 0.006], [0.011, 0.015], [0.036, 0.052]) },
  },
  'gpt-image-1': retired('gpt-image-2.5-sunburst', '2026-10-23'),
  // Shut down 2026-05-12 (nextcloud/integration_openai#370, calesthio/OpenMontage#256; checked 2026-12-07).
  'dall-e-2': retired('gpt-image-2', '2026-05-12'),
  'dall-e-3': retired('gpt-image-2', '2026-05-12'),
};

// ---- Gemini ------------------------------------------------------------------------------------

const GEMINI_RATIOS = ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'] as const;
/** Inline images: 7 MB a file. */
const GEMINI_INPUT: ImageLimits = { maxBytes: 7 * MB, maxSide: 4096 };

/**
 * Inline requests on the Gemini API: 100 MB in all since 2026-01-08 (it was 20 MB: ai.google.dev
 * changelog 2026-01-08, blog.google "Increased file size limits"; providers-audit-2026-12 §1; not
 * yet confirmed for image models by a live call). Over it, the adapter moves the largest inputs to
 * the Files API.
 */
const GEMINI_MAX_REQUEST_BYTES = 100 * MB;
/**
 * Vertex AI: "Input size limit 500 MB", 7 MB per inline file (docs.cloud.google.com vertex-ai
 * gemini/3-1-flash-image, [V-31]; checked 2026-12-07). Vertex has no Files API: a row over it fails
 * before any call.
 */
const VERTEX_MAX_REQUEST_BYTES = 500 * MB;

const geminiImage: Entry = {
  editCapable: true,
  maxInputImages: 14,
  inputLimits: GEMINI_INPUT,
  maxRequestBytes: GEMINI_MAX_REQUEST_BYTES,
  // responseModalities ['IMAGE'] alone (docs.apiyi.com nano-banana-2 text-to-image; the SDK sample in
  // providers.md shows it too): no text-only answers to pay for.
  imageOnlyResponse: true,
  mask: false,
  maxImagesPerCall: 1,
  params: ['aspectRatio', 'imageSize'],
  aspectRatios: GEMINI_RATIOS,
  imageSizes: ['1K', '2K', '4K'],
  price: {},
};

const GEMINI_RATIOS_14 = [...GEMINI_RATIOS, '1:4', '4:1', '1:8', '8:1'] as const;

/** 2.5 Flash Image's shape: one size tier (about 1024 px, 1290 output tokens), "best with up to 3" inputs. */
const gemini25FlashImage: Entry = {
  ...geminiImage,
  // "Works best with up to 3 images" is advice, not a limit (no hard limit found): a warning above 3.
  recommendedMaxInputImages: 3,
  params: ['aspectRatio'],
  imageSizes: undefined,
  price: { tokens: { input: 0.3, output: 30, textOutput: 2.5 }, perImage: { '*': { '*': 0.039 } } },
};
const gemini3ProImage: Entry = {
  ...geminiImage,
  // 1120 output tokens at 1K/2K, 2000 at 4K, $120/M image output tokens.
  price: { tokens: { input: 2, output: 120, textOutput: 12 }, perImage: { '*': { '1K': 0.134, '2K': 0.134, '4K': 0.24 } } },
};
const gemini31FlashImage: Entry = {
  ...geminiImage,
  aspectRatios: GEMINI_RATIOS_14,
  imageSizes: ['512', '1K', '2K', '4K'],
  // 747 / 1120 / 1680 / 2520 output tokens at 512 / 1K / 2K / 4K, $60/M image output tokens.
  price: {
    tokens: { input: 0.5, output: 60, textOutput: 3 },
    perImage: { '*': { '512': 0.045, '1K': 0.067, '2K': 0.101, '4K': 0.151 } },
  },
};

/**
 * The Gemini API's image models. `-preview` ids are entries of their own (shut down), never mapped
 * to the GA entry by prefix. Lifecycle facts, checked 2026-12-07:
 * - gemini-2.5-flash-image: shut down on the Gemini API 2026-10-02; replacement 3.1-flash-image or
 *   3.1-flash-lite-image ([G-dep]; okou-ai/vm0-skills#381).
 * - gemini-3.1-flash-image-preview, gemini-3-pro-image-preview: shut down 2026-06-25 ([G-dep]; [G-chg] 2026-05-28).
 * - gemini-3.1-flash-lite-image (Nano Banana 2 Lite): GA 2026-06-30, 1K only, 10 aspect ratios
 *   ([G-chg]; ai.google.dev/gemini-api/docs/models/gemini-3.1-flash-lite-image). Price not published
 *   in the sources: unknown.
 * - gemini-nano-banana-2.1: out ~2026-10-07, 14 aspect ratios at 1K/2K/4K, no 512 (tanstack/ai
 *   @tanstack/ai-gemini@0.36.0; cometapi-dev discussion #146). Google's price not seen: unknown.
 * - gemini-3.1-flash-image: one skill file says shut down 2026-10-29, Google's page says no date
 *   announced (conflicting): left current; the provider's list decides at plan time.
 */
const GEMINI: Record<string, Entry> = {
  'gemini-2.5-flash-image': {
    ...gemini25FlashImage,
    lifecycle: { status: 'deprecated', shutdown: '2026-10-02', replacement: 'gemini-3.1-flash-image (or gemini-3.1-flash-lite-image)' },
  },
  'gemini-3-pro-image': gemini3ProImage,
  'gemini-3-pro-image-preview': {
    ...gemini3ProImage,
    lifecycle: { status: 'deprecated', shutdown: '2026-06-25', replacement: 'gemini-3-pro-image' },
  },
  'gemini-3.1-flash-image': gemini31FlashImage,
  'gemini-3.1-flash-image-preview': {
    ...gemini31FlashImage,
    lifecycle: { status: 'deprecated', shutdown: '2026-06-25', replacement: 'gemini-3.1-flash-image' },
  },
  'gemini-3.1-flash-lite-image': { ...geminiImage, imageSizes: ['1K'], price: {} },
  'gemini-nano-banana-2.1': { ...geminiImage, aspectRatios: GEMINI_RATIOS_14, imageSizes: ['1K', '2K', '4K'], price: {} },
};

/**
 * Vertex AI serves the same ids with the same limits but retires them on its own dates: the
 * `-preview` ids were shut 2026-07-17 ([G-chg] 2026-05-28); gemini-2.5-flash-image has "retirement
 * date not announced" on Vertex (cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions).
 * Both checked 2026-12-07. Vertex prices are assumed equal to the Gemini API's (same per-token rates
 * on both pricing pages for these models; unverified for Dec 2026).
 */
const VERTEX: Record<string, Entry> = {
  ...GEMINI,
  'gemini-2.5-flash-image': gemini25FlashImage,
  'gemini-3-pro-image-preview': {
    ...gemini3ProImage,
    lifecycle: { status: 'deprecated', shutdown: '2026-07-17', replacement: 'gemini-3-pro-image' },
  },
  'gemini-3.1-flash-image-preview': {
    ...gemini31FlashImage,
    lifecycle: { status: 'deprecated', shutdown: '2026-07-17', replacement: 'gemini-3.1-flash-image' },
  },
  // Vertex also lists 9:21 for 3.1 Flash Image ([V-31]; checked 2026-12-07).
  'gemini-3.1-flash-image': { ...gemini31FlashImage, aspectRatios: [...GEMINI_RATIOS_14, '9:21'] },
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

// ---- fal.ai ------------------------------------------------------------------------------------

/**
 * fal.ai endpoints (queue API; ids and input fields from each model's fal.ai page or llms.txt):
 * - fal-ai/flux-pro/kontext: `image_url` (one image; "provide a base64-encoded data URL" accepted),
 *   prompt, seed, guidance_scale 1-20, num_images 1-4, output_format jpeg|png, aspect_ratio;
 *   "$0.04 per images" (fal.ai/models/fal-ai/flux-pro/kontext/llms.txt).
 * - fal-ai/flux-pro/kontext/text-to-image: the same without an image (fal.ai/docs model-api-reference
 *   flux-pro-kontext-text-to-image); price not seen: unknown.
 * - fal-ai/qwen-image-edit: `image_url`, prompt, num_inference_steps 2-50, seed, guidance_scale 0-20,
 *   num_images 1-4, output_format; "$0.03 per megapixels" (fal.ai/models/fal-ai/qwen-image-edit/
 *   llms.txt): per megapixel, not per image, so left unknown here. negative_prompt: unverified.
 * - fal-ai/nano-banana/edit: `image_urls` (a list, required), prompt, num_images, aspect_ratio (auto
 *   and ten ratios), output_format jpeg|png|webp (its schema as copied by ziframe.com; the queue
 *   answer in docs.kkiai.com). Price not seen on a fal page: unknown. No documented input limit;
 *   Gemini 2.5 Flash Image's own advice is "up to 3", so more are allowed (14, Gemini's cap) with a warning.
 *   It wraps Gemini 2.5 Flash Image, shut down on the Gemini API on 2026-10-02; whether fal still
 *   serves it is unverified (providers-audit-2026-12 §1 and "Unverified"), so it stays listed.
 * - fal-ai/nano-banana-2/edit (Nano Banana 2, Gemini 3.1 Flash Image): `image_urls`, aspect_ratio,
 *   output_format as nano-banana/edit; "$0.08 per image" at its default 1K (×0.75 at 512, ×1.5 at 2K,
 *   ×2 at 4K; fal.ai/models/fal-ai/nano-banana-2/llms.txt, providers-audit-2026-12 §1, checked
 *   2026-12-07). The `/edit` path follows fal's naming of nano-banana/edit: unverified live.
 * - google/nano-banana-2.1/edit: up to 14 reference images, 14 aspect ratios (1:4, 4:1, 1:8, 8:1
 *   besides Gemini's 10), priced per output token ($35.294 per 1M; fal.ai/learn/tools/nano-banana-api,
 *   providers-audit-2026-12 §0), which fal's queue answer does not report: cost unknown here.
 * Input size limits of fal's data URIs are not documented; 10 MB / 4096 px is a cautious guess.
 */
const FAL_RATIOS_KONTEXT = ['21:9', '16:9', '4:3', '3:2', '1:1', '2:3', '3:4', '9:16', '9:21'] as const;
const falKontext: Entry = {
  editCapable: true,
  maxInputImages: 1,
  inputLimits: { maxBytes: 10 * MB, maxSide: 4096 },
  mask: false,
  maxImagesPerCall: 4,
  params: ['seed', 'guidanceScale', 'outputFormat', 'aspectRatio'],
  aspectRatios: FAL_RATIOS_KONTEXT,
  price: { perImage: { '*': { '*': 0.04 } } },
};

const FAL: Record<string, Entry> = {
  'fal-ai/flux-pro/kontext': falKontext,
  'fal-ai/flux-pro/kontext/text-to-image': { ...falKontext, editCapable: false, maxInputImages: 0, price: {} },
  'fal-ai/qwen-image-edit': {
    ...falKontext,
    params: ['seed', 'guidanceScale', 'numInferenceSteps', 'negativePrompt', 'outputFormat'],
    aspectRatios: undefined,
    price: {},
  },
  'fal-ai/nano-banana/edit': {
    ...falKontext,
    maxInputImages: 14,
    recommendedMaxInputImages: 3,
    params: ['aspectRatio', 'outputFormat'],
    aspectRatios: ['auto', ...GEMINI_RATIOS],
    price: {},
  },
  'fal-ai/nano-banana-2/edit': {
    ...falKontext,
    maxInputImages: 14,
    params: ['aspectRatio', 'outputFormat'],
    aspectRatios: ['auto', ...GEMINI_RATIOS],
    // At fal's default resolution (1K): Atelier sends no resolution to fal yet.
    price: { perImage: { '*': { '*': 0.08 } } },
  },
  'google/nano-banana-2.1/edit': {
    ...falKontext,
    maxInputImages: 14,
    params: ['aspectRatio', 'outputFormat'],
    aspectRatios: ['auto', ...GEMINI_RATIOS, '1:4', '4:1', '1:8', '8:1'],
    price: {},
  },
};

// ---- Family patterns and defaults ---------------------------------------------------------------

interface Family {
  backend: Backend;
  name: string;
  test: RegExp;
  entry: (model: string) => Entry;
}

const FAMILIES: Family[] = [
  // Newer GPT image models not in the table yet: gpt-image-2's shape, price unknown.
  {
    backend: 'openai',
    name: 'gpt-image-*',
    test: /^(gpt-image|chatgpt-image)/,
    entry: () => ({ ...gptImage2, qualities: GPT_QUALITIES_2_5, price: {} }),
  },
  // OpenRouter's Google image models: Gemini's limits, cost from the response.
  {
    backend: 'openrouter',
    name: 'google/*',
    test: /^google\//,
    entry: (model) => {
      const gemini = lookup(GEMINI, model.slice('google/'.length));
      // OpenRouter keeps its own lifecycle (its list decides): the Gemini API's dates do not apply.
      const { lifecycle: _geminiLifecycle, ...base } = gemini ? gemini[1] : geminiImage;
      // OpenRouter's image_config takes 0.5K ... 4K.
      return {
        ...base,
        params: ['aspectRatio', 'imageSize'],
        imageSizes: ['0.5K', '1K', '2K', '4K'],
        inputLimits: { maxBytes: 7 * MB, maxSide: 4096 },
        outputModalities: ['image', 'text'],
        price: { fromUsage: true },
      };
    },
  },
  // OpenRouter's OpenAI image models answer with images alone and take OpenAI's image options in
  // image_config (openrouter.ai/docs/sdks/typescript/api-reference/models/imagegenerationservertoolopenrouter:
  // "Accepts all image_config params (aspect_ratio, quality, size, background, output_format,
  // output_compression, moderation...)"; unverified for chat completions).
  {
    backend: 'openrouter',
    name: 'openai/gpt-image*',
    test: /^openai\/(gpt-image|chatgpt-image)/,
    entry: () => ({
      ...DEFAULTS.openrouter,
      params: ['aspectRatio', 'imageSize', 'quality', 'background', 'outputFormat', 'outputCompression', 'moderation'],
      outputModalities: ['image'],
    }),
  },
  // OpenRouter's image-only models (Seedream, Flux, Riverflow, Recraft, Grok Imagine, ...) answer with
  // images alone: asked for ["image","text"] they answer 404 "No endpoints found that support the
  // requested output modalities: image, text" (HKUDS/DeepTutor#1348, BerriAI/litellm#34908). The
  // adapter asks /api/v1/models first; this name table is the fallback.
  {
    backend: 'openrouter',
    name: 'image-only',
    test: /^(black-forest-labs|sourceful|bytedance-seed|bytedance|recraft|x-ai\/grok-imagine|microsoft)\//,
    entry: () => ({ ...DEFAULTS.openrouter, maxInputImages: 8, outputModalities: ['image'] }),
  },
  { backend: 'modelscope', name: 'Qwen-Image-Edit*', test: /Image-Edit/i, entry: () => modelscopeEdit },
];

const DEFAULTS: Record<Backend, Entry> = {
  // Any OpenAI-compatible server: pass every parameter the user gave; the server decides.
  openai: {
    ...gptImage,
    params: 'any',
    sizes: undefined,
    qualities: undefined,
    transparentBackground: undefined,
    maxPromptChars: undefined,
    price: {},
  },
  gemini: { ...geminiImage, price: {} },
  openrouter: {
    ...geminiImage,
    maxInputImages: 16,
    maxImagesPerCall: 1,
    inputLimits: { maxBytes: 10 * MB, maxSide: 4096 },
    imageSizes: ['0.5K', '1K', '2K', '4K'],
    aspectRatios: undefined,
    outputModalities: ['image', 'text'],
    price: { fromUsage: true },
  },
  modelscope: { ...modelscopeEdit, price: { free: true } },
  // Unused: Azure deployments resolve through the OpenAI table (azureCapabilities).
  azure: { ...gptImage, params: 'any', price: {} },
  vertex: { ...geminiImage, price: {} },
  // Any other fal endpoint: one image per call's input, the common fields passed, price unknown.
  fal: { ...falKontext, params: 'any', aspectRatios: undefined, price: {} },
};

const TABLES: Record<Backend, Record<string, Entry>> = {
  openai: OPENAI,
  gemini: GEMINI,
  openrouter: {},
  modelscope: MODELSCOPE,
  azure: {},
  vertex: VERTEX,
  fal: FAL,
};

// ---- Azure OpenAI ------------------------------------------------------------------------------

/**
 * `ATELIER_AZURE_DEPLOYMENTS="mydeploy=gpt-image-2,other=gpt-image-1.5"`: which OpenAI model each
 * Azure deployment serves. Not a secret; the CLI (planning, estimates) and the worker (costs) read
 * the same variable, so a deployment gets its model's capabilities and prices everywhere.
 */
export function parseAzureDeployments(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (text ?? '').split(',')) {
    const [deployment, model] = pair.split('=').map((s) => s.trim());
    if (deployment && model) out[deployment] = model;
  }
  return out;
}

/** The model an Azure deployment serves: mapped, else the name itself (deployments are often named after their model). */
export function azureDeploymentModel(deployment: string, env: NodeJS.ProcessEnv = process.env): string {
  return parseAzureDeployments(env.ATELIER_AZURE_DEPLOYMENTS)[deployment] ?? deployment;
}

/**
 * An Azure deployment's capabilities: those of the OpenAI model it serves. Prices are assumed to
 * be OpenAI's (Azure's global standard rates matched them when last compared; unverified for Nov
 * 2026). The lifecycle is left out: Azure retires models on its own schedule, which this table
 * does not track, so OpenAI's shutdown dates must not refuse an Azure deployment.
 */
function azureCapabilities(deployment: string): ModelCapabilities {
  const model = azureDeploymentModel(deployment);
  const { lifecycle: _openAILifecycle, ...caps } = capabilities('openai', model);
  return { ...caps, backend: 'azure', entry: model === deployment ? caps.entry : `${deployment} = ${caps.entry}` };
}

/**
 * Exact id, else the longest id the model starts with followed by a dated version (`-2026-09-08`,
 * `-001`). A `-preview` (or `-exp`) id is another model with its own lifecycle, never its GA entry.
 */
function lookup(table: Record<string, Entry>, model: string): [string, Entry] | undefined {
  const exact = table[model];
  if (exact) return [model, exact];
  let best: [string, Entry] | undefined;
  for (const [id, entry] of Object.entries(table)) {
    if (!model.startsWith(`${id}-`) || /-(preview|exp)\b/.test(model.slice(id.length))) continue;
    if (!best || id.length > best[0].length) best = [id, entry];
  }
  return best;
}

/** What a model takes and costs. Unknown ids get the backend's permissive default (`known: false`). */
export function capabilities(backend: Backend, model: string): ModelCapabilities {
  if (backend === 'azure') return azureCapabilities(model);
  const caps = tableCapabilities(backend, model);
  // Vertex shares the Gemini entries but not the Gemini API's inline request limit.
  return backend === 'vertex' && caps.maxRequestBytes !== undefined ? { ...caps, maxRequestBytes: VERTEX_MAX_REQUEST_BYTES } : caps;
}

function tableCapabilities(backend: Backend, model: string): ModelCapabilities {
  const hit = lookup(TABLES[backend], model);
  if (hit) return { backend, entry: hit[0], known: true, ...hit[1] };
  const family = FAMILIES.find((f) => f.backend === backend && f.test.test(model));
  if (family) return { backend, entry: family.name, known: true, ...family.entry(model) };
  return { backend, entry: `${backend} default`, known: false, ...DEFAULTS[backend] };
}

/** Every model id of the table, with its backend (for `atelier models`). */
export function tableModels(backend?: Backend): { backend: Backend; model: string }[] {
  return (
    (Object.keys(TABLES) as Backend[])
      .filter((b) => !backend || b === backend)
      // Azure's "models" are the deployments ATELIER_AZURE_DEPLOYMENTS names.
      .flatMap((b) =>
        Object.keys(b === 'azure' ? parseAzureDeployments(process.env.ATELIER_AZURE_DEPLOYMENTS) : TABLES[b]).map((model) => ({
          backend: b,
          model,
        })),
      )
  );
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
 * not in openrouter.ts, so `atelier models` shows it without loading the adapter's SDK.
 */
export function modalitiesFor(
  declared: readonly string[] | undefined,
  fallback: readonly ('image' | 'text')[] | undefined,
): ('image' | 'text')[] {
  if (declared?.includes('image')) return declared.includes('text') ? ['image', 'text'] : ['image'];
  return [...(fallback ?? ['image', 'text'])];
}
