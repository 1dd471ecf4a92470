import { createReadStream, existsSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { isS3Location, objectAt, type Storage } from '../../storage';
import { DatasetError } from '../shared/errors';
import { IndexTracker, type DatasetHeader, type DatasetReadOptions, type DatasetRow, type ImageRef } from './common';
import { tarMembers, type TarMember } from './tar';

// WebDataset shards: `.tar` files whose members are grouped into samples by key, as the
// `webdataset` library does it: the key is the member's path up to the first dot of its file name,
// the rest is the field (`000001.png` → key `000001`, field `png`; `a/b.input.jpg` → `a/b`,
// `input.jpg`). Consecutive members with the same key are one sample. The image is the member with
// an image extension (or the field --image-key names), the instruction the `.txt` member (or
// `<instruction-key>.txt`) or the --instruction-key field of the `.json` member. Shards are read in
// order, a member at a time; embedded images go to the run's blobs as Parquet's do, so planning
// holds one sample in memory however many shards there are. Shards in object storage
// (`s3://bucket/shards-{000000..000099}.tar`) are streamed by ranged reads, never copied whole.

const IMAGE_EXTENSIONS = new Set(['png', 'jpg', 'jpeg', 'webp', 'gif', 'bmp', 'tif', 'tiff', 'ppm', 'pgm']);

/** True for a WebDataset input: a .tar file or a brace pattern of them. */
export function isWebDatasetInput(path: string): boolean {
  return /\.tar$/i.test(path) || /\{[^}]*(\.\.|,)[^}]*\}/.test(basename(path));
}

/**
 * Expands `shards-{000000..000099}.tar` (zero-padded ranges keep their width) and `{a,b}` lists, as
 * the `braceexpand` package `webdataset` uses does. Several braces multiply.
 */
export function expandBraces(pattern: string): string[] {
  const match = /\{([^{}]*)\}/.exec(pattern);
  if (!match) return [pattern];
  const [whole, body] = match as unknown as [string, string];
  const before = pattern.slice(0, match.index);
  const after = pattern.slice(match.index + whole.length);
  let items: string[];
  const range = /^(-?\d+)\.\.(-?\d+)$/.exec(body);
  if (range) {
    const [, a, b] = range as unknown as [string, string, string];
    const width = a.length === b.length && /^0\d/.test(a) ? a.length : 0;
    const from = Number(a);
    const to = Number(b);
    if (Math.abs(to - from) > 1_000_000) throw new DatasetError(`${pattern}: the range {${body}} is too large`);
    const step = from <= to ? 1 : -1;
    items = [];
    for (let n = from; step > 0 ? n <= to : n >= to; n += step) items.push(String(n).padStart(width, '0'));
  } else if (body.includes(',')) {
    items = body.split(',');
  } else {
    return expandBraces(`${before}\u0000${body}\u0001${after}`).map((s) => s.replace('\u0000', '{').replace('\u0001', '}'));
  }
  return items.flatMap((item) => expandBraces(`${before}${item}${after}`));
}

/** One shard: its location (as the user wrote it) and a reader of its bytes from the start. */
export interface WebDatasetShard {
  location: string;
  open(): AsyncIterable<Buffer | Uint8Array>;
}

/** The bytes of one object, read front to back in ranged GETs, the next range fetched while the last is parsed. */
export const SHARD_RANGE_BYTES = 8 * 1024 * 1024;

async function* rangedRead(storage: Storage, key: string, size: number): AsyncGenerator<Buffer> {
  let start = 0;
  let next: Promise<Buffer> | undefined = size > 0 ? storage.readRange(key, 0, Math.min(SHARD_RANGE_BYTES, size)) : undefined;
  while (next) {
    const chunk = await next;
    start += chunk.length;
    // A short range (the object shrank while read) ends the stream; tarMembers names the truncation.
    next = chunk.length > 0 && start < size ? storage.readRange(key, start, Math.min(start + SHARD_RANGE_BYTES, size)) : undefined;
    yield chunk;
  }
}

function missingShards(input: string, missing: string[], total: number): DatasetError {
  return new DatasetError(
    `${input}: ${missing.length} of ${total} shard(s) not found: ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''}`,
  );
}

/** The shards of an input, local or in object storage, each checked to exist before any is read. */
export async function webDatasetShards(input: string): Promise<WebDatasetShard[]> {
  const locations = expandBraces(input);
  if (!isS3Location(input)) {
    const missing = locations.filter((s) => !existsSync(s) || !statSync(s).isFile());
    if (missing.length > 0) throw missingShards(input, missing, locations.length);
    return locations.map((location) => ({ location, open: () => createReadStream(location) }));
  }
  const found = await Promise.all(
    locations.map(async (location) => {
      const { storage, key } = objectAt(location);
      const info = key ? await storage.stat(key) : undefined;
      return { location, storage, key, info };
    }),
  );
  const missing = found.filter((f) => !f.info).map((f) => f.location);
  if (missing.length > 0) throw missingShards(input, missing, locations.length);
  return found.map(({ location, storage, key, info }) => ({ location, open: () => rangedRead(storage, key, info!.size) }));
}

