import type { ImageLimits } from '../../lib/images';
import type { Backend, ModelParams } from '../../lib/types';

// One interface for every model backend. An adapter turns a request into the provider's wire format,
// and every failure into a ClassifiedError (lib/errors.ts) so retry decisions are made the same way
// for all providers.

export interface ProviderImage {
  data: Buffer;
  mimeType: string;
}

export interface ImageRequest {
  model: string;
  prompt: string;
  params: ModelParams;
  /** Images wanted from this one call. */
  numImages: number;
  signal?: AbortSignal;
}

export interface EditRequest extends ImageRequest {
  /** Normalised PNG inputs, in dataset order. */
  images: ProviderImage[];
}

export interface ImageResult {
  images: ProviderImage[];
  requestId?: string;
  usage?: Record<string, number>;
}

export interface ImageEditProvider {
  readonly backend: Backend;
  /** Values that must never appear in anything recorded (keys). */
  readonly secrets: readonly string[];
  /** What one input image may be for this model; larger inputs are shrunk to fit. */
  inputLimits(model: string): ImageLimits;
  edit(request: EditRequest): Promise<ImageResult>;
  /** Text-to-image, for rows without input images. */
  generate(request: ImageRequest): Promise<ImageResult>;
}
