import type { ImageLimits } from '../../../lib/images';
import { type Entry, type ProviderTable, MB } from '../table';

// The Gemini API's rows of the model table, each fact with its source (Vertex AI and OpenRouter's
// google/* models start from these rows: vertex/models.ts, openrouter/models.ts).

export const GEMINI_RATIOS = ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'] as const;
/** Inline images: 7 MB a file. */
const GEMINI_INPUT: ImageLimits = { maxBytes: 7 * MB, maxSide: 4096 };

/**
 * Inline requests on the Gemini API: 100 MB in all since 2026-01-08 (it was 20 MB: ai.google.dev
 * changelog 2026-01-08, blog.google "Increased file size limits"; providers-audit-2026-12 §1; not
 * yet confirmed for image models by a live call). Over it, the adapter moves the largest inputs to
 * the Files API.
 */
const GEMINI_MAX_REQUEST_BYTES = 100 * MB;
export const geminiImage: Entry = {
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

export const GEMINI_RATIOS_14 = [...GEMINI_RATIOS, '1:4', '4:1', '1:8', '8:1'] as const;

/** 2.5 Flash Image's shape: one size tier (about 1024 px, 1290 output tokens), "best with up to 3" inputs. */
export const gemini25FlashImage: Entry = {
  ...geminiImage,
  // "Works best with up to 3 images" is advice, not a limit (no hard limit found): a warning above 3.
  recommendedMaxInputImages: 3,
  params: ['aspectRatio'],
  imageSizes: undefined,
  price: { tokens: { input: 0.3, output: 30, textOutput: 2.5 }, perImage: { '*': { '*': 0.039 } } },
};
export const gemini3ProImage: Entry = {
  ...geminiImage,
  // 1120 output tokens at 1K/2K, 2000 at 4K, $120/M image output tokens.
  price: { tokens: { input: 2, output: 120, textOutput: 12 }, perImage: { '*': { '1K': 0.134, '2K': 0.134, '4K': 0.24 } } },
};
export const gemini31FlashImage: Entry = {
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
export const GEMINI: Record<string, Entry> = {
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

export const geminiTable: ProviderTable = { models: GEMINI, default: { ...geminiImage, price: {} } };
