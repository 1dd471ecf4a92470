import type { ImageLimits } from '../../lib/images';
import type { ApiBackend, ModelParams } from '../../lib/shared/types';

// The shape of a provider's model table (each provider keeps its rows in its folder, <name>/models.ts)
// and the lookup every table shares. Types and pure functions only: a table module imports this,
// never models.ts (which reads the tables through the registry), so nothing here loads in a cycle.

/** The cloud API backends (those served by a TypeScript adapter). */
export type Backend = ApiBackend;

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
  /** gpt-image-2.6: the `complexity` values it takes (`--complexity`; refused at planning for other models). */
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

/** A table row: what the table says of a model (the backend and the matched id are added on lookup). */
export type Entry = Omit<ModelCapabilities, 'backend' | 'entry' | 'known'>;

export const MB = 1024 * 1024;

/** Ids not in a table yet that match a pattern: `gpt-image-*`, OpenRouter's `google/*`. */
export interface Family {
  name: string;
  test: RegExp;
  entry: (model: string) => Entry;
}

/** What a provider's spec gives as its table (activities/providers/spec.ts). */
export interface ProviderTable {
  /** Model ids and their rows, each fact with its source next to it. */
  models: Record<string, Entry>;
  /** Patterns for ids the rows do not name, tried in order. */
  families?: readonly Family[];
  /** Any other id: the backend's permissive default (`known: false`). */
  default: Entry;
  /** What this backend changes in a row it shares with another (Vertex: its own inline request limit). */
  adjust?(caps: ModelCapabilities): ModelCapabilities;
  /** Resolves a model through another backend's table instead (Azure: a deployment serves an OpenAI model). */
  resolve?(model: string, capabilitiesOf: (backend: Backend, model: string) => ModelCapabilities): ModelCapabilities;
  /** The ids `atelier models` shows where they are not the rows' keys (Azure: the deployments). */
  ids?(): string[];
}

/**
 * Exact id, else the longest id the model starts with followed by a dated version (`-2026-09-08`,
 * `-001`). A `-preview` (or `-exp`) id is another model with its own lifecycle, never its GA entry.
 */
export function lookup(table: Record<string, Entry>, model: string): [string, Entry] | undefined {
  const exact = table[model];
  if (exact) return [model, exact];
  let best: [string, Entry] | undefined;
  for (const [id, entry] of Object.entries(table)) {
    if (!model.startsWith(`${id}-`) || /-(preview|exp)\b/.test(model.slice(id.length))) continue;
    if (!best || id.length > best[0].length) best = [id, entry];
  }
  return best;
}
