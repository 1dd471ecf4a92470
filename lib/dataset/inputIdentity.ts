import { objectAt } from '../../storage';
import type { InputIdentity } from '../run/records';

// What an S3 input image is right now: its ETag and size, as a listing of its folder shows them.
// A replaced object gets a new ETag, so a row whose digest holds it is redone when the bytes change
// under the same name (a local input stands for its bytes by size and modification time the same way).
// Each folder is listed once per planning (on S3 one request per 1,000 objects), not a HEAD per row.

export class S3InputListing {
  private readonly folders = new Map<string, Promise<Map<string, InputIdentity>>>();

  /** The object's ETag and size, or undefined when the listing has no such object. */
  async identity(location: string): Promise<InputIdentity | undefined> {
    const { storage, key } = objectAt(location);
    let folder = this.folders.get(storage.location);
    if (!folder) {
      folder = storage
        .listObjects('', { shallow: true })
        .then((objects) => new Map(objects.map((o) => [o.key, { etag: o.tag, size: o.size }])));
      // A failed listing is not kept: the next row asks again (and the failure reaches planning).
      folder.catch(() => this.folders.delete(storage.location));
      this.folders.set(storage.location, folder);
    }
    return (await folder).get(key);
  }
}
