import type { Backend, ModelParams } from '../../lib/types';

// One interface for every model backend. An adapter turns an edit request into the provider's wire
// format, and every failure into a ClassifiedError (lib/errors.ts) so retry decisions are made the
// same way for all providers.

export interface ProviderImage {
  data: Buffer;
  mimeType: string;
}

export interface EditRequest {
  model: string;
  prompt: string;
  /** Normalised PNG inputs, in dataset order. */
  images: ProviderImage[];
  params: ModelParams;
  signal?: AbortSignal;
}

export interface EditResult {
  images: ProviderImage[];
  requestId?: string;
  usage?: Record<string, number>;
}

export interface ImageEditProvider {
  readonly backend: Backend;
  /** Values that must never appear in anything recorded (keys). */
  readonly secrets: readonly string[];
  edit(request: EditRequest): Promise<EditResult>;
}
