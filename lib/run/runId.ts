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