/** key and field of a member name, as webdataset's `base_plus_ext` splits them. */
function keyOf(name: string): { key: string; field: string } | undefined {
  const m = /^((?:.*\/|)[^./]+)\.([^/]*)$/.exec(name);
  return m ? { key: m[1]!, field: m[2]!.toLowerCase() } : undefined;
}

interface Sample {
  key: string;
  shard: string;
  fields: Map<string, TarMember>;
}

async function* samplesOf(source: AsyncIterable<Buffer | Uint8Array>, shardName: string): AsyncGenerator<Sample> {
  let current: Sample | undefined;
  for await (const member of tarMembers(source, shardName)) {
    const parts = keyOf(member.name);
    // Members without an extension (or hidden files) belong to no sample, as in webdataset.
    if (!parts || basename(member.name).startsWith('.')) continue;
    if (current && current.key !== parts.key) {
      yield current;
      current = undefined;
    }
    current ??= { key: parts.key, shard: shardName, fields: new Map() };
    if (current.fields.has(parts.field))
      throw new DatasetError(`${shardName}: sample "${parts.key}" has two "${parts.field}" members (the second at byte ${member.offset})`);
    current.fields.set(parts.field, member);
  }
  if (current) yield current;
}

const lastExtension = (field: string) => field.slice(field.lastIndexOf('.') + 1);

export async function* readWebDataset(
  input: string,
  options: DatasetReadOptions,
  onHeader?: (header: DatasetHeader) => void,
): AsyncGenerator<DatasetRow> {
  const shards = await webDatasetShards(input);
  const indexes = new IndexTracker();
  const imageField = options.imageKey?.toLowerCase();
  const maskField = options.maskKey?.toLowerCase();
  const textFields = [`${options.instructionKey.toLowerCase()}.txt`, 'txt'];
  // Samples' .json members need not share fields: the columns are all of them, known at the end.
  const columns = new Set<string>();
  let position = 0;
  // Relative names in messages when the shards share a folder (the usual case).
  const folder = dirname(shards[0]!.location);
  for (const { location, open } of shards) {
    const shard = dirname(location) === folder ? basename(location) : location;
    for await (const sample of samplesOf(open(), shard)) {
      const where = `${shard}: sample "${sample.key}"`;
      const fields = [...sample.fields.keys()];
      let image: string | undefined;
      if (imageField) {
        image = fields.find((f) => f === imageField);
        if (!image) throw new DatasetError(`${where}: no "${imageField}" member (--image-key); the sample has ${fields.join(', ')}`);
      } else {
        const images = fields.filter((f) => IMAGE_EXTENSIONS.has(lastExtension(f)) && f !== maskField);
        if (images.length === 0)
          throw new DatasetError(`${where}: no image member (.png, .jpg, .webp ...); the sample has ${fields.join(', ')}`);
        if (images.length > 1)
          throw new DatasetError(
            `${where}: several images (${images.join(', ')}); name the input with --image-key, e.g. --image-key ${images[0]}`,
          );
        image = images[0]!;
      }
      let json: Record<string, unknown> = {};
      const jsonMember = sample.fields.get('json');
      if (jsonMember) {
        try {
          const parsed: unknown = JSON.parse(jsonMember.data.toString('utf8'));
          if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) json = parsed as Record<string, unknown>;
        } catch (err) {
          throw new DatasetError(`${where}: ${sample.key}.json is not valid JSON (${(err as Error).message})`);
        }
      }
      const textField = textFields.find((f) => sample.fields.has(f));
      let instruction: string | undefined;
      if (textField) instruction = sample.fields.get(textField)!.data.toString('utf8');
      else if (typeof json[options.instructionKey] === 'string') instruction = json[options.instructionKey] as string;
      if (instruction === undefined || instruction.trim() === '') {
        throw new DatasetError(
          `${where}: no instruction: no ${textFields.map((f) => `.${f}`).join(' or ')} member and no "${options.instructionKey}" field in a .json member (the sample has ${fields.join(', ')})`,
        );
      }
      let mask: ImageRef | undefined;
      if (maskField) {
        const member = sample.fields.get(maskField);
        if (member) mask = await options.storeBlob(member.data);
      }
      const images = [await options.storeBlob(sample.fields.get(image)!.data)];
      const record: Record<string, unknown> = {
        __key__: sample.key,
        __url__: shard,
        ...json,
        [options.instructionKey]: instruction.trim(),
        image: `${sample.key}.${image}`,
        ...(maskField ? { [maskField]: mask ? `${sample.key}.${maskField}` : null } : {}),
      };
      for (const column of Object.keys(record)) columns.add(column);
      yield {
        position,
        index: indexes.take(json.index, position, where),
        where: `${shard} sample ${sample.key}`,
        turns: [instruction.trim()],
        images,
        ...(mask ? { mask } : {}),
        record,
      };
      position += 1;
    }
  }
  if (position === 0) throw new DatasetError(`${input}: no samples in ${shards.length} shard(s)`);
  onHeader?.({ columns: [...columns], imageKey: 'image', instructionKey: options.instructionKey });
}
