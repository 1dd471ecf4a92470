import { ClassifiedError } from '../lib/shared/errors';

// How storage problems are classed. A full disk or a refused permission will not fix itself on a
// retry a few seconds later, and retrying a row after the provider answered would pay for the
// answer again: those are StorageError, which pauses the run with the reason shown. A name the
// target refuses is the row's own problem (InputError). Anything else is retried.

const CAPACITY_OR_PERMISSION = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EFBIG']);
const BAD_NAME = new Set(['ENAMETOOLONG', 'EILSEQ', 'ENOTDIR', 'EISDIR', 'EINVAL']);

/**
 * The store itself failed, not one object or row: it did not answer or could not serve (a refused
 * or cut connection, 5xx, 503 SlowDown: kind `retryable`), or it refuses this whole location (the
 * bucket gone, credentials refused: kind `storageError`). A paid answer waits in memory for such a
 * store to come back (lib/run/runStore.ts afterPaid) instead of being dropped; a row whose retries
 * before any paid call run out on one is deferred and the run pauses (activities/editRow.ts), since
 * no row is at fault.
 */
export class StoreFault extends ClassifiedError {
  override name = 'StoreFault';
}

/** Turns a filesystem error into the class the retry policy acts on. */
export function storageFailure(err: unknown, where: string): ClassifiedError {
  if (err instanceof ClassifiedError) return err;
  const code = (err as NodeJS.ErrnoException)?.code ?? '';
  const message = `${where}: ${(err as Error)?.message ?? String(err)}`;
  if (CAPACITY_OR_PERMISSION.has(code)) return new ClassifiedError('storageError', message);
  if (BAD_NAME.has(code)) return new ClassifiedError('inputError', message);
  return new ClassifiedError('retryable', message);
}

/** Longest name of one path component on common Linux filesystems (ext4, xfs, btrfs), in bytes. */
const MAX_COMPONENT_BYTES = 255;
/** S3's limit on a whole key, in bytes. */
const MAX_S3_KEY_BYTES = 1024;
/** PATH_MAX on Linux, less room for the root. */
const MAX_LOCAL_KEY_BYTES = 3072;

/** Why a key can't be stored as named on this kind of storage, or undefined when it can. */
export function keyProblem(key: string, kind: 'local' | 's3'): string | undefined {
  if (key === '') return 'the name is empty';
  if (key.includes('\0')) return 'the name contains a NUL character';
  if (key.startsWith('/')) return 'the name is absolute';
  const parts = key.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) return 'the name has an empty, "." or ".." component';
  const long = parts.find((p) => Buffer.byteLength(p) > MAX_COMPONENT_BYTES);
  // versitygw and most S3 stores on a POSIX backend keep objects as files, so the same limit holds.
  if (long !== undefined)
    return `the name component "${long.slice(0, 40)}…" is ${Buffer.byteLength(long)} bytes; the limit is ${MAX_COMPONENT_BYTES}`;
  const limit = kind === 's3' ? MAX_S3_KEY_BYTES : MAX_LOCAL_KEY_BYTES;
  if (Buffer.byteLength(key) > limit) return `the name is ${Buffer.byteLength(key)} bytes; the limit is ${limit}`;
  return undefined;
}
