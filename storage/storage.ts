// The data plane's one interface. A run's files (plan, ledger, stored answers, blobs, results and
// output images) live under one root: a folder on a local disk or a prefix in an S3-compatible
// bucket. Keys are POSIX paths relative to that root; every backend confines its keys to the root.

/** A location string is either a local path or `s3://bucket/prefix`. */
export function isS3Location(location: string): boolean {
  return location.startsWith('s3://');
}

export interface StoredObjectInfo {
  size: number;
}

/**
 * An object as a listing gives it: its key (relative to the listed folder), size and version tag.
 * The tag changes whenever the object is replaced (the ETag on S3; inode, size and modification time
 * on a disk), and `readTagged` returns the same tag for the same version: a reader that kept an
 * object with its tag knows from a listing alone whether it still holds.
 */
/** Which objects a listing returns. */
export interface ListOptions {
  /** Only the objects directly in the folder (not below its subfolders). */
  shallow?: boolean;
  /** Only keys after this one (relative to the folder, in byte order): where an S3 listing starts. */
  after?: string;
  /** Only keys up to this one, inclusive: an S3 listing stops there instead of running to the end. */
  through?: string;
}

export interface ListedObject {
  key: string;
  size: number;
  tag: string;
}

export interface Storage {
  /** The root as the user wrote it (an absolute path or `s3://bucket/prefix`), for messages. */
  readonly location: string;
  /** `local` or `s3`. */
  readonly kind: 'local' | 's3';
  /** Where a key lives, for messages (a path, or an s3:// URL). */
  describe(key: string): string;
  /** The whole object, or undefined when there is none. */
  read(key: string): Promise<Buffer | undefined>;
  /** Bytes [start, end) of an object (used to read one row of the plan without the rest). */
  readRange(key: string, start: number, end: number): Promise<Buffer>;
  /**
   * Bytes [start, end) of the object's version `tag` names (a tag from `replaceFromFiles`,
   * `listObjects` or `readTagged`), or undefined when the object is another version or gone, or
   * when `tag` (or, on S3, the answer's ETag) is empty: `If-Match` on S3; on a disk the tag of the
   * file the descriptor reads, before and after the read. An empty range is not asked for.
   */
  readRangeIf(key: string, start: number, end: number, tag: string): Promise<Buffer | undefined>;
  /** Size, or undefined when there is no such object. */
  stat(key: string): Promise<StoredObjectInfo | undefined>;
  /** Replaces an object as a whole: readers see the old bytes or the new ones, never a part. */
  write(key: string, data: string | Uint8Array): Promise<void>;
  /** Replaces an object with a local file's bytes, streamed (plans and results can be large). */
  writeFromFile(key: string, localPath: string): Promise<void>;
  /**
   * Replaces several objects with local files' bytes as one set, as far as the backend allows:
   * every file is staged first, then the objects are replaced in the order given, back to back, so
   * a reader that sees the last one of a call also sees the earlier ones of that call (or of a later
   * one). On a disk, temp files that an earlier, killed replacement of these keys left are removed.
   * Returns each object's tag as written (in the order given): the version this call made, even if
   * another writer replaces it right after.
   */
  replaceFromFiles(files: ReadonlyArray<{ key: string; localPath: string }>): Promise<string[]>;
  /**
   * Creates an object only if there is none (O_EXCL on a disk, `If-None-Match: *` on S3).
   * Returns false, writing nothing, when the key already exists: of two racing writers exactly one
   * gets true.
   */
  create(key: string, data: string | Uint8Array): Promise<boolean>;
  /**
   * One conditional write: replaces the object only while it is the version `tag` names (a tag
   * from `readTagged`, `listObjects` or an earlier `writeIf`), or with `tag` null creates it only
   * if there is none. `If-Match` / `If-None-Match: *` on S3; on a disk link(2) for a create and,
   * for a replace, the compare and the rename under the key's lock file (storage/keyLock.ts).
   * Returns the tag of the version written, or undefined, writing nothing, when the object is
   * another version, is gone, or (a create) exists. Only conditional writers are ordered against
   * each other: a plain `write` of the same key is not held back.
   */
  writeIf(key: string, data: string | Uint8Array, tag: string | null): Promise<string | undefined>;
  /** Keys under a folder-like prefix (`ledger/`), relative to that prefix, recursively. */
  list(prefix: string): Promise<string[]>;
  /**
   * Objects under a folder-like prefix with their size and tag, recursively, or with `shallow`
   * only those directly in it (not below its subfolders): on S3 a request per 1,000 objects, and
   * with `after` / `through` only for the keys in that range (a disk still reads the whole folder).
   */
  listObjects(prefix: string, options?: ListOptions): Promise<ListedObject[]>;
  /** The whole object and its tag (as `listObjects` gives it), or undefined when there is none. */
  readTagged(key: string): Promise<{ data: Buffer; tag: string } | undefined>;
  remove(key: string): Promise<void>;
  /** Removes every key under a folder-like prefix. */
  removeAll(prefix: string): Promise<void>;
  /**
   * Throws a ClassifiedError (InputError) when a key cannot be written as named: it would leave the
   * root (a symlink on the way, on a local disk) or the backend refuses the name. No I/O besides
   * reading what already exists.
   */
  checkWritable(key: string): Promise<void>;
  /**
   * How a process without this storage's credentials reads a key: a local absolute path, or a
   * presigned GET URL.
   */
  readUrl(key: string, expiresInSeconds: number): Promise<string>;
  /**
   * How such a process writes a key once: a local absolute path, or a presigned PUT URL that only
   * creates (If-None-Match: *), so its holder can never overwrite a committed object.
   */
  createUrl(key: string, expiresInSeconds: number): Promise<string>;
}
