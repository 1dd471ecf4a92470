import { constants, type BigIntStats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { copyFile, link, lstat, mkdir, open, readdir, realpath, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { NEW_FILE_FLAGS, tempName, writeFileAtomic, writeFileAtomicIn } from './atomicFile';
import { LOCK_SUFFIX, withKeyLock } from './keyLock';
import { PinnedDir, pinnedDirsSupported } from './pinnedDir';
import { ClassifiedError } from '../lib/shared/errors';
import { keyProblem, storageFailure } from './errors';
import type { ListedObject, ListOptions, Storage, StoredObjectInfo } from './storage';

/**
 * mkdir -p that reports the real reason: a recursive mkdir under a read-only mount answers ENOENT,
 * so on that answer the folders are made one by one to surface EROFS, EACCES or ENOSPC.
 */
/**
 * A file's version tag: every write replaces the file by a rename (a new inode), so inode, size and
 * modification time change with each version. The change time too: a write in place (an editor
 * saving in place, `cat >`, `rsync --inplace`) keeps the inode and may keep the size, and tools set
 * the mtime back (`touch -r`, `cp -p`, `rsync -t`), but no user can set the ctime. A rename or a
 * link count change (link, unlink) also sets the ctime, so a writer takes the tag it returns from
 * the file in place, by a descriptor it holds, after its last rename or unlink (tagAfter).
 */
function tagOf(info: BigIntStats): string {
  return `${info.ino}-${info.size}-${info.mtimeNs}-${info.ctimeNs}`;
}

/** The tag of the file a held descriptor reads, as a later stat of the unchanged file will see it. */
async function tagAfter(handle: FileHandle): Promise<string> {
  return tagOf(await handle.stat({ bigint: true }));
}

/**
 * Writes `data` to a new temp file (O_EXCL, never through a link) and syncs it, for a link or rename
 * into place; returns its descriptor, open, for the tag once it is in place (the caller closes it
 * and removes the temp; a failed write removes its own).
 */
async function writeSyncedTemp(temp: string, data: string | Uint8Array): Promise<FileHandle> {
  const handle = await open(temp, NEW_FILE_FLAGS, 0o666);
  try {
    await handle.writeFile(data);
    await handle.sync();
    return handle;
  } catch (err) {
    await handle.close();
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}

/** Temp files of writes in progress and the lock files of conditional writes: no objects, never listed. */
function hiddenName(name: string): boolean {
  return /\.tmp-\d+-[0-9a-f]{8}$/.test(name) || name.endsWith(LOCK_SUFFIX);
}

async function ensureDir(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const parts = path.split(sep);
    for (let i = 2; i <= parts.length; i++) {
      try {
        await mkdir(parts.slice(0, i).join(sep));
      } catch (inner) {
        if ((inner as NodeJS.ErrnoException).code !== 'EEXIST') throw inner;
      }
    }
  }
}

/**
 * Removes `name` inside a held folder, and if it is a folder everything below it, each folder
 * opened by descriptor without following links (so a link swapped in mid-way is itself removed,
 * never what it points to). A name that changes kind between two steps is looked at again.
 */
async function removeTreeIn(dir: PinnedDir, name: string, whole: string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      await unlink(dir.at(name));
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EISDIR' && code !== 'EPERM') throw err; // a folder (EPERM per POSIX, EISDIR on Linux)
    }
    let sub: PinnedDir;
    try {
      sub = await dir.child(name, false, whole);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      if (err instanceof ClassifiedError) continue; // became a link or a file: unlink it next time round
      throw err;
    }
    try {
      for (const entry of await readdir(sub.at('.'))) await removeTreeIn(sub, entry, whole);
    } finally {
      await sub.close();
    }
    try {
      await rmdir(dir.at(name));
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOTDIR') throw err;
    }
  }
  throw new ClassifiedError('retryable', `${whole}: ${name} kept changing while it was removed`);
}

