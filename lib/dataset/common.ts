import { dirname, isAbsolute, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IMAGE_COLUMN_CANDIDATES } from '../shared/constants';
import { DatasetError } from '../shared/errors';
import { confineImageRef } from './confine';

/** Where an input image is. */
export interface ImageRef {
  /**
   * `file`: a local path; `url`: http(s); `data`: an inline data: URI; `s3`: an s3:// object read
   * with the reading worker's credentials; `blob`: a key in the run's own storage (images embedded
   * in the dataset, stored content-addressed at planning).
   */
  kind: 'file' | 'url' | 'data' | 's3' | 'blob';
  /** Absolute path for files, the URL for urls and s3, the data: URI for inline images, the key for blobs. */
  source: string;
  /**
   * A file confined to the dataset's folder at planning: `source.slice(0, within)` is that folder.
   * Reading the file checks again that what it opens is still inside (lib/dataset/confine.ts), so a
   * file swapped for a link after planning is not followed out. A length, not the path: the plan
   * holds one per image.
   */
  within?: number;
}

/** One dataset row as a reader yields it, before output names are planned. */
export interface DatasetRow {
  position: number;
  index: number;
  /** Where the row came from, for messages: `data.csv line 5`, `shard-0001.parquet row 17`. */
  where: string;
  /** Instructions in order: one for a plain edit, several for a multi-turn row. */
  turns: string[];
  /** Input images; none for a text-to-image row. */
  images: ImageRef[];
  /** Edit mask for the first image (--mask-key). */
  mask?: ImageRef;
  /** The input record, JSON-safe, for the results tables. */
  record: Record<string, unknown>;
}

export interface DatasetReadOptions {
  instructionKey: string;
  imageKey?: string | undefined;
  conversationKey?: string | undefined;
  /** Stores an image embedded in the dataset (Parquet bytes) and says how rows refer to it. */
  storeBlob: (bytes: Uint8Array) => Promise<ImageRef>;
  /**
   * Where a local file being read really came from (an s3:// object downloaded for reading), so
   * relative image paths in it resolve next to the original. Identity when absent.
   */
  origin?: (file: string) => string;
  /** Column holding each row's edit mask (optional per row). */
  maskKey?: string | undefined;
  /** --allow-outside-paths: image cells may name files and s3:// objects outside the dataset's own place. */
  allowOutsidePaths?: boolean | undefined;
}

export interface DatasetHeader {
  columns: string[];
  /** Undefined when the format allows rows without images and none name an image column. */
  imageKey: string | undefined;
  instructionKey: string;
}

/** Splits an image cell: a JSON array, a comma-separated list, or one path/URL. */
export function parseImageCell(cell: string, where: string): string[] {
  const text = cell.trim();
  if (text === '') return [];
  if (text.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new DatasetError(`${where}: the cell looks like a JSON array but does not parse (${(err as Error).message})`);
    }
    if (!Array.isArray(parsed) || !parsed.every((v) => typeof v === 'string')) {
      throw new DatasetError(`${where}: a JSON array of image paths/URLs must hold only strings`);
    }
    return parsed.map((v) => v.trim()).filter((v) => v !== '');
  }
  // A data URI carries a comma of its own; it is always a single image.
  if (text.startsWith('data:')) return [text];
  return text
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

type RefOptions = Pick<DatasetReadOptions, 'origin' | 'allowOutsidePaths'>;

/**
 * Relative paths resolve against the dataset file's folder (a local folder, or the s3:// prefix the
 * dataset was read from); http(s) stays a URL; s3:// is read with the worker's own credentials.
 * What leaves the dataset's place is refused (lib/dataset/confine.ts), naming `where` and the flag
 * that allows it.
 */
export function toImageRef(value: string, datasetPath: string, options: RefOptions | undefined, where: string): ImageRef {
  const ref = resolveImageRef(value, datasetPath, options);
  if (options?.allowOutsidePaths) return ref;
  const base = options?.origin?.(datasetPath) ?? datasetPath;
  return confineImageRef(ref, value, datasetPath, base, where, options ?? {});
}

function resolveImageRef(value: string, datasetPath: string, options?: RefOptions): ImageRef {
  if (/^https?:\/\//i.test(value)) return { kind: 'url', source: value };
  if (/^data:/i.test(value)) return { kind: 'data', source: value };
  if (/^s3:\/\//i.test(value)) return { kind: 's3', source: value };
  if (/^file:\/\//i.test(value)) return { kind: 'file', source: fileURLToPath(value) };
  const base = options?.origin?.(datasetPath) ?? datasetPath;
  // A file read from a URL (a Hub repo at a commit): relative paths are files beside it there.
  if (/^https?:\/\//i.test(base) && !isAbsolute(value)) return { kind: 'url', source: new URL(value, base).href };
  if (base.startsWith('s3://') && !isAbsolute(value))
    return { kind: 's3', source: posix.join(posix.dirname(base), value).replace(/^s3:\/(?!\/)/, 's3://') };
  return { kind: 'file', source: isAbsolute(value) ? value : resolve(dirname(datasetPath), value) };
}

/** Picks the image column: the one named, else the first present candidate. */
export function pickImageKey(columns: string[], file: string, imageKey: string | undefined, extra: readonly string[] = []): string {
  if (imageKey) {
    if (!columns.includes(imageKey)) {
      throw new DatasetError(`${file}: no "${imageKey}" column (--image-key); columns are: ${columns.join(', ')}`);
    }
    return imageKey;
  }
  const candidates = [...extra, ...IMAGE_COLUMN_CANDIDATES];
  const found = candidates.find((c) => columns.includes(c));
  if (!found) {
    throw new DatasetError(
      `${file}: no image column; expected one of ${candidates.join(', ')} (or name one with --image-key); columns are: ${columns.join(', ')}`,
    );
  }
  return found;
}

/** Row indexes: from an `index` column when present (non-negative, unique), else the position. */
export class IndexTracker {
  private readonly seen = new Map<number, string>();

  take(raw: unknown, position: number, where: string): number {
    let index = position;
    if (raw !== undefined && raw !== null && raw !== '') {
      const text = typeof raw === 'string' ? raw.trim() : String(raw);
      if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
        throw new DatasetError(`${where}, column "index": "${String(raw)}" is not a non-negative integer`);
      }
      index = Number(text);
    }
    const first = this.seen.get(index);
    if (first !== undefined) {
      throw new DatasetError(`${where}, column "index": index ${index} repeats ${first}; output names would collide`);
    }
    this.seen.set(index, where);
    return index;
  }
}

/** The mask column must exist when one is named; an empty cell means "no mask" for that row. */
export function requireMaskColumn(columns: string[], file: string, maskKey: string | undefined): void {
  if (maskKey && !columns.includes(maskKey)) {
    throw new DatasetError(`${file}: no "${maskKey}" column (--mask-key); columns are: ${columns.join(', ')}`);
  }
}

/** A mask cell as one image reference, if the row has one. */
export function maskRef(cell: unknown, where: string, datasetPath: string, options?: RefOptions): ImageRef | undefined {
  if (cell === undefined || cell === null) return undefined;
  if (typeof cell !== 'string') throw new DatasetError(`${where}: a mask must be one image path or URL`);
  const [first, ...rest] = parseImageCell(cell, where);
  if (rest.length > 0) throw new DatasetError(`${where}: a row takes one mask, not ${rest.length + 1}`);
  return first === undefined ? undefined : toImageRef(first, datasetPath, options, where);
}
