import { randomBytes } from 'node:crypto';
import { copyFile, link, lstat, mkdir, open, readdir, realpath, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { writeFileAtomic } from './atomicFile';
import { ClassifiedError } from '../lib/shared/errors';
import { keyProblem, storageFailure } from './errors';
import type { Storage, StoredObjectInfo } from './storage';

/**
 * mkdir -p that reports the real reason: a recursive mkdir under a read-only mount answers ENOENT,
 * so on that answer the folders are made one by one to surface EROFS, EACCES or ENOSPC.
 */
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
 * A folder on a local (or mounted) disk. Every write resolves to a real path under the root: a key
 * whose way passes through a symlink is refused, so a link planted inside the output dir can never
 * redirect a row's output elsewhere. Whole-object writes go through a temp file and a rename;
 * create-only writes through a temp file and link(2), which fails if the name exists, so the object
 * appears complete or not at all and of two racing creators exactly one wins.
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

  async write(key: string, data: string | Uint8Array): Promise<void> {
    await this.checkWritable(key);
    const path = await this.pathOf(key);
    try {
      await ensureDir(dirname(path));
      await writeFileAtomic(path, data);
    } catch (err) {
      throw storageFailure(err, path);
    }
  }

  async writeFromFile(key: string, localPath: string): Promise<void> {
    await this.checkWritable(key);
    const path = await this.pathOf(key);
    const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await ensureDir(dirname(path));
      await copyFile(localPath, temp);
      const handle = await open(temp, 'r+');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, path);
    } catch (err) {
      await rm(temp, { force: true });
      throw storageFailure(err, path);
    }
  }

  async create(key: string, data: string | Uint8Array): Promise<boolean> {
    await this.checkWritable(key);
    const path = await this.pathOf(key);
    const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await ensureDir(dirname(path));
      const handle = await open(temp, 'wx');
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      try {
        await link(temp, path);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw err;
      }
    } catch (err) {
      throw storageFailure(err, path);
    } finally {
      await unlink(temp).catch(() => undefined);
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
        else if (entry.isFile() && !/\.tmp-\d+-[0-9a-f]{8}$/.test(entry.name)) found.push(name);
      }
    };
    await walk(base, '');
    return found;
  }

  async remove(key: string): Promise<void> {
    const path = this.readPath(key);
    await rm(path, { force: true }).catch((err) => {
      throw storageFailure(err, path);
    });
  }

  async removeAll(prefix: string): Promise<void> {
    const path = this.readPath(prefix.replace(/\/+$/, ''));
    if (!path.startsWith(this.location + sep)) throw new Error(`refusing to remove ${path}`);
    await rm(path, { recursive: true, force: true }).catch((err) => {
      throw storageFailure(err, path);
    });
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