/**
 * Removes the temp files (`<name>.tmp-<pid>-<hex>`) that a killed replacement of `path` left beside
 * it. Replacements of one key are not concurrent (the results refresh is one activity at a time), so
 * a temp found here belongs to a writer that is gone.
 */
async function removeStaleTemps(path: string): Promise<void> {
  const prefix = `${basename(path)}.tmp-`;
  let names: string[];
  try {
    names = await readdir(dirname(path));
  } catch {
    return;
  }
  const stale = names.filter((n) => n.startsWith(prefix) && /^\d+-[0-9a-f]{8}$/.test(n.slice(prefix.length)));
  await Promise.all(stale.map((n) => rm(join(dirname(path), n), { force: true })));
}

/**
 * A folder on a local (or mounted) disk. Every write resolves to a real path under the root: a key
 * whose way passes through a symlink is refused, so a link planted inside the output dir can never
 * redirect a row's output elsewhere. On Linux the check is not a separate step: each write walks
 * the key's folders by descriptor with O_NOFOLLOW and names its files through the held folder
 * (pinnedDir.ts), so a folder swapped for a link mid-write cannot redirect it either; elsewhere
 * the paths are checked, then written (a swap in between is followed). Whole-object writes go
 * through a temp file and a rename; create-only writes through a temp file and link(2), which
 * fails if the name exists, so the object appears complete or not at all and of two racing
 * creators exactly one wins.
 */
export class LocalStorage implements Storage {
  readonly kind = 'local' as const;
  readonly location: string;
  private realRoot: Promise<string> | undefined;

  constructor(root: string) {
    this.location = resolve(root);
  }

  describe(key: string): string {
    return join(this.location, ...key.split('/'));
  }

  /**
   * The root's real path, created if missing (the root itself may be a link the user chose; what
   * is below it may not). Only writes make it: reading a run that has no folder yet finds nothing.
   */
  private async root(): Promise<string> {
    this.realRoot ??= (async () => {
      await ensureDir(this.location);
      return realpath(this.location);
    })().catch((err) => {
      this.realRoot = undefined;
      throw storageFailure(err, this.location);
    });
    return this.realRoot;
  }

  /** Where a key is written: under the root's real path. */
  private async pathOf(key: string): Promise<string> {
    return join(await this.root(), ...this.checkedKey(key).split('/'));
  }

  /** Where a key is read: under the root as named (nothing is created to read). */
  private readPath(key: string): string {
    return join(this.location, ...this.checkedKey(key).split('/'));
  }

  private checkedKey(key: string): string {
    const problem = keyProblem(key, 'local');
    if (problem) throw new ClassifiedError('inputError', `${this.describe(key)}: ${problem}`);
    return key;
  }

  async checkWritable(key: string): Promise<void> {
    const root = await this.root();
    const full = await this.pathOf(key);
    // Every existing component on the way must be a real folder (the last one a file or nothing).
    const parts = key.split('/');
    let current = root;
    for (const [i, part] of parts.entries()) {
      current = join(current, part);
      let info;
      try {
        info = await lstat(current);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw storageFailure(err, current);
      }
      const last = i === parts.length - 1;
      if (info.isSymbolicLink()) {
        throw new ClassifiedError(
          'inputError',
          `${full}: ${current} is a symbolic link; Atelier writes only to real paths inside ${this.location}`,
        );
      }
      if (!last && !info.isDirectory()) {
        throw new ClassifiedError('inputError', `${full}: ${current} is a file, so nothing can be written below it`);
      }
      if (last && info.isDirectory()) throw new ClassifiedError('inputError', `${full} is a folder, not a file`);
    }
  }

