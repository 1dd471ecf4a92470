import { type Entry, type Lifecycle, type ParamName, type ProviderTable, MB } from '../table';

// OpenAI's rows of the model table: what each image model takes and costs, each fact with its source.
// Prices and the lifecycle sources are described in activities/providers/models.ts.

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

export const gptImage: Entry = {
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
export const gptImage2: Entry = {
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
export const GPT_QUALITIES_2_5 = [...GPT_QUALITIES, 'xhigh', 'max'] as const;
const gptImage25: Entry = {
  ...gptImage2,
  qualities: GPT_QUALITIES_2_5,
  transparentBackground: true,
  price: { tokens: gptImage2.price.tokens! },
};
const gptImage26: Entry = { ...gptImage25, params: [...GPT_PARAMS_NO_FIDELITY, 'complexity'], complexities: ['low', 'medium', 'high'] };

/** A retired model: it no longer answers, so only its lifecycle matters. */
function retired(replacement: string, since?: string): Entry {
  return { ...gptImage, lifecycle: { status: 'retired', replacement, ...(since ? { since } : {}) } };
}

export const OPENAI: Record<string, Entry> = {
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

export const openaiTable: ProviderTable = {
  models: OPENAI,
  families: [
    // Newer GPT image models not in the table yet: gpt-image-2's shape, price unknown.
    { name: 'gpt-image-*', test: /^(gpt-image|chatgpt-image)/, entry: () => ({ ...gptImage2, qualities: GPT_QUALITIES_2_5, price: {} }) },
  ],
  // Any OpenAI-compatible server: pass every parameter the user gave; the server decides.
  default: {
    ...gptImage,
    params: 'any',
    sizes: undefined,
    qualities: undefined,
    transparentBackground: undefined,
    maxPromptChars: undefined,
    price: {},
  },
};
