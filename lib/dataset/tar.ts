import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { DatasetError } from '../shared/errors';

// Tar archives as WebDataset uses them: a stream of regular-file members (ustar, with GNU long names
// and pax `path` records read as well), read strictly in order so a shard is never held whole, and
// written the same way. Only what WebDataset needs: no links, devices or sparse files.

const BLOCK = 512;

/** One regular file of an archive. */
export interface TarMember {
  name: string;
  data: Buffer;
  /** Byte offset of the member's header in the archive, for messages. */
  offset: number;
}

/** Reads exact byte counts from a chunked stream. */
class ChunkReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private done = false;
  position = 0;

  constructor(private readonly source: AsyncIterator<Buffer | Uint8Array | string>) {}

  /** `n` bytes, or fewer when the stream ends first. */
  async read(n: number): Promise<Buffer> {
    while (this.buffered < n && !this.done) {
      const next = await this.source.next();
      if (next.done) this.done = true;
      else {
        const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
        this.chunks.push(chunk);
        this.buffered += chunk.length;
      }
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, Math.min(n, all.length));
    const rest = all.subarray(out.length);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    this.position += out.length;
    return out;
  }
}

function text(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? field.length : end).toString('utf8');
}

function octal(block: Buffer, start: number, length: number): number {
  const field = block.subarray(start, start + length);
  // GNU base-256 for sizes of 8 GiB and more.
  if (field[0]! & 0x80) return Number(field.subarray(1).reduce((n, b) => n * 256n + BigInt(b), 0n));
  const digits = text(block, start, length).trim();
  return digits === '' ? 0 : parseInt(digits, 8);
}

function checksumOf(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!;
  return sum;
}

/** The `path` of a pax extended header, if it sets one. */
function paxPath(data: Buffer): string | undefined {
  let path: string | undefined;
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(32, at);
    if (space === -1) break;
    const length = parseInt(data.subarray(at, space).toString('utf8'), 10);
    if (!Number.isFinite(length) || length <= 0) break;
    const record = data.subarray(space + 1, at + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (record.slice(0, eq) === 'path') path = record.slice(eq + 1);
    at += length;
  }
  return path;
}

/**
 * The regular files of an archive, in order. `shard` names the archive in errors: a truncated
 * member, a damaged header (checksum) and bytes that are not a tar at all are DatasetErrors naming
 * the shard, the member and its offset.
 */
export async function* tarMembers(source: AsyncIterable<Buffer | Uint8Array | string>, shard: string): AsyncGenerator<TarMember> {
  const reader = new ChunkReader(source[Symbol.asyncIterator]());
  let longName: string | undefined;
  let members = 0;
  for (;;) {
    const offset = reader.position;
    const header = await reader.read(BLOCK);
    if (header.length === 0) return; // ended on a member boundary without the end blocks: accepted, as tar does
    if (header.length < BLOCK)
      throw new DatasetError(
        members === 0
          ? `${shard}: not a tar archive (${header.length} bytes, shorter than one tar header)`
          : `${shard}: truncated at byte ${offset} (a partial tar header)`,
      );
    if (header.every((b) => b === 0)) return; // end-of-archive marker
    const stored = octal(header, 148, 8);
    if (stored !== checksumOf(header)) {
      throw new DatasetError(
        members === 0
          ? `${shard}: not a tar archive (the first header's checksum does not match)`
          : `${shard}: damaged tar header at byte ${offset} (checksum mismatch) after ${members} member(s)`,
      );
    }
    const type = String.fromCharCode(header[156]!);
    const prefix = header.subarray(257, 263).toString('latin1').startsWith('ustar') ? text(header, 345, 155) : '';
    const name = longName ?? (prefix ? `${prefix}/${text(header, 0, 100)}` : text(header, 0, 100));
    longName = undefined;
    const size = octal(header, 124, 12);
    const data = await reader.read(size);
    if (data.length < size) {
      throw new DatasetError(
        `${shard}: truncated in member "${name}" (header at byte ${offset}): it needs ${size} bytes, ${data.length} are there`,
      );
    }
    const padding = (BLOCK - (size % BLOCK)) % BLOCK;
    // The padding after the last member may be missing in a truncated file; the member itself is whole.
    await reader.read(padding);
    members += 1;
    if (type === 'L') longName = data.toString('utf8').replace(/\0+$/, '');
    else if (type === 'x') longName = paxPath(data);
    else if (type === '0' || type === '\0' || type === '7') yield { name, data, offset };
    // Directories, links, global pax headers and the rest carry no sample data.
  }
}

/** Writes a tar archive member by member, streaming to disk. */
export class TarWriter {
  private readonly file: WriteStream;
  private readonly closed: Promise<unknown>;
  bytes = 0;

  constructor(readonly path: string) {
    this.file = createWriteStream(path);
    this.closed = once(this.file, 'close');
  }

  private async put(chunk: Buffer): Promise<void> {
    this.bytes += chunk.length;
    if (!this.file.write(chunk)) await once(this.file, 'drain');
  }

  async add(name: string, data: Uint8Array, mtime: Date): Promise<void> {
    const nameBytes = Buffer.from(name, 'utf8');
    if (nameBytes.length > 100) throw new Error(`tar member name longer than 100 bytes: ${name}`);
    const header = Buffer.alloc(BLOCK);
    nameBytes.copy(header, 0);
    header.write('0000644\0', 100, 'latin1');
    header.write('0000000\0', 108, 'latin1');
    header.write('0000000\0', 116, 'latin1');
    header.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
    header.write(
      `${Math.floor(mtime.getTime() / 1000)
        .toString(8)
        .padStart(11, '0')}\0`,
      136,
      'latin1',
    );
    header.write('0', 156, 'latin1');
    header.write('ustar\0', 257, 'latin1');
    header.write('00', 263, 'latin1');
    header.write(`${checksumOf(header).toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    await this.put(header);
    await this.put(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    const padding = (BLOCK - (data.length % BLOCK)) % BLOCK;
    if (padding) await this.put(Buffer.alloc(padding));
  }

  async finish(): Promise<void> {
    await this.put(Buffer.alloc(BLOCK * 2));
    this.file.end();
    await this.closed;
  }
}
