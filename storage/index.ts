import { LocalStorage } from './local';
import { parseS3Location, S3Storage } from './s3';
import { isS3Location, type Storage } from './storage';

export { isS3Location, type ListedObject, type ListOptions, type Storage, type StoredObjectInfo } from './storage';
export { keyProblem, storageFailure, StoreFault } from './errors';

const opened = new Map<string, Storage>();

/** The storage rooted at a location: `s3://bucket/prefix` or a local folder. One per location per process. */
export function openStorage(location: string): Storage {
  let storage = opened.get(location);
  if (!storage) {
    storage = isS3Location(location) ? new S3Storage(location) : new LocalStorage(location);
    opened.set(location, storage);
  }
  return storage;
}

/** One object given by its full location (`s3://bucket/dir/file.csv`): its parent's storage and its key. */
export function objectAt(location: string): { storage: Storage; key: string } {
  if (!isS3Location(location)) throw new Error(`objectAt takes s3:// locations, not ${location}`);
  const { bucket, prefix } = parseS3Location(location);
  const slash = prefix.lastIndexOf('/');
  const parent = slash < 0 ? `s3://${bucket}` : `s3://${bucket}/${prefix.slice(0, slash)}`;
  return { storage: openStorage(parent), key: prefix.slice(slash + 1) };
}

/**
 * Makes `openStorage(storage.location)` return this storage from now on: a wrapper over a backend
 * (bench and tests count the requests a run makes through one).
 */
export function adoptStorage(storage: Storage): void {
  opened.set(storage.location, storage);
}
