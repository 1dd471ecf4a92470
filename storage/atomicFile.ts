import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { PinnedDir } from './pinnedDir';

/** A temp file's name beside `name`: LocalStorage.list skips names of this shape. */
export function tempName(name: string): string {
  return `${name}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/**
 * Flags for a temp file that must be new: O_EXCL makes the kernel refuse any existing name, a
 * symlink included (a planted link is never followed), and O_NOFOLLOW says so once more.
 */
export const NEW_FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (constants.O_NOFOLLOW ?? 0);

/** Writes `data` to the new file `temp`, flushed to disk, then renames it over `path`. */
async function writeThenRename(temp: string, path: string, data: string | Uint8Array): Promise<void> {
  const handle = await open(temp, NEW_FILE_FLAGS, 0o666);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

/**
 * Writes a file so that readers (and a crash at any moment) see either the old file or the whole
 * new one, never a half-written one: data goes to a temp file in the same folder, is flushed to
 * disk, then renamed over the target (rename is atomic within one filesystem).
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeThenRename(tempName(path), path, data);
}

/**
 * writeFileAtomic inside a folder held open: the temp file and the rename both name the folder
 * by its descriptor, so neither can land anywhere else whatever is renamed meanwhile.
 */
export async function writeFileAtomicIn(dir: PinnedDir, name: string, data: string | Uint8Array): Promise<void> {
  await writeThenRename(dir.at(tempName(name)), dir.at(name), data);
}
