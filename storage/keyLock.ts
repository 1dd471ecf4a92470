import { randomBytes } from 'node:crypto';
import { link, open, readFile, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClassifiedError } from '../lib/shared/errors';
import { NEW_FILE_FLAGS, tempName } from './atomicFile';

// A lock file beside one key of a local disk, for a conditional replace (LocalStorage.writeIf).
// POSIX has no compare-and-swap of a file: rename(2) replaces whatever is there, and link(2) and
// O_EXCL create only where nothing is. So the compare and the rename run while the writer holds
// `<name>.cas-lock`, which link(2) creates for exactly one writer at a time (also over NFS, where
// link is atomic on the server); every conditional writer of the key takes it, so none can slip a
// version in between another's compare and its rename.
//
// A lock whose holder died (killed inside the few milliseconds it is held) is broken: at once when
// the holder ran on this host and its process is gone, else once this process has seen the very
// same lock for LOCK_STALE_MS (another host's process cannot be asked, and its clock is not ours to
// compare with). A holder merely frozen that long (SIGSTOP, a suspended VM) on another host could
// then rename after a newer version: the one case this lock cannot rule out, as no file lock can
// without the kernel's help (a holder checks the lock is still its own right before its rename,
// which narrows it to that check's instant); a live holder on this host keeps its lock.

/** The suffix of lock files: listings leave them out, like temp files. */
export const LOCK_SUFFIX = '.cas-lock';

/** A lock older than this whose holder can't be asked (another host) is taken as left by a dead one. */
const LOCK_STALE_MS = 2 * 60_000;
/** How long a writer waits for a lock before giving up (retryable: the caller tries again later). */
const LOCK_WAIT_MS = 15_000;

interface LockOwner {
  host: string;
  pid: number;
  nonce: string;
  /** When it was taken, ms since the epoch (the holder's clock). */
  at: number;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: a process of another user has that id, alive.
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** Locks held by other hosts' processes as this process first saw them: path -> bytes, since (our clock). */
const firstSeen = new Map<string, { seen: Buffer; since: number }>();

function stale(path: string, seen: Buffer): boolean {
  let owner: Partial<LockOwner>;
  try {
    owner = JSON.parse(seen.toString('utf8')) as Partial<LockOwner>;
  } catch {
    // A lock is linked from a complete temp file, never seen half-written: this is no lock of ours.
    return true;
  }
  if (owner.host === hostname() && typeof owner.pid === 'number') return !alive(owner.pid);
  const known = firstSeen.get(path);
  if (known?.seen.equals(seen)) return Date.now() - known.since > LOCK_STALE_MS;
  // Bounded: a process waits on few locks, and each entry is dropped when its lock is taken.
  if (firstSeen.size > 1000) firstSeen.clear();
  firstSeen.set(path, { seen, since: Date.now() });
  return false;
}

/**
 * Breaks a lock judged stale from the bytes `seen`: it is renamed aside (only one breaker can), and
 * removed if it is still what was judged; a lock taken anew in between is put back.
 */
async function breakLock(path: string, seen: Buffer): Promise<void> {
  const aside = tempName(path);
  try {
    await rename(path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const moved = await readFile(aside).catch(() => undefined);
  if (moved && !moved.equals(seen)) await link(aside, path).catch(() => undefined);
  await unlink(aside).catch(() => undefined);
}

/**
 * Runs `body` holding the lock file `path` (a path the caller confined, e.g. through a held folder),
 * then removes it. `what` names the key for the message when the lock stays taken. `body` calls
 * `stillHeld()` right before its rename: it throws (retryable) when the lock was broken meanwhile.
 */
export async function withKeyLock<T>(path: string, what: string, body: (stillHeld: () => Promise<void>) => Promise<T>): Promise<T> {
  const owner: LockOwner = { host: hostname(), pid: process.pid, nonce: randomBytes(8).toString('hex'), at: Date.now() };
  const mine = Buffer.from(JSON.stringify(owner));
  // The lock appears whole: written to a temp file first, then linked to its name.
  const temp = tempName(path);
  const handle = await open(temp, NEW_FILE_FLAGS, 0o666);
  try {
    await handle.writeFile(mine);
  } finally {
    await handle.close();
  }
  try {
    const started = Date.now();
    for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
      try {
        await link(temp, path);
        firstSeen.delete(path);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const seen = await readFile(path).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      });
      if (seen === undefined) continue; // released meanwhile
      if (stale(path, seen)) {
        await breakLock(path, seen);
        continue;
      }
      if (Date.now() - started > LOCK_WAIT_MS)
        throw new ClassifiedError(
          'retryable',
          `${what} is being written by another process (its lock ${path} was held for ${LOCK_WAIT_MS / 1000} s)`,
        );
      await sleep(wait);
    }
  } finally {
    await unlink(temp).catch(() => undefined);
  }
  const stillHeld = async (): Promise<void> => {
    const held = await readFile(path).catch(() => undefined);
    if (!held?.equals(mine))
      throw new ClassifiedError('retryable', `${what}: the lock ${path} was taken from this writer as stale; try again`);
  };
  try {
    return await body(stillHeld);
  } finally {
    // Removed only while it is still this writer's (a lock broken as stale and taken anew is not).
    const held = await readFile(path).catch(() => undefined);
    if (held?.equals(mine)) await unlink(path).catch(() => undefined);
  }
}