  async read(key: string): Promise<Buffer | undefined> {
    const path = this.readPath(key);
    try {
      const handle = await open(path, 'r');
      try {
        return await handle.readFile();
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storageFailure(err, path);
    }
  }

  async readTagged(key: string): Promise<{ data: Buffer; tag: string } | undefined> {
    const path = this.readPath(key);
    try {
      const handle = await open(path, 'r');
      try {
        // The tag of the file this descriptor reads, whatever is renamed over the name meanwhile.
        const tag = tagOf(await handle.stat({ bigint: true }));
        return { data: await handle.readFile(), tag };
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storageFailure(err, path);
    }
  }

  async readRange(key: string, start: number, end: number): Promise<Buffer> {
    const path = this.readPath(key);
    try {
      const handle = await open(path, 'r');
      try {
        const chunk = Buffer.alloc(Math.max(0, end - start));
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, start);
        return chunk.subarray(0, bytesRead);
      } finally {
        await handle.close();
      }
    } catch (err) {
      throw storageFailure(err, path);
    }
  }

  async readRangeIf(key: string, start: number, end: number, tag: string): Promise<Buffer | undefined> {
    if (!tag) return undefined; // no version named: nothing to trust
    const path = this.readPath(key);
    try {
      const handle = await open(path, 'r');
      try {
        // The tag of the file this descriptor reads, whatever is renamed over the name meanwhile.
        if ((await tagAfter(handle)) !== tag) return undefined;
        const chunk = Buffer.alloc(Math.max(0, end - start));
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, start);
        // And again after the read: a write in place meanwhile changed the bytes under the same inode
        // (and its ctime), which the first look could not see.
        if ((await tagAfter(handle)) !== tag) return undefined;
        return chunk.subarray(0, bytesRead);
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storageFailure(err, path);
    }
  }

  async stat(key: string): Promise<StoredObjectInfo | undefined> {
    const path = this.readPath(key);
    try {
      const info = await stat(path);
      return info.isFile() ? { size: info.size } : undefined;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw storageFailure(err, path);
    }
  }

  /**
   * The folder that holds `key`, opened component by component with O_NOFOLLOW and held by
   * descriptor (see pinnedDir.ts), with the key's last name; undefined where the platform can't
   * pin folders (no /proc/self/fd), and the caller falls back to paths checked just before.
   */
  private async holdParent(key: string, create: boolean, whole: string): Promise<{ dir: PinnedDir; name: string } | undefined> {
    const root = await this.root();
    if (!(await pinnedDirsSupported(root))) return undefined;
    const parts = this.checkedKey(key).split('/');
    const name = parts.pop() as string;
    return { dir: await PinnedDir.walk(root, parts, create, whole), name };
  }

  /**
   * Runs `body` with a function naming files beside the key: through the held folder where it can
   * be pinned, else through the path (whose folders are made first). The held folder is closed after.
   */
  private async inParent<T>(key: string, path: string, body: (at: (name: string) => string, name: string) => Promise<T>): Promise<T> {
    const held = await this.holdParent(key, true, path);
    if (!held) {
      await this.checkWritable(key);
      await ensureDir(dirname(path));
      return body((name) => join(dirname(path), name), key.split('/').pop() as string);
    }
    try {
      return await body((name) => held.dir.at(name), held.name);
    } finally {
      await held.dir.close();
    }
  }

  async write(key: string, data: string | Uint8Array): Promise<void> {
    // The held walk refuses a link or a file on the way itself; without it, paths are checked first.
    const path = await this.pathOf(key);
    try {
      const held = await this.holdParent(key, true, path);
      if (!held) {
        await this.checkWritable(key);
        await ensureDir(dirname(path));
        await writeFileAtomic(path, data);
        return;
      }
      try {
        await writeFileAtomicIn(held.dir, held.name, data);
      } finally {
        await held.dir.close();
      }
    } catch (err) {
      throw storageFailure(err, path);
    }
  }

  async writeFromFile(key: string, localPath: string): Promise<void> {
    const path = await this.pathOf(key);
    try {
      await this.inParent(key, path, async (at, name) => {
        const temp = at(tempName(name));
        try {
          // COPYFILE_EXCL creates the temp with O_EXCL: an existing name, a link included, is refused.
          await copyFile(localPath, temp, constants.COPYFILE_EXCL);
          const handle = await open(temp, constants.O_RDWR | (constants.O_NOFOLLOW ?? 0));
          try {
            await handle.sync();
          } finally {
            await handle.close();
          }
          await rename(temp, at(name));
        } catch (err) {
          await rm(temp, { force: true });
          throw err;
        }
      });
    } catch (err) {
      throw storageFailure(err, path);
    }
  }

  async replaceFromFiles(files: ReadonlyArray<{ key: string; localPath: string }>): Promise<string[]> {
    // Each file is staged beside its key through its held folder (as writeFromFile does), and the
    // folders stay held until every rename is done: a folder swapped for a link between staging and
    // renaming redirects nothing.
    const staged: Array<{ temp: string; final: string; path: string; handle?: FileHandle }> = [];
    const held: PinnedDir[] = [];
    try {
      for (const { key, localPath } of files) {
        const path = await this.pathOf(key);
        await removeStaleTemps(path);
        const parent = await this.holdParent(key, true, path);
        let at: (name: string) => string;
        let name: string;
        if (parent) {
          held.push(parent.dir);
          at = (n) => parent.dir.at(n);
          name = parent.name;
        } else {
          await this.checkWritable(key);
          await ensureDir(dirname(path));
          at = (n) => join(dirname(path), n);
          name = basename(path);
        }
        const temp = at(tempName(name));
        const stage: (typeof staged)[number] = { temp, final: at(name), path };
        staged.push(stage);
        // COPYFILE_EXCL creates the temp with O_EXCL: an existing name, a link included, is refused.
        await copyFile(localPath, temp, constants.COPYFILE_EXCL);
        // Held open past the rename (which sets the ctime): the tag is the file's in place.
        stage.handle = await open(temp, constants.O_RDWR | (constants.O_NOFOLLOW ?? 0));
        await stage.handle.sync();
      }
      // All staged: the renames follow each other with no I/O between them.
      for (const { temp, final, path } of staged) {
        try {
          await rename(temp, final);
        } catch (err) {
          throw storageFailure(err, path);
        }
      }
      const tags: string[] = [];
      for (const { handle } of staged) tags.push(await tagAfter(handle!));
      return tags;
    } catch (err) {
      await Promise.all(staged.map(({ temp }) => rm(temp, { force: true })));
      throw err instanceof ClassifiedError ? err : storageFailure(err, staged.at(-1)?.path ?? this.location);
    } finally {
      await Promise.all(staged.map(({ handle }) => handle?.close()));
      await Promise.all(held.map((dir) => dir.close()));
    }
  }

  async create(key: string, data: string | Uint8Array): Promise<boolean> {
    const path = await this.pathOf(key);
    try {
      return await this.inParent(key, path, async (at, name) => {
        const temp = at(tempName(name));
        try {
          await (await writeSyncedTemp(temp, data)).close();
          try {
            await link(temp, at(name));
            return true;
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
            throw err;
          }
        } finally {
          await unlink(temp).catch(() => undefined);
        }
      });
    } catch (err) {
      throw storageFailure(err, path);
    }
  }

  async writeIf(key: string, data: string | Uint8Array, tag: string | null): Promise<string | undefined> {
    const path = await this.pathOf(key);
    try {
      return await this.inParent(key, path, async (at, name) => {
        const temp = at(tempName(name));
        const handle = await writeSyncedTemp(temp, data);
        let tempGone = false;
        try {
          if (tag === null) {
            // link(2) fails if the name exists: one syscall, atomic against every writer.
            try {
              await link(temp, at(name));
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
              throw err;
            }
            // The temp's name goes first: unlinking it sets the object's ctime (its link count).
            tempGone = await unlink(temp).then(
              () => true,
              () => false,
            );
            return await tagAfter(handle);
          }
          // Compare, then rename, under the key's lock: no other conditional writer of the key can
          // replace it in between (and a create can't, the object being there).
          return await withKeyLock(at(`${name}${LOCK_SUFFIX}`), path, async (stillHeld) => {
            const current = await stat(at(name), { bigint: true }).catch((err: NodeJS.ErrnoException) => {
              if (err.code === 'ENOENT') return undefined;
              throw err;
            });
            if (!current?.isFile() || tagOf(current) !== tag) return undefined;
            await stillHeld();
            await rename(temp, at(name));
            tempGone = true;
            return await tagAfter(handle); // the rename set the ctime
          });
        } finally {
          try {
            await handle.close();
          } finally {
            // Gone already after a create or a replace (a failed one leaves it here).
            if (!tempGone) await unlink(temp).catch(() => undefined);
          }
        }
      });
    } catch (err) {
      throw storageFailure(err, path);
    }
  }

  async list(prefix: string): Promise<string[]> {
    const folder = prefix.replace(/\/+$/, '');
    const base = folder ? this.readPath(folder) : this.location;
    const found: string[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return;
        throw storageFailure(err, dir);
      }
      for (const entry of entries) {
        const name = rel ? `${rel}/${entry.name}` : entry.name;
        if (entry.isDirectory()) await walk(join(dir, entry.name), name);
        else if (entry.isFile() && !hiddenName(entry.name)) found.push(name);
      }
    };
    await walk(base, '');
    return found;
  }

