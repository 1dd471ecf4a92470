import { type Entry, type ProviderTable, MB } from '../table';

// ModelScope's rows of the model table (free daily quota).

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

export const modelscopeTable: ProviderTable = {
  models: MODELSCOPE,
  families: [{ name: 'Qwen-Image-Edit*', test: /Image-Edit/i, entry: () => modelscopeEdit }],
  default: { ...modelscopeEdit, price: { free: true } },
};
