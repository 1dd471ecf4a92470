import { constants } from 'node:fs';
import { lstat, mkdir, open, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ClassifiedError } from '../lib/shared/errors';

// Node has no openat(2). On Linux, /proc/self/fd/N is a "magic link": the kernel resolves it to the
// very folder that descriptor N holds, not to the path it was opened by, so `/proc/self/fd/N/name`
// behaves as openat(N, "name"). Holding each folder of a key open (each opened with O_NOFOLLOW
// relative to the one above) and naming files only through those descriptors means a folder
// renamed away and replaced by a symlink after it was opened cannot redirect the write.

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

let supported: Promise<boolean> | undefined;

/**
 * Whether /proc/self/fd reaches the folder a descriptor holds (Linux with /proc mounted). Checked
 * once per process on a real folder: the magic link must lead to the same inode the handle holds.
 */
export function pinnedDirsSupported(probeDir: string): Promise<boolean> {
  supported ??= (async () => {
    if (process.platform !== 'linux' || constants.O_NOFOLLOW === undefined || constants.O_DIRECTORY === undefined) return false;
    let handle: FileHandle | undefined;
    try {
      handle = await open(probeDir, DIR_FLAGS);
      const [held, viaProc] = await Promise.all([handle.stat(), stat(`/proc/self/fd/${handle.fd}`)]);
      return held.ino === viaProc.ino && held.dev === viaProc.dev;
    } catch {
      return false;
    } finally {
      await handle?.close();
    }
  })();
  return supported;
}

/** A folder held open by descriptor: names under it resolve in that folder, wherever it is now. */
export class PinnedDir {
  private constructor(
    private readonly handle: FileHandle,
    /** The folder's path as the user knows it, for messages. */
    readonly shownAs: string,
  ) {}

  /** A path naming `name` inside this very folder (openat-style); `name` is one component. */
  at(name: string): string {
    return `/proc/self/fd/${this.handle.fd}/${name}`;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }

  /** Opens `root` (a real path: the caller resolved it) and holds it. */
  static async openRoot(root: string): Promise<PinnedDir> {
    return new PinnedDir(await open(root, DIR_FLAGS), root);
  }

  /**
   * Opens the folder `name` inside this one without following a link, creating it when asked. A
   * link or a file in its place is the row's InputError, named as `whole` (the key's full path).
   */
  async child(name: string, create: boolean, whole: string): Promise<PinnedDir> {
    const shown = join(this.shownAs, name);
    try {
      try {
        return new PinnedDir(await open(this.at(name), DIR_FLAGS), shown);
      } catch (err) {
        // Made only when missing: most writes go to folders that exist, one syscall each.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !create) throw err;
        await mkdir(this.at(name)).catch((inner: NodeJS.ErrnoException) => {
          if (inner.code !== 'EEXIST') throw inner;
        });
        return new PinnedDir(await open(this.at(name), DIR_FLAGS), shown);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Linux answers ENOTDIR for a link opened with O_DIRECTORY|O_NOFOLLOW, ELOOP on some kernels.
      if (code !== 'ENOTDIR' && code !== 'ELOOP') throw err;
      const info = await lstat(this.at(name)).catch(() => undefined);
      if (info?.isSymbolicLink() || code === 'ELOOP') {
        throw new ClassifiedError(
          'inputError',
          `${whole}: ${shown} is a symbolic link; Atelier writes only to real paths inside its output dir`,
        );
      }
      throw new ClassifiedError('inputError', `${whole}: ${shown} is a file, so nothing can be written below it`);
    }
  }

  /** Opens the folders `parts` below `root` one by one, each relative to the last; closes all but the last. */
  static async walk(root: string, parts: string[], create: boolean, whole: string): Promise<PinnedDir> {
    let dir = await PinnedDir.openRoot(root);
    for (const part of parts) {
      try {
        const next = await dir.child(part, create, whole);
        await dir.close();
        dir = next;
      } catch (err) {
        await dir.close();
        throw err;
      }
    }
    return dir;
  }
}
