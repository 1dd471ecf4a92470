import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { UsageError } from '../shared/errors';

// An export is whole or absent: it is written into a hidden sibling of --out (same parent, so one
// rename publishes it) and renamed into place once complete. A previous export there is renamed
// aside first, the new one renamed in, the old one removed: a kill at any point leaves --out holding
// the previous export or nothing (never a part), and siblings left by a killed export are removed by
// the next one. A folder that holds anything but an earlier export is never touched.

/** The file that marks a folder as an Atelier export (and says what went into it). Hidden: `datasets` skips it. */
export const EXPORT_MARKER = '.atelier-export.json';

const stagingPrefix = (out: string) => `.${basename(out)}.atelier-`;

/** `pid` of the process that made a staging sibling, from its name (`.<out>.atelier-new-<pid>-<hex>`). */
function ownerPid(name: string): number | undefined {
  const match = /-(\d+)-[0-9a-f]{8}$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface StagedOut {
  /** Where the export is written. */
  dir: string;
  /** Writes the marker, then puts the folder in place of --out. */
  publish(marker: Record<string, unknown>): Promise<void>;
  /** Removes the staging folder (an export that failed). */
  discard(): Promise<void>;
}

/**
 * Checks --out (absent, an empty folder or an earlier export), removes what killed exports left
 * beside it, and answers a fresh staging folder next to it.
 */
export async function stageOut(out: string, sub = ''): Promise<StagedOut> {
  const info = await stat(out).catch(() => undefined);
  if (info && !info.isDirectory()) throw new UsageError(`--out ${out} is a file, not a folder`);
  if (info) {
    const names = await readdir(out);
    if (names.length > 0 && !names.includes(EXPORT_MARKER))
      throw new UsageError(
        `--out ${out} is not empty (and not an earlier export of atelier, which is replaced whole); give a new or empty folder`,
      );
  }
  const parent = dirname(out);
  await mkdir(parent, { recursive: true });
  const prefix = stagingPrefix(out);
  for (const name of await readdir(parent)) {
    const pid = ownerPid(name);
    if (name.startsWith(prefix) && pid !== undefined && pid !== process.pid && !alive(pid))
      await rm(join(parent, name), { recursive: true, force: true });
  }
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const dir = join(parent, `${prefix}new-${tag}`);
  await mkdir(join(dir, sub), { recursive: true });
  return {
    dir,
    discard: () => rm(dir, { recursive: true, force: true }),
    async publish(marker) {
      await writeFile(join(dir, EXPORT_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
      const aside = join(parent, `${prefix}old-${tag}`);
      // Still an export (or empty) now? Another command may have written into --out meanwhile.
      const before = await readdir(out).catch(() => undefined);
      if (before && before.length > 0 && !before.includes(EXPORT_MARKER))
        throw new UsageError(`--out ${out} was filled while exporting; the export was not put there`);
      if (before) await rename(out, aside);
      try {
        await rename(dir, out);
      } catch (err) {
        if (before) await rename(aside, out).catch(() => undefined);
        throw err;
      }
      await rm(aside, { recursive: true, force: true });
    },
  };
}