  async listObjects(prefix: string, options: ListOptions = {}): Promise<ListedObject[]> {
    const folder = prefix.replace(/\/+$/, '');
    const { after, through } = options;
    const names = (options.shallow ? await this.filesIn(folder) : await this.list(folder)).filter(
      (key) => (after === undefined || key > after) && (through === undefined || key <= through),
    );
    const base = folder ? this.readPath(folder) : this.location;
    const objects: ListedObject[] = [];
    for (const key of names) {
      const path = join(base, ...key.split('/'));
      try {
        const info = await stat(path, { bigint: true });
        if (info.isFile()) objects.push({ key, size: Number(info.size), tag: tagOf(info) });
      } catch (err) {
        // Removed since the folder was read: not there.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw storageFailure(err, path);
      }
    }
    return objects;
  }

  /** The files directly in a folder (none when there is no such folder). */
  private async filesIn(folder: string): Promise<string[]> {
    const dir = folder ? this.readPath(folder) : this.location;
    try {
      const entries = await readdir(dir, { withFileTypes: true });
      return entries.filter((e) => e.isFile() && !hiddenName(e.name)).map((e) => e.name);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw storageFailure(err, dir);
    }
  }

  /**
   * The held folder above `key` for a removal, or undefined when there is nothing to remove (no
   * root, no such folder) or folders can't be pinned here (`fallback` then). Nothing is created.
   */
  private async removing(
    key: string,
    path: string,
    fallback: () => Promise<void>,
    body: (dir: PinnedDir, name: string) => Promise<void>,
  ): Promise<void> {
    try {
      await stat(this.location);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw storageFailure(err, this.location);
    }
    try {
      let held;
      try {
        held = await this.holdParent(key, false, path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      if (!held) return await fallback();
      try {
        await body(held.dir, held.name);
      } finally {
        await held.dir.close();
      }
    } catch (err) {
      throw storageFailure(err, path);
    }
  }

  async remove(key: string): Promise<void> {
    const path = this.readPath(key);
    await this.removing(
      key,
      path,
      () => rm(path, { force: true }),
      // unlink never follows the last name: a link there is removed, not what it points to.
      (dir, name) =>
        unlink(dir.at(name)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        }),
    );
  }

  async removeAll(prefix: string): Promise<void> {
    const key = prefix.replace(/\/+$/, '');
    const path = this.readPath(key);
    if (!path.startsWith(this.location + sep)) throw new Error(`refusing to remove ${path}`);
    await this.removing(
      key,
      path,
      () => rm(path, { recursive: true, force: true }),
      (dir, name) => removeTreeIn(dir, name, path),
    );
  }

  async readUrl(key: string): Promise<string> {
    return this.pathOf(key);
  }

  async createUrl(key: string): Promise<string> {
    await this.checkWritable(key);
    const path = await this.pathOf(key);
    await ensureDir(dirname(path)).catch((err) => {
      throw storageFailure(err, path);
    });
    return path;
  }
}
