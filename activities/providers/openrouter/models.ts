import { type Entry, type ProviderTable, MB, lookup } from '../table';
import { GEMINI, geminiImage } from '../gemini/models';

// OpenRouter's rows of the model table: no fixed ids (its list decides at planning), families by
// vendor prefix, and the cost of each call from its usage.

const openrouterDefault: Entry = {
  ...geminiImage,
  maxInputImages: 16,
  maxImagesPerCall: 1,
  inputLimits: { maxBytes: 10 * MB, maxSide: 4096 },
  imageSizes: ['0.5K', '1K', '2K', '4K'],
  aspectRatios: undefined,
  outputModalities: ['image', 'text'],
  price: { fromUsage: true },
};

export const openrouterTable: ProviderTable = {
  models: {},
  families: [
    // OpenRouter's Google image models: Gemini's limits, cost from the response.
    {
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
      name: 'openai/gpt-image*',
      test: /^openai\/(gpt-image|chatgpt-image)/,
      entry: () => ({
        ...openrouterDefault,
        params: ['aspectRatio', 'imageSize', 'quality', 'background', 'outputFormat', 'outputCompression', 'moderation'],
        outputModalities: ['image'],
      }),
    },
    // OpenRouter's image-only models (Seedream, Flux, Riverflow, Recraft, Grok Imagine, ...) answer with
    // images alone: asked for ["image","text"] they answer 404 "No endpoints found that support the
    // requested output modalities: image, text" (HKUDS/DeepTutor#1348, BerriAI/litellm#34908). The
    // adapter asks /api/v1/models first; this name table is the fallback.
    {
      name: 'image-only',
      test: /^(black-forest-labs|sourceful|bytedance-seed|bytedance|recraft|x-ai\/grok-imagine|microsoft)\//,
      entry: () => ({ ...openrouterDefault, maxInputImages: 8, outputModalities: ['image'] }),
    },
  ],
  default: openrouterDefault,
};
