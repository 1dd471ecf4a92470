import { lstatSync, readlinkSync, realpathSync } from 'node:fs';
import { open, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, normalize, posix, relative, resolve, sep } from 'node:path';
import { ClassifiedError, DatasetError } from '../shared/errors';
import type { ImageRef } from './common';

// Image cells are read with the worker's own rights (its files, its S3 credentials), and what they
// name ends up in exports and the viewer. So a dataset names images inside its own place only: the
// dataset file's folder on a disk, its s3:// prefix, or its Hub repo at the pinned commit. `../`
// climbing out, absolute paths, file:// URLs, s3:// objects elsewhere and symlinks leading out are
// refused at planning unless the user passes --allow-outside-paths. http(s) URLs are the public web
// (downloaded with limits, no credentials) and stay allowed.

/** The flag that lifts the confinement; every refusal names it. */
export const ALLOW_OUTSIDE_FLAG = '--allow-outside-paths';

/** Real paths of folders already resolved during one read of a dataset (one realpath per folder, not per row). */
const realFolders = new WeakMap<object, Map<string, string>>();

/** Files already found inside during one read (a dataset often names one image in many rows). */
const insideFiles = new WeakMap<object, Set<string>>();

function checkedFiles(cacheKey: object): Set<string> {
  let set = insideFiles.get(cacheKey);
  if (!set) insideFiles.set(cacheKey, (set = new Set()));
  return set;
}

function realFolder(cacheKey: object, folder: string): string {
  let cache = realFolders.get(cacheKey);
  if (!cache) realFolders.set(cacheKey, (cache = new Map()));
  let real = cache.get(folder);
  if (real === undefined) {
    real = realExisting(folder);
    cache.set(folder, real);
  }
  return real;
}

/** The real path of `path`, or of its deepest existing ancestor joined with the rest (a missing file fails its row later). */
function realExisting(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    const parent = dirname(path);
    if (parent === path) return path;
    return resolve(realExisting(parent), relative(parent, path));
  }
}

/** Whether normalised absolute `path` is `root` or below it (string prefixes: this runs once per image cell). */
const inside = (root: string, path: string): boolean => path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);

function refuse(where: string, value: string, place: string): never {
  throw new DatasetError(
    `${where}: image ${JSON.stringify(value)} is outside the dataset's ${place}; images are read only from there ` +
      `(pass ${ALLOW_OUTSIDE_FLAG} to read images elsewhere, e.g. absolute paths of your own files)`,
  );
}

/** The Hub repo's root at its commit (`…/resolve/<commit>/`) for a file there, else the file's folder. */
function urlRoot(base: string): string {
  const url = new URL(base);
  const repo = /^(.*\/resolve\/[^/]+\/)/.exec(url.pathname);
  return `${url.origin}${repo ? repo[1] : url.pathname.replace(/[^/]*$/, '')}`;
}

/**
 * Refuses a reference that leaves the dataset's place. `datasetPath` is the local file being read,
 * `base` where it really came from (the same path, an s3:// object or a Hub URL), `cacheKey` one
 * object per read of the dataset.
 */
export function confineImageRef(
  ref: ImageRef,
  value: string,
  datasetPath: string,
  base: string,
  where: string,
  cacheKey: object,
): ImageRef {
  if (ref.kind === 'data' || ref.kind === 'blob') return ref;
  if (ref.kind === 'url') {
    if (!/^https?:\/\//i.test(base) || /^https?:\/\//i.test(value)) return ref;
    const root = urlRoot(base);
    if (!ref.source.startsWith(root)) refuse(where, value, `repo (${root})`);
    return ref;
  }
  if (ref.kind === 's3') {
    const root = base.startsWith('s3://') ? `${posix.dirname(base).replace(/^s3:\/(?!\/)/, 's3://')}/` : undefined;
    if (!root || !ref.source.startsWith(root) || ref.source.slice(root.length).split('/').includes('..'))
      refuse(where, value, root ? `prefix (${root})` : `folder (${dirname(datasetPath)}; an s3:// image is elsewhere)`);
    return ref;
  }
  // A local file: only beside a local dataset, and still there once links are followed.
  if (/^(s3|https?):\/\//i.test(base)) refuse(where, value, `location (${base.replace(/[^/]*$/, '')})`);
  const root = resolve(dirname(datasetPath));
  const source = normalize(ref.source);
  if (!inside(root, source)) refuse(where, value, `folder (${root})`);
  // Read at row time through readConfined, which checks again what it opens.
  const confined = ref.source === source ? { ...ref, within: root.length } : ref;
  const checked = checkedFiles(cacheKey);
  if (checked.has(source)) return confined;
  const realRoot = realFolder(cacheKey, root);
  let real = join(realFolder(cacheKey, dirname(source)), basename(source));
  try {
    // No exception for a missing file (the common case of a bench, and costly per row).
    if (lstatSync(real, { throwIfNoEntry: false })?.isSymbolicLink()) {
      // A dangling link is followed by hand: its target may appear before the row is read.
      real = (() => {
        try {
          return realpathSync(real);
        } catch {
          return realExisting(resolve(dirname(real), readlinkSync(real)));
        }
      })();
    }
  } catch {
    // Missing: the row fails as "not found" when it is read.
  }
  if (!inside(realRoot, real)) refuse(where, value, `folder (${root}; a symbolic link leads to ${real})`);
  checked.add(source);
  return confined;
}

/** The real path of the file an open descriptor holds: /proc's link on Linux, else the path's real path if it is that file. */
async function openedPath(fd: number, path: string): Promise<string | undefined> {
  try {
    return await readlink(`/proc/self/fd/${fd}`);
  } catch {
    // No /proc (macOS, Windows): the path's real path now, taken only if it is the file opened.
    const real = await realpath(path);
    const [a, b] = await Promise.all([stat(real), open(path, 'r').then(async (h) => h.stat().finally(() => h.close()))]);
    return a.ino === b.ino && a.dev === b.dev ? real : undefined;
  }
}

/**
 * Reads a file confined at planning (`ref.within`), checking the confinement again on what it opens:
 * the dataset may have changed since (a file swapped for a link leading out). The check is on the open
 * descriptor, so a swap between the check and the read cannot slip another file in. Refused as the
 * row's InputError, naming the path and where it leads.
 */
export async function readConfined(ref: { source: string; within: number }): Promise<Buffer> {
  const root = ref.source.slice(0, ref.within);
  const handle = await open(ref.source, 'r');
  try {
    const [real, realRoot] = await Promise.all([openedPath(handle.fd, ref.source), realpath(root)]);
    if (real === undefined || !inside(realRoot, real)) {
      throw new ClassifiedError(
        'inputError',
        `input image ${ref.source} is outside the dataset's folder (${root}) now: ${real === undefined ? 'it changed while it was opened' : `it leads to ${real}`}; ` +
          `images are read only from there (pass ${ALLOW_OUTSIDE_FLAG} to read images elsewhere)`,
      );
    }
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}
