import { createHash } from 'node:crypto';
import { basename, extname } from 'node:path';

export interface RunIdentity {
  inputPath: string;
  outputDir: string;
  backend: string;
  model: string;
  params: Record<string, unknown>;
  instructionKey: string;
  imageKey?: string | undefined;
  /** Further settings that change the outputs (naming, encoding, images per row). */
  extra?: Record<string, unknown>;
}

/** Stable JSON: object keys sorted, undefined dropped, so equal settings hash equally. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * The run id is what makes "run the same command again" resume the same run: it is derived from
 * everything that decides what the outputs are (input, output dir, backend, model, parameters) and
 * from nothing that merely tunes execution (window, retries).
 */
export function deriveRunId(identity: RunIdentity): string {
  const digest = createHash('sha256').update(canonical(identity)).digest('hex').slice(0, 12);
  const stem = basename(identity.inputPath, extname(identity.inputPath))
    .replace(/[^A-Za-z0-9_-]+/g, '-')
    .slice(0, 40);
  return `atelier-${stem || 'run'}-${digest}`;
}

/** Run ids become workflow ids and folder names: keep them to a safe alphabet. */
export function validateRunId(runId: string): string | undefined {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/.test(runId)) {
    return `run id "${runId}" must be 1-200 characters of letters, digits, '.', '_' or '-', starting with a letter or digit`;
  }
  return undefined;
}

/**
 * The settings of a run that its id stands for (what deriveRunId hashes, as the workflow input
 * holds them): two commands naming one run id must agree on each, or they are two runs.
 */
export interface RunSettingsSource {
  inputPath: string;
  outputDir: string;
  backend: string;
  model: string;
  params?: Record<string, unknown>;
  instructionKey?: string;
  imageKey?: string | undefined;
  conversationKey?: string | undefined;
  outputNameColumn?: string | undefined;
  numImages?: number;
  encoding?: Record<string, unknown>;
  gpu?: { modelType: string; seed?: number; params?: Record<string, unknown> } | undefined;
  maskKey?: string | undefined;
  promptEnhance?: Record<string, unknown> | undefined;
  endpoint?: string | undefined;
}

/** Names as the CLI's options say them, for messages. */
const SETTING_NAMES: Array<[keyof RunSettingsSource, string]> = [
  ['inputPath', 'input'],
  ['outputDir', 'output dir'],
  ['backend', 'backend'],
  ['model', 'model'],
  ['params', 'model parameters'],
  ['endpoint', 'endpoint (--base-url)'],
  ['instructionKey', '--instruction-key'],
  ['imageKey', '--image-key'],
  ['conversationKey', '--conversation-key'],
  ['outputNameColumn', '--output-name-column'],
  ['numImages', '--num-images'],
  ['encoding', 'output quality (--jpeg-quality, --webp-quality)'],
  ['gpu', 'GPU settings (model type, seed, sampling)'],
  ['maskKey', '--mask-key'],
  ['promptEnhance', '--prompt-enhance'],
];

/** Each setting where `asked` differs from `recorded`, as `model: gpt-image-2 (run) → gpt-image-1 (asked)`. */
export function settingsDifferences(recorded: RunSettingsSource, asked: RunSettingsSource): string[] {
  const shown = (value: unknown): string => (value === undefined ? '(none)' : typeof value === 'string' ? value : canonical(value));
  const pick = (s: RunSettingsSource, key: keyof RunSettingsSource): unknown => {
    const value = s[key];
    // The GPU task queue follows the model; what changes outputs is the rest.
    if (key === 'gpu' && value) {
      const gpu = value as NonNullable<RunSettingsSource['gpu']>;
      return { modelType: gpu.modelType, seed: gpu.seed, params: gpu.params };
    }
    // No parameters and empty parameters are the same request.
    if (key === 'params' && value && Object.keys(value).length === 0) return undefined;
    return value;
  };
  const differences: string[] = [];
  for (const [key, name] of SETTING_NAMES) {
    const [was, now] = [pick(recorded, key), pick(asked, key)];
    if (canonical(was ?? null) !== canonical(now ?? null)) differences.push(`${name}: ${shown(was)} (the run) → ${shown(now)} (asked)`);
  }
  return differences;
}
