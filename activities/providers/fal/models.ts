import { type Entry, type ProviderTable, MB } from '../table';
import { GEMINI_RATIOS } from '../gemini/models';

// fal.ai's rows of the model table, each endpoint with its source.

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

export const falTable: ProviderTable = {
  models: FAL,
  // Any other fal endpoint: one image per call's input, the common fields passed, price unknown.
  default: { ...falKontext, params: 'any', aspectRatios: undefined, price: {} },
};
