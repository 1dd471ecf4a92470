import type * as ClientS3 from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import type * as Presigner from '@aws-sdk/s3-request-presigner';
import { createReadStream } from 'node:fs';
import { createRequire } from 'node:module';
import { stat } from 'node:fs/promises';
import { ClassifiedError } from '../lib/shared/errors';
import { keyProblem, StoreFault } from './errors';
import type { ListedObject, ListOptions, Storage, StoredObjectInfo } from './storage';

// The AWS SDK (~0.1 s of CPU to load) loads when an s3:// location is first used, not with the CLI
// (lib/loadOnUse.ts does this for lib/; storage/ stays below lib/, hence its own two lines).
const load = createRequire(__filename);
const sdk = (): typeof ClientS3 => load('@aws-sdk/client-s3') as typeof ClientS3;
const presigner = (): typeof Presigner => load('@aws-sdk/s3-request-presigner') as typeof Presigner;

// S3-compatible object storage (AWS S3, versitygw, SeaweedFS, ...). Credentials, region and endpoint
// come from the standard AWS variables of the process that touches the data (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL); they never travel in
// workflow inputs. Create-only writes are `If-None-Match: *` puts, which S3 and versitygw answer
// with 412 when the key exists, so two writers can't both create one object.

export function parseS3Location(location: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(location);
  if (!match || !match[1]) throw new ClassifiedError('inputError', `${location} is not an s3://bucket/prefix location`);
  return { bucket: match[1], prefix: match[2]!.replace(/\/+$/, '') };
}

/** An ETag as one spelling (listings and reads quote it; some servers do not). */
function etagOf(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/"/g, '');
}

let sharedClient: S3Client | undefined;

