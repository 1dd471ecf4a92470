import { statSync } from 'node:fs';
import type { ListedObject, ListOptions, Storage, StoredObjectInfo } from '../storage';

// A Storage that counts the requests made through it and passes each to the real backend. `removeAll`
// is a listing and a delete, so it counts two; presigning and name checks make no request.

export class CountingStorage implements Storage {
  readonly counts: Record<string, number> = {};
  /** Bytes written (uploaded, on S3) since the last reset, by key. */
  readonly written: Record<string, number> = {};

  constructor(private readonly inner: Storage) {}

  get location(): string {
    return this.inner.location;
  }

  get kind(): 'local' | 's3' {
    return this.inner.kind;
  }

  /** Requests since the last reset. */
  total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }

  reset(): void {
    for (const key of Object.keys(this.counts)) delete this.counts[key];
    for (const key of Object.keys(this.written)) delete this.written[key];
  }

  /** Bytes written since the last reset under keys that `filter` accepts (all by default). */
  bytesWritten(filter: (key: string) => boolean = () => true): number {
    return Object.entries(this.written).reduce((sum, [key, n]) => sum + (filter(key) ? n : 0), 0);
  }

  private wrote(key: string, bytes: number): void {
    this.written[key] = (this.written[key] ?? 0) + bytes;
  }

  private count(op: string, n = 1): void {
    this.counts[op] = (this.counts[op] ?? 0) + n;
  }

  describe(key: string): string {
    return this.inner.describe(key);
  }
  read(key: string): Promise<Buffer | undefined> {
    this.count('read');
    return this.inner.read(key);
  }
  readRange(key: string, start: number, end: number): Promise<Buffer> {
    this.count('readRange');
    return this.inner.readRange(key, start, end);
  }
  readRangeIf(key: string, start: number, end: number, tag: string): Promise<Buffer | undefined> {
    this.count('readRange');
    return this.inner.readRangeIf(key, start, end, tag);
  }
  stat(key: string): Promise<StoredObjectInfo | undefined> {
    this.count('stat');
    return this.inner.stat(key);
  }
  write(key: string, data: string | Uint8Array): Promise<void> {
    this.count('write');
    this.wrote(key, Buffer.byteLength(data));
    return this.inner.write(key, data);
  }
  writeFromFile(key: string, localPath: string): Promise<void> {
    this.count('write');
    this.wrote(key, statSync(localPath).size);
    return this.inner.writeFromFile(key, localPath);
  }
  replaceFromFiles(files: ReadonlyArray<{ key: string; localPath: string }>): Promise<string[]> {
    this.count('write', files.length); // one PUT per table on S3 (plus, on a disk, a temp sweep)
    for (const { key, localPath } of files) this.wrote(key, statSync(localPath).size);
    return this.inner.replaceFromFiles(files);
  }
  create(key: string, data: string | Uint8Array): Promise<boolean> {
    this.count('create');
    this.wrote(key, Buffer.byteLength(data));
    return this.inner.create(key, data);
  }
  writeIf(key: string, data: string | Uint8Array, tag: string | null): Promise<string | undefined> {
    // One conditional PUT either way: a create-only one, or one that replaces a known version.
    this.count(tag === null ? 'create' : 'replace');
    this.wrote(key, Buffer.byteLength(data));
    return this.inner.writeIf(key, data, tag);
  }
  list(prefix: string): Promise<string[]> {
    this.count('list');
    return this.inner.list(prefix);
  }
  listObjects(prefix: string, options?: ListOptions): Promise<ListedObject[]> {
    this.count('list');
    return this.inner.listObjects(prefix, options);
  }
  readTagged(key: string): Promise<{ data: Buffer; tag: string } | undefined> {
    this.count('read');
    return this.inner.readTagged(key);
  }
  remove(key: string): Promise<void> {
    this.count('remove');
    return this.inner.remove(key);
  }
  removeAll(prefix: string): Promise<void> {
    this.count('removeAll', 2);
    return this.inner.removeAll(prefix);
  }
  checkWritable(key: string): Promise<void> {
    return this.inner.checkWritable(key);
  }
  readUrl(key: string, expiresInSeconds: number): Promise<string> {
    return this.inner.readUrl(key, expiresInSeconds);
  }
  createUrl(key: string, expiresInSeconds: number): Promise<string> {
    return this.inner.createUrl(key, expiresInSeconds);
  }
}
