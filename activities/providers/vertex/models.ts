import { type Entry, type ProviderTable, MB } from '../table';
import { GEMINI, GEMINI_RATIOS_14, gemini25FlashImage, gemini31FlashImage, gemini3ProImage, geminiImage } from '../gemini/models';

/**
 * Vertex AI: "Input size limit 500 MB", 7 MB per inline file (docs.cloud.google.com vertex-ai
 * gemini/3-1-flash-image, [V-31]; checked 2026-12-07). Vertex has no Files API: a row over it fails
 * before any call.
 */
const VERTEX_MAX_REQUEST_BYTES = 500 * MB;

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

export const vertexTable: ProviderTable = {
  models: VERTEX,
  default: { ...geminiImage, price: {} },
  // Vertex shares the Gemini rows but not the Gemini API's inline request limit.
  adjust: (caps) => (caps.maxRequestBytes !== undefined ? { ...caps, maxRequestBytes: VERTEX_MAX_REQUEST_BYTES } : caps),
};