/** One client per process, configured from the environment. */
export function s3ClientFromEnv(env: NodeJS.ProcessEnv = process.env): S3Client {
  if (env === process.env && sharedClient) return sharedClient;
  // The SDK warns on every process that releases after January 2027 need Node 22. This release is
  // pinned (package.json) because it supports Node 20, so the warning says nothing actionable.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const endpoint = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL;
  const client = new (sdk().S3Client)({
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
    ...(endpoint ? { endpoint } : {}),
    // Self-hosted stores serve buckets as paths (http://host:port/bucket/key); AWS accepts both.
    forcePathStyle: endpoint ? env.ATELIER_S3_VIRTUAL_HOSTED !== 'true' : false,
    // Checksums only where S3 requires them: S3-compatible stores differ in the newer checksum
    // headers, and a presigned URL must not oblige its holder to send one.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  if (env === process.env) sharedClient = client;
  return client;
}

function statusOf(err: unknown): number | undefined {
  return err instanceof sdk().S3ServiceException
    ? err.$metadata.httpStatusCode
    : (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** A missing object. A missing bucket is not one: it is the store gone, which pauses the run. */
function isNotFound(err: unknown): boolean {
  const name = (err as Error)?.name;
  if (name === 'NoSuchBucket') return false;
  return name === 'NoSuchKey' || name === 'NotFound' || statusOf(err) === 404;
}

function bucketGone(bucket: string, where: string): ClassifiedError {
  return new StoreFault('storageError', `the bucket ${bucket} does not exist (${where}): it was deleted or the location names another`);
}

/**
 * S3 answers classed like filesystem errors: refusals pause the run, 5xx and network are retried.
 * Failures of the store as a whole (no answer, 5xx, SlowDown, the bucket gone, credentials refused)
 * are StoreFaults, named plainly: they pause the run rather than fail rows (storage/errors.ts).
 */
function s3Failure(err: unknown, where: string): ClassifiedError {
  if (err instanceof ClassifiedError) return err;
  const status = statusOf(err);
  const name = (err as Error)?.name ?? 'Error';
  const code = (err as NodeJS.ErrnoException)?.code;
  const detail = `${name}${code && code !== name ? ` ${code}` : ''}: ${(err as Error)?.message ?? String(err)}`;
  const message = `${where}: ${detail}`;
  if (name === 'KeyTooLongError' || name === 'InvalidObjectName') return new ClassifiedError('inputError', message);
  if (name === 'NoSuchBucket') return bucketGone(/^s3:\/\/([^/]+)/.exec(where)?.[1] ?? '?', where);
  if (status === 403 || status === 401 || name === 'AccessDenied' || name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch') {
    return new StoreFault('storageError', `the store refused this worker's credentials (${where}): ${detail}`, { status });
  }
  // No answer at all (refused, reset, timed out, a body cut short) or the store saying it can't serve now.
  if (status === undefined || status >= 500) {
    return new StoreFault('retryable', `the store is unavailable (${where}): ${detail}`, status ? { status } : {});
  }
  return new ClassifiedError('retryable', message, status ? { status } : {});
}

export class S3Storage implements Storage {
  readonly kind = 's3' as const;
  readonly location: string;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(
    location: string,
    private readonly client: S3Client = s3ClientFromEnv(),
  ) {
    const { bucket, prefix } = parseS3Location(location);
    this.bucket = bucket;
    this.prefix = prefix;
    this.location = `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
  }

  private objectKey(key: string): string {
    const problem = keyProblem(key, 's3');
    if (problem) throw new ClassifiedError('inputError', `${this.describe(key)}: ${problem}`);
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  describe(key: string): string {
    return `${this.location}/${key}`;
  }

  async checkWritable(key: string): Promise<void> {
    this.objectKey(key);
  }

  async read(key: string): Promise<Buffer | undefined> {
    try {
      const out = await this.client.send(new (sdk().GetObjectCommand)({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return Buffer.from(await out.Body!.transformToByteArray());
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw s3Failure(err, this.describe(key));
    }
  }

  async readTagged(key: string): Promise<{ data: Buffer; tag: string } | undefined> {
    try {
      const out = await this.client.send(new (sdk().GetObjectCommand)({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return { data: Buffer.from(await out.Body!.transformToByteArray()), tag: etagOf(out.ETag) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw s3Failure(err, this.describe(key));
    }
  }

  async readRange(key: string, start: number, end: number): Promise<Buffer> {
    if (end <= start) return Buffer.alloc(0);
    try {
      const out = await this.client.send(
        new (sdk().GetObjectCommand)({ Bucket: this.bucket, Key: this.objectKey(key), Range: `bytes=${start}-${end - 1}` }),
      );
      return Buffer.from(await out.Body!.transformToByteArray());
    } catch (err) {
      throw s3Failure(err, this.describe(key));
    }
  }

  async readRangeIf(key: string, start: number, end: number, tag: string): Promise<Buffer | undefined> {
    // No version named, nothing to match: never read unchecked (If-Match: "" and a missing ETag would agree).
    if (!tag) return undefined;
    if (end <= start) return Buffer.alloc(0);
    try {
      const out = await this.client.send(
        new (sdk().GetObjectCommand)({
          Bucket: this.bucket,
          Key: this.objectKey(key),
          Range: `bytes=${start}-${end - 1}`,
          IfMatch: `"${tag}"`,
        }),
      );
      const bytes = Buffer.from(await out.Body!.transformToByteArray());
      // The answer's own ETag too: a store that ignores If-Match on a read still never passes off
      // another version, and one that sends no ETag is not trusted.
      const answered = etagOf(out.ETag);
      return answered !== '' && answered === tag ? bytes : undefined;
    } catch (err) {
      // 412: another version now; 404: gone.
      if (statusOf(err) === 412 || isNotFound(err)) return undefined;
      throw s3Failure(err, this.describe(key));
    }
  }

  async stat(key: string): Promise<StoredObjectInfo | undefined> {
    try {
      const out = await this.client.send(new (sdk().HeadObjectCommand)({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return { size: out.ContentLength ?? 0 };
    } catch (err) {
      if (!isNotFound(err)) throw s3Failure(err, this.describe(key));
    }
    // A HEAD answer has no body, so a 404 does not say whether the key or the bucket is missing: the
    // bucket is asked (only on a miss, which the row path meets rarely).
    await this.checkBucket(key);
    return undefined;
  }

  private async checkBucket(key: string): Promise<void> {
    try {
      await this.client.send(new (sdk().HeadBucketCommand)({ Bucket: this.bucket }));
    } catch (err) {
      if (statusOf(err) === 404 || (err as Error)?.name === 'NotFound' || (err as Error)?.name === 'NoSuchBucket')
        throw bucketGone(this.bucket, this.describe(key));
      throw s3Failure(err, this.describe(key));
    }
  }

  async write(key: string, data: string | Uint8Array): Promise<void> {
    try {
      await this.client.send(new (sdk().PutObjectCommand)({ Bucket: this.bucket, Key: this.objectKey(key), Body: data }));
    } catch (err) {
      throw s3Failure(err, this.describe(key));
    }
  }

  async writeFromFile(key: string, localPath: string): Promise<void> {
    await this.putFile(key, localPath);
  }

  /** One PUT of a local file's bytes, streamed; the ETag of the version written. */
  private async putFile(key: string, localPath: string): Promise<string> {
    try {
      const { size } = await stat(localPath);
      const out = await this.client.send(
        new (sdk().PutObjectCommand)({
          Bucket: this.bucket,
          Key: this.objectKey(key),
          Body: createReadStream(localPath),
          ContentLength: size,
        }),
      );
      return etagOf(out.ETag);
    } catch (err) {
      throw s3Failure(err, this.describe(key));
    }
  }

  /** One PUT each, in order: a PUT is atomic and an interrupted one leaves nothing behind. */
  async replaceFromFiles(files: ReadonlyArray<{ key: string; localPath: string }>): Promise<string[]> {
    const tags: string[] = [];
    for (const { key, localPath } of files) tags.push(await this.putFile(key, localPath));
    return tags;
  }

  async create(key: string, data: string | Uint8Array): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.client.send(
          new (sdk().PutObjectCommand)({ Bucket: this.bucket, Key: this.objectKey(key), Body: data, IfNoneMatch: '*' }),
        );
        return true;
      } catch (err) {
        if (statusOf(err) === 412) return false;
        // 409 ConditionalRequestConflict: another conditional write to the key is in progress; S3
        // asks for a retry, which then sees the winner's object (412) or wins itself.
        if (statusOf(err) === 409 && attempt < 5) continue;
        throw s3Failure(err, this.describe(key));
      }
    }
  }

  async writeIf(key: string, data: string | Uint8Array, tag: string | null): Promise<string | undefined> {
    const condition = tag === null ? { IfNoneMatch: '*' } : { IfMatch: `"${tag}"` };
    for (let attempt = 1; ; attempt++) {
      try {
        const out = await this.client.send(
          new (sdk().PutObjectCommand)({ Bucket: this.bucket, Key: this.objectKey(key), Body: data, ...condition }),
        );
        return etagOf(out.ETag);
      } catch (err) {
        if (statusOf(err) === 412) return undefined;
        // If-Match on a key that is gone: S3 and versitygw answer 404 NoSuchKey (not the bucket).
        if (tag !== null && isNotFound(err)) return undefined;
        // 409 ConditionalRequestConflict: another conditional write to the key is in progress.
        if (statusOf(err) === 409 && attempt < 5) continue;
        throw s3Failure(err, this.describe(key));
      }
    }
  }

  async list(prefix: string): Promise<string[]> {
    const base = prefix.replace(/\/+$/, '');
    // The root itself ('') lists the whole prefix.
    const folder = base ? `${this.objectKey(base)}/` : this.prefix ? `${this.prefix}/` : '';
    const keys: string[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.client.send(
          new (sdk().ListObjectsV2Command)({ Bucket: this.bucket, Prefix: folder, ContinuationToken: token }),
        );
        for (const object of page.Contents ?? []) if (object.Key) keys.push(object.Key.slice(folder.length));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw s3Failure(err, this.describe(prefix));
    }
    return keys;
  }

  async listObjects(prefix: string, options: ListOptions = {}): Promise<ListedObject[]> {
    const base = prefix.replace(/\/+$/, '');
    const folder = base ? `${this.objectKey(base)}/` : this.prefix ? `${this.prefix}/` : '';
    const objects: ListedObject[] = [];
    const { after, through } = options;
    let token: string | undefined;
    try {
      do {
        const page = await this.client.send(
          new (sdk().ListObjectsV2Command)({
            Bucket: this.bucket,
            Prefix: folder,
            ContinuationToken: token,
            // S3 lists keys in byte order: a range starts where it starts, not at the folder's first key.
            ...(after !== undefined && !token ? { StartAfter: `${folder}${after}` } : {}),
            // Shallow: the objects in the folder itself; its subfolders come back as one prefix each.
            ...(options.shallow ? { Delimiter: '/' } : {}),
          }),
        );
        let past = false;
        for (const object of page.Contents ?? []) {
          if (!object.Key) continue;
          const key = object.Key.slice(folder.length);
          if (through !== undefined && key > through) {
            past = true;
            break;
          }
          objects.push({ key, size: object.Size ?? 0, tag: etagOf(object.ETag) });
        }
        token = page.IsTruncated && !past ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw s3Failure(err, this.describe(prefix));
    }
    return objects;
  }

  async remove(key: string): Promise<void> {
    await this.removeKeys([this.objectKey(key)], key);
  }

  async removeAll(prefix: string): Promise<void> {
    const base = prefix.replace(/\/+$/, '');
    const keys = (await this.list(base)).map((k) => this.objectKey(`${base}/${k}`));
    for (let i = 0; i < keys.length; i += 1000) await this.removeKeys(keys.slice(i, i + 1000), prefix);
  }

  private async removeKeys(keys: string[], what: string): Promise<void> {
    if (keys.length === 0) return;
    try {
      const out = await this.client.send(
        new (sdk().DeleteObjectsCommand)({ Bucket: this.bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } }),
      );
      const first = out.Errors?.[0];
      if (first)
        throw new ClassifiedError('retryable', `${this.describe(what)}: deleting ${first.Key} failed: ${first.Code} ${first.Message}`);
    } catch (err) {
      throw s3Failure(err, this.describe(what));
    }
  }

  async readUrl(key: string, expiresInSeconds: number): Promise<string> {
    return presigner().getSignedUrl(this.client, new (sdk().GetObjectCommand)({ Bucket: this.bucket, Key: this.objectKey(key) }), {
      expiresIn: expiresInSeconds,
    });
  }

  async createUrl(key: string, expiresInSeconds: number): Promise<string> {
    // The signature covers If-None-Match, so the URL's holder must send `If-None-Match: *` and can
    // never overwrite an object that exists.
    return presigner().getSignedUrl(
      this.client,
      new (sdk().PutObjectCommand)({ Bucket: this.bucket, Key: this.objectKey(key), IfNoneMatch: '*' }),
      {
        expiresIn: expiresInSeconds,
        signableHeaders: new Set(['if-none-match']),
      },
    );
  }
}
