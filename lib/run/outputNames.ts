import { extname, posix } from 'node:path';
import { RUN_META_DIR } from '../shared/constants';

// Where a row's outputs go, relative to the output dir. Default names are the row index padded to
// six digits (`000042.png`, or `000042_00.png`, `000042_01.png` … for several images). With
// `--output-name-column` the row names its own relative path. Any name that would leave the output
// dir (absolute, `..`), land in Atelier's own folder, or is empty fails that row: nothing is ever
// written outside --out.

export type OutputFormat = 'png' | 'jpeg' | 'webp';

export interface OutputTarget {
  /** POSIX path relative to the output dir. */
  path: string;
  format: OutputFormat;
}

const FORMAT_BY_EXTENSION: Record<string, OutputFormat> = { '.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg', '.webp': 'webp' };

function numbered(base: string, ext: string, count: number): string[] {
  if (count === 1) return [`${base}${ext}`];
  return Array.from({ length: count }, (_, k) => `${base}_${String(k).padStart(2, '0')}${ext}`);
}

export function defaultOutputs(index: number, count: number): OutputTarget[] {
  return numbered(String(index).padStart(6, '0'), '.png', count).map((path) => ({ path, format: 'png' }));
}

/** Outputs for a custom name, or the reason the name is unusable. */
export function namedOutputs(name: string, count: number): OutputTarget[] | { error: string } {
  if (name.trim() === '') return { error: 'the output name is empty' };
  const slashed = name.replace(/\\/g, '/');
  if (slashed.startsWith('/') || /^[A-Za-z]:/.test(slashed)) {
    return { error: `output name "${name}" is an absolute path; names must be relative to --out` };
  }
  const normalised = posix.normalize(slashed);
  if (normalised === '..' || normalised.startsWith('../')) {
    return { error: `output name "${name}" escapes --out` };
  }
  if (normalised === '.' || normalised.endsWith('/')) return { error: `output name "${name}" names a folder, not a file` };
  if (normalised === RUN_META_DIR || normalised.startsWith(`${RUN_META_DIR}/`)) {
    return { error: `output name "${name}" is inside ${RUN_META_DIR}/, which Atelier keeps for itself` };
  }
  const ext = extname(normalised);
  const format = FORMAT_BY_EXTENSION[ext.toLowerCase()];
  // Unknown or missing extensions get .png appended, so the name on disk tells the format.
  const [base, keptExt] = format ? [normalised.slice(0, -ext.length), ext] : [normalised, '.png'];
  return numbered(base, keptExt, count).map((path) => ({ path, format: format ?? 'png' }));
}
