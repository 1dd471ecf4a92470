import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { openStorage, StoreFault, type Storage } from '../../storage';
import { RUN_META_DIR } from '../shared/constants';
import { ClassifiedError } from '../shared/errors';
import type { PlanRow } from './plan';
import type { LedgerEntry } from './records';

// The run's state in its storage (`.atelier/` next to the outputs): one owner. `layout` names every
// key; a `RunStore` over the run's `Storage` reads and writes the plan, the ledger, stored answers and
// per-row state, opened once per process and location. Errors from storage are never read as
// "absent": a read either returns what is stored, undefined when nothing is, or throws (a storage
// failure, or a record that does not parse, as StorageError: the run pauses with the reason).
//
// A row is finished by one protocol (`commitRow`): its outputs are written, then its ledger entry is
// committed with one conditional write (lib storage's `writeIf`) from the version the attempt
// started from: create-only where the row had no entry (If-None-Match: * / link), else only while
// the entry is still the version the attempt read (If-Match on its ETag / a compare and rename
// under the key's lock). Every entry write is conditional the same way, so none goes backwards: a
// failed or partial entry never replaces a committed ok one for the same request, however late its
// attempt (only a redo sets a done row aside, on purpose).
//
// Earlier releases committed a row that had an entry through a done-marker (`ledger/done/`) and
// then a plain write of the entry. Their run folders resume as they are (the markers are not read).
// During a rolling upgrade a worker of such a release still can, within its own read-then-write: write
// its partial or failed entry over a commit that lands between its read and its write (race a), and
// finish a row that had an entry with a plain write over a new worker's ok entry for the same request
// (both attempts then count the row as theirs; the outputs are whichever attempt wrote last, and the
// entry's output sizes make a re-run redo the row where they differ). An entry records no writer or
// release, so the new code cannot tell such an overwrite from an ordinary entry: stop the old workers
// before the new ones take a run's rows (docs/outputs-and-storage.md).

const pad = (index: number): string => String(index).padStart(6, '0');
const meta = (name: string): string => `${RUN_META_DIR}/${name}`;
const safeJobId = (jobId: string): string => jobId.replace(/[^A-Za-z0-9._-]/g, '_');

/** Every key of the run folder. The on-disk layout is unchanged from earlier releases: old runs resume. */
export const layout = {
  dir: RUN_META_DIR,
  /** The run's identity (which run owns the output dir). */
  run: meta('run.json'),
  /** Written by a paused run's probe of its store (workflows/dataset/storePause.ts): when it last answered. */
  storeProbe: meta('store-probe.json'),
  plan: { rows: meta('plan.jsonl'), index: meta('plan.idx'), meta: meta('plan.json') },
  imageCache: meta('image-cache'),
  ledger: meta('ledger'),
  ledgerEntry: (index: number): string => meta(`ledger/${pad(index)}.json`),
  answers: meta('answers'),
  answerRecord: (index: number, call: number): string => meta(`answers/${pad(index)}-${call}.json`),
  /** Answer images by content, per row: written by earlier releases (now inline in the record), still read. */
  answerObject: (index: number, sha256: string): string => meta(`answers/objects/${pad(index)}/${sha256}`),
  /** Per-row state a retry picks up: a multi-turn row's chat, a --prompt-enhance rewrite. */
  rowState: (kind: 'chats' | 'enhanced', index: number): string => meta(`${kind}/${pad(index)}.json`),
  staging: (index: number, name?: string): string => meta(`staging/${pad(index)}${name ? `/${name}` : ''}`),
  history: (index: number, generation: number, path?: string): string =>
    meta(`history/${pad(index)}/gen${generation}${path ? `/${path}` : ''}`),
  batchJob: (jobId: string, kind: 'rows' | 'submitted' | 'ended'): string => meta(`batch/${safeJobId(jobId)}.${kind}.json`),
  /** Input images batch jobs uploaded to the provider: shared by a run's batch phase (one job's, in earlier releases). */
  batchUploads: (scope: string): string => meta(`batch/${safeJobId(scope)}.uploads/`),
  review: meta('review'),
  reviewMark: (index: number): string => meta(`review/${pad(index)}.json`),
  judge: meta('judge'),
  judgeScore: (index: number): string => meta(`judge/${pad(index)}.json`),
  blob: (sha256: string, ext: string): string => meta(`blobs/${sha256}.${ext}`),
  thumb: (hash: string): string => meta(`thumbs/${hash}.webp`),
  /**
   * The results records (`resultsRecords.ts`): a pointer, then segments under a base; and the
   * tables' kept chunks (`resultsChunks.ts`): a manifest, and packs of encoded chunks' metadata and states.
   */
  results: {
    pointer: meta('results/records.json'),
    tables: meta('results/tables.json'),
    packs: meta('results/packs'),
    pack: (id: string, part: 'meta' | 'states'): string => meta(`results/packs/${id}.${part}`),
    base: (base: string): string => meta(`results/${base}`),
    segment: (base: string, n: number): string => meta(`results/${base}/${String(n).padStart(6, '0')}.jsonl`),
  },
} as const;

/** A ledger entry and the version tag of the object it was read from or written as. */
export interface TaggedEntry {
  entry: LedgerEntry;
  tag: string;
}

/** Conditional writes of one entry tried against other writers' before giving up (retryable). */
const ENTRY_WRITE_ROUNDS = 8;

/** Rows spanning more keys than this are not listed as a range (a listing request covers 1,000 keys). */
const RANGE_LISTING_SPAN = 4000;
const STAT_CONCURRENCY = 16;

/** Index of a per-row record named `000042.json` in a listing, or undefined for other names. */
export function rowRecordIndex(name: string): number | undefined {
  return /^\d+\.json$/.test(name) ? Number(name.slice(0, -5)) : undefined;
}

export interface StoredAnswerImage {
  data: Buffer;
  mimeType: string;
}

export interface StoredAnswer {
  images: StoredAnswerImage[];
  requestId?: string;
  usage?: Record<string, number>;
  info?: Record<string, string | number>;
  /** A chat turn's conversation after this answer (Gemini multi-turn rows). */
  history?: unknown[];
}

interface AnswerRecord extends Omit<StoredAnswer, 'images'> {
  digest: string | null;
  /** `data`: the bytes, base64, in the record (one request to store, one to clear); `sha256`: an object (older runs). */
  images: Array<{ mimeType: string; data?: string; sha256?: string }>;
  storedAt: string;
}

/** A stored answer and the keys that hold it (removed once the row is committed). */
export interface KeptAnswer {
  answer: StoredAnswer;
  keys: string[];
}

const OFFSET_BYTES = 8;

/** A write after a paid answer is tried again from memory: first after this, doubling up to the cap. */
const PAID_WRITE_BACKOFF_MS = 500;
const PAID_WRITE_MAX_BACKOFF_MS = 5000;
/** How long a paid answer waits for its store by default (the worker's ATELIER_STORE_PATIENCE_S). */
const DEFAULT_STORE_PATIENCE_S = 120;

/**
 * How long a paid answer is held in memory while its store is down, in ms: long enough for an
 * outage, a SlowDown spell or a bucket or credentials being put back, short enough to leave the
 * row activity's 10-minute limit room for its call.
 */
function storePatienceMs(): number {
  // Unset or empty (compose passes `${ATELIER_STORE_PATIENCE_S:-}`) means the default, not 0.
  const seconds = Number(process.env.ATELIER_STORE_PATIENCE_S || DEFAULT_STORE_PATIENCE_S);
  return (Number.isFinite(seconds) && seconds >= 0 ? seconds : DEFAULT_STORE_PATIENCE_S) * 1000;
}

/** Entries from before digests were recorded, or rows planned without one, match any request. */
export function sameRequest(entry: Pick<LedgerEntry, 'digest'>, digest: string | undefined): boolean {
  return entry.digest === undefined || digest === undefined || entry.digest === digest;
}

export class RunStore {
  private static readonly opened = new Map<string, RunStore>();

  /** The run store at a location (a folder or `s3://bucket/prefix`): one per location per process. */
  static open(location: string): RunStore {
    const storage = openStorage(location);
    let store = RunStore.opened.get(location);
    if (store?.storage !== storage) {
      store = new RunStore(storage);
      RunStore.opened.set(location, store);
    }
    return store;
  }

  constructor(readonly storage: Storage) {}

  get location(): string {
    return this.storage.location;
  }

  /**
   * Whether the store is back for a run paused on it: one small write into the run folder (what the
   * rows need: a store that answers reads but refuses or throttles writes is not back). Throws the
   * store's failure (a StoreFault, a StorageError) when it is not.
   */
  async probe(): Promise<void> {
    await this.storage.write(layout.storeProbe, JSON.stringify({ answeredAt: new Date().toISOString() }));
  }

  // ---- records -------------------------------------------------------------------------------------

  /** A JSON record, or undefined when there is none; a storage failure or unparsable record throws. */
  async readJson<T>(key: string): Promise<T | undefined> {
    const bytes = await this.storage.read(key);
    return bytes ? this.parse<T>(key, bytes) : undefined;
  }

  private parse<T>(key: string, bytes: Buffer): T {
    try {
      return JSON.parse(bytes.toString('utf8')) as T;
    } catch (err) {
      throw new ClassifiedError('storageError', `${this.storage.describe(key)} is not valid JSON: ${(err as Error).message}`);
    }
  }

  async writeJson(key: string, value: unknown): Promise<void> {
    await this.storage.write(key, `${JSON.stringify(value)}\n`);
  }

  // ---- plan ----------------------------------------------------------------------------------------

  /**
   * Reads `count` rows starting at `start` (clamped to the plan's end): two ranged reads, the index's
   * offsets then the rows. A range past the index's end comes back short (or refused, on S3), which
   * is where the plan ends: no stat of the index first.
   */
  async planRows(start: number, count: number): Promise<PlanRow[]> {
    const { storage } = this;
    if (count <= 0) return [];
    let offsets: Buffer;
    try {
      offsets = await storage.readRange(layout.plan.index, start * OFFSET_BYTES, (start + count + 1) * OFFSET_BYTES);
    } catch (err) {
      // Only now is the index looked at: missing (no plan yet), or shorter than the range (S3's 416).
      const info = await storage.stat(layout.plan.index);
      if (!info) throw new Error(`${storage.describe(layout.plan.index)} is missing: the run has no plan yet`, { cause: err });
      if (start * OFFSET_BYTES >= info.size) return [];
      throw err;
    }
    const rows = Math.floor(offsets.length / OFFSET_BYTES) - 1;
    if (rows <= 0) return [];
    const first = Number(offsets.readBigUInt64LE(0));
    const last = Number(offsets.readBigUInt64LE(rows * OFFSET_BYTES));
    const chunk = await storage.readRange(layout.plan.rows, first, last);
    return chunk
      .toString('utf8')
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => JSON.parse(line) as PlanRow);
  }

  async planRow(position: number): Promise<PlanRow> {
    const [row] = await this.planRows(position, 1);
    if (!row) throw new Error(`row position ${position} is not in the plan of ${this.location}`);
    return row;
  }

  // ---- ledger --------------------------------------------------------------------------------------

  /** Indexes that have a ledger entry, from one listing. */
  async ledgerIndexes(): Promise<Set<number>> {
    const names = await this.storage.list(layout.ledger);
    return new Set(names.map(rowRecordIndex).filter((i): i is number => i !== undefined));
  }

  /**
   * Which of these rows have a ledger entry, without listing the whole ledger (a page of rows must
   * cost the same at 1,000 rows or 1,000,000): on S3 one listing of the key range the rows span (a
   * request per 1,000 keys), on a disk a stat each (a folder of a million entries takes seconds to
   * read). Rows spread far apart (an unsorted index column) are asked about one by one.
   */
  async ledgerIndexesAmong(indexes: Iterable<number>): Promise<Set<number>> {
    const wanted = [...new Set(indexes)].sort((a, b) => a - b);
    const found = new Set<number>();
    if (!wanted.length) return found;
    const first = wanted[0]!;
    const last = wanted[wanted.length - 1]!;
    if (this.storage.kind === 's3' && last - first < RANGE_LISTING_SPAN) {
      const name = (index: number) => layout.ledgerEntry(index).slice(layout.ledger.length + 1);
      const listed = await this.storage.listObjects(layout.ledger, {
        shallow: true,
        ...(first > 0 ? { after: name(first - 1) } : {}),
        through: name(last),
      });
      const among = new Set(wanted);
      for (const object of listed) {
        const index = rowRecordIndex(object.key);
        if (index !== undefined && among.has(index)) found.add(index);
      }
      return found;
    }
    for (let i = 0; i < wanted.length; i += STAT_CONCURRENCY) {
      const batch = wanted.slice(i, i + STAT_CONCURRENCY);
      const stats = await Promise.all(batch.map((index) => this.storage.stat(layout.ledgerEntry(index))));
      batch.forEach((index, n) => stats[n] && found.add(index));
    }
    return found;
  }

  /** Every entry's tag (its version, lib storage's ListedObject), from one listing: done-markers left out. */
  async ledgerTags(): Promise<Map<number, string>> {
    const tags = new Map<number, string>();
    for (const object of await this.storage.listObjects(layout.ledger, { shallow: true })) {
      const index = rowRecordIndex(object.key);
      if (index !== undefined) tags.set(index, object.tag);
    }
    return tags;
  }

  readEntry(index: number): Promise<LedgerEntry | undefined> {
    return this.readJson<LedgerEntry>(layout.ledgerEntry(index));
  }

  /** A row's entry with its tag (what a listing shows while the entry is unchanged). */
  async readEntryTagged(index: number): Promise<TaggedEntry | undefined> {
    const key = layout.ledgerEntry(index);
    const read = await this.storage.readTagged(key);
    if (!read) return undefined;
    return { entry: this.parse<LedgerEntry>(key, read.data), tag: read.tag };
  }

  /**
   * Records a failed or partial row. A commit never goes backwards: an entry that holds the row ok
   * for the same request stays (a late attempt of a row another attempt finished, a failure reported
   * after the row's commit); `setAside` replaces it on purpose (a redo). Returns the entry that holds.
   */
  async writeEntry(entry: LedgerEntry, options: { setAside?: boolean } = {}): Promise<LedgerEntry> {
    return (await this.putEntry(entry, options)).entry;
  }

  /**
   * `writeEntry` with the version written: one conditional write from the version read (`over`: the
   * entry as this caller last read or wrote it, null for none, sparing the read), so a commit that
   * lands between the read and the write is seen (the write does nothing) and decided on again.
   */
  async putEntry(entry: LedgerEntry, options: { setAside?: boolean; over?: TaggedEntry | null } = {}): Promise<TaggedEntry> {
    const key = layout.ledgerEntry(entry.index);
    const body = `${JSON.stringify(entry)}\n`;
    let current = options.over !== undefined ? options.over : ((await this.readEntryTagged(entry.index)) ?? null);
    for (let round = 1; ; round++) {
      if (!options.setAside && current?.entry.status === 'ok' && sameRequest(current.entry, entry.digest)) return current;
      const tag = await this.storage.writeIf(key, body, current?.tag ?? null);
      if (tag !== undefined) return { entry, tag };
      if (round >= ENTRY_WRITE_ROUNDS) throw this.keptChanging(entry.index);
      current = (await this.readEntryTagged(entry.index)) ?? null;
    }
  }

  /**
   * Commits a finished row with one conditional write from `startedFrom`, the entry as the attempt
   * read it when it began or last wrote it (null: the row had none): a create where there was none.
   * If the entry changed meanwhile, an ok one for the same request is another attempt's commit,
   * which holds (returned, `won` false); anything else (a failure or partial recorded since) is
   * replaced, again conditionally. Returns the entry that holds.
   */
  async commitEntry(entry: LedgerEntry, startedFrom: TaggedEntry | null = null): Promise<{ won: boolean; entry: LedgerEntry }> {
    const key = layout.ledgerEntry(entry.index);
    const body = `${JSON.stringify(entry)}\n`;
    let current = startedFrom;
    for (let round = 1; ; round++) {
      if ((await this.storage.writeIf(key, body, current?.tag ?? null)) !== undefined) return { won: true, entry };
      if (round >= ENTRY_WRITE_ROUNDS) throw this.keptChanging(entry.index);
      current = (await this.readEntryTagged(entry.index)) ?? null;
      if (current?.entry.status === 'ok' && sameRequest(current.entry, entry.digest)) {
        // This very entry, written by an earlier try of this call whose answer was lost: won after all.
        const ours = current.entry.finishedAt === entry.finishedAt && JSON.stringify(current.entry) === JSON.stringify(entry);
        return { won: ours, entry: current.entry };
      }
    }
  }

  private keptChanging(index: number): ClassifiedError {
    return new ClassifiedError(
      'retryable',
      `${this.storage.describe(layout.ledgerEntry(index))} kept changing while it was written (${ENTRY_WRITE_ROUNDS} tries)`,
    );
  }

  /**
   * Takes an ok entry an earlier release wrote (its digest made without the S3 inputs' ETags) as made
   * from the inputs as they are now: its digest becomes the row's, with their ETags recorded, once its
   * outputs are in place. Upgrading redoes no row; from then on a replaced input is noticed.
   * Returns the entry as rewritten, or undefined (outputs missing, or the entry changed since it was
   * read: the row is then looked at again when its turn comes, as any row not found done).
   * Conditional like every entry write: from the version that holds exactly this entry, so a commit
   * landing meanwhile is never written over.
   */
  async adoptInputs(entry: LedgerEntry, digest: string, inputs: LedgerEntry['inputs']): Promise<LedgerEntry | undefined> {
    if (!entry.outputImages?.length || !(await this.outputsExist(entry.outputImages, entry.outputDigests))) return undefined;
    const current = await this.readEntryTagged(entry.index);
    if (!current || JSON.stringify(current.entry) !== JSON.stringify(entry)) return undefined;
    const adopted: LedgerEntry = { ...entry, digest, ...(inputs ? { inputs } : {}), inputsAdopted: true };
    const written = await this.storage.writeIf(layout.ledgerEntry(entry.index), `${JSON.stringify(adopted)}\n`, current.tag);
    return written === undefined ? undefined : adopted;
  }

  /**
   * Whether every path exists: a stat each (a HEAD on S3); a failed check throws, never "missing".
   * An output whose size is not the one its commit recorded (emptied, replaced) counts as missing.
   */
  async outputsExist(paths: readonly string[], digests?: LedgerEntry['outputDigests']): Promise<boolean> {
    const found = await Promise.all(paths.map((p) => this.storage.stat(p)));
    return found.every((info, i) => info !== undefined && (digests?.[paths[i]!]?.size ?? info.size) === info.size);
  }

  /**
   * Which outputs exist, for a scan over many rows: each folder that holds outputs is listed once
   * (on S3 a request per 1,000 objects, against a HEAD per output).
   */
  outputListing(): OutputListing {
    return new OutputListing(this.storage);
  }

  /** Whether an entry marks its row done for `digest`: ok, made for it, and every output in place. */
  async isDone(entry: LedgerEntry | undefined, digest: string | undefined): Promise<boolean> {
    if (entry?.status !== 'ok' || !entry.outputImages?.length) return false;
    if (!sameRequest(entry, digest)) return false;
    return this.outputsExist(entry.outputImages, entry.outputDigests);
  }

  // ---- stored answers ------------------------------------------------------------------------------

  /**
   * Stores a paid answer as one object, its images inline: one request (an answer lives only until
   * its row commits, so it is written once and removed once). Returns the keys that hold it.
   */
  async storeAnswer(index: number, call: number, digest: string | undefined, answer: StoredAnswer): Promise<string[]> {
    const { images, ...rest } = answer;
    const record: AnswerRecord = {
      ...rest,
      digest: digest ?? null,
      images: images.map((image) => ({ mimeType: image.mimeType, data: image.data.toString('base64') })),
      storedAt: new Date().toISOString(),
    };
    const key = layout.answerRecord(index, call);
    await this.storage.write(key, JSON.stringify(record));
    return [key];
  }

  /** Rows that have a stored answer (of any call, any release's layout), from one listing. */
  async answerIndexes(): Promise<Set<number>> {
    const indexes = new Set<number>();
    for (const name of await this.storage.list(layout.answers)) {
      const match = /^(?:objects\/)?(\d+)[-/]/.exec(name);
      if (match) indexes.add(Number(match[1]));
    }
    return indexes;
  }

  /** The stored answer to this row's call, if there is one for what the row asks now. */
  async storedAnswer(index: number, call: number, digest: string | undefined): Promise<KeptAnswer | undefined> {
    const key = layout.answerRecord(index, call);
    const record = await this.readJson<AnswerRecord>(key);
    if (!record || (record.digest ?? undefined) !== digest) return undefined;
    const images: StoredAnswerImage[] = [];
    const keys = [key];
    for (const image of record.images) {
      if (image.data !== undefined) {
        images.push({ data: Buffer.from(image.data, 'base64'), mimeType: image.mimeType });
        continue;
      }
      // An answer stored by an earlier release: its images are objects by content.
      const objectKey = layout.answerObject(index, image.sha256 ?? '');
      const data = await this.storage.read(objectKey);
      if (!data) return undefined;
      images.push({ data, mimeType: image.mimeType });
      keys.unshift(objectKey);
    }
    const { digest: _digest, storedAt: _at, images: _refs, ...rest } = record;
    return { answer: { ...rest, images }, keys };
  }

  /** Forgets a finished row's answers (its outputs and ledger entry now hold what they held): nothing read back. */
  async clearAnswers(keys: readonly string[]): Promise<void> {
    for (const key of keys) await this.storage.remove(key);
  }

  // ---- per-row state -------------------------------------------------------------------------------

  readRowState<T>(kind: 'chats' | 'enhanced', index: number): Promise<T | undefined> {
    return this.readJson<T>(layout.rowState(kind, index));
  }

  async writeRowState(kind: 'chats' | 'enhanced', index: number, value: unknown): Promise<void> {
    await this.storage.write(layout.rowState(kind, index), JSON.stringify(value));
  }
}

/**
 * Outputs checked against listings of their folders: one listing per folder, kept for the scan. An
 * output whose size is not the one its commit recorded (emptied, replaced) counts as missing, as in
 * `RunStore.outputsExist`.
 */
export class OutputListing {
  private readonly folders = new Map<string, Promise<Map<string, number>>>();

  constructor(private readonly storage: Storage) {}

  private folder(path: string): Promise<Map<string, number>> {
    let sizes = this.folders.get(path);
    if (!sizes) {
      sizes = this.storage.listObjects(path, { shallow: true }).then((objects) => new Map(objects.map((o) => [o.key, o.size])));
      // A failed listing is not kept: the next row asks again (and the failure reaches its caller).
      sizes.catch(() => this.folders.delete(path));
      this.folders.set(path, sizes);
    }
    return sizes;
  }

  async exists(path: string, recordedSize?: number): Promise<boolean> {
    const slash = path.lastIndexOf('/');
    const size = (await this.folder(slash < 0 ? '' : path.slice(0, slash))).get(path.slice(slash + 1));
    return size !== undefined && (recordedSize ?? size) === size;
  }

  async allExist(paths: readonly string[], digests?: LedgerEntry['outputDigests']): Promise<boolean> {
    return (await Promise.all(paths.map((p) => this.exists(p, digests?.[p]?.size)))).every(Boolean);
  }
}

/**
 * Runs a write that follows a paid answer: retried from memory within the attempt, with backoff,
 * while storage answers with a passing fault or the store as a whole fails (StoreFault: down,
 * throttling, its bucket gone, credentials refused), for up to the worker's store patience; the row
 * in flight waits for its store rather than drop what it paid for. If the write still fails, the row
 * stops with a StorageError, which pauses the run instead of a blind activity retry that would pay
 * again. Refusals of this one object (a full disk, a bad name) stop it at once.
 */
export async function afterPaid<T>(what: string, write: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  const started = Date.now();
  const patience = storePatienceMs();
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (err) {
      if (!(err instanceof ClassifiedError) || (err.kind !== 'retryable' && !(err instanceof StoreFault))) throw err;
      const waited = Date.now() - started;
      if (waited >= patience || signal?.aborted) {
        throw new ClassifiedError(
          'storageError',
          `${what} failed ${attempt} times in ${Math.round(waited / 1000)} s after the provider answered (${err.message}); the run pauses rather than pay for the answer again`,
        );
      }
      await sleep(Math.min(PAID_WRITE_MAX_BACKOFF_MS, PAID_WRITE_BACKOFF_MS * 2 ** (attempt - 1), Math.max(0, patience - waited)));
    }
  }
}

/**
 * Runs a read or write of the run's own bookkeeping (the next page of rows, the results tables)
 * that may wait for its store: while the store is unavailable (down, throttling: a retryable
 * StoreFault) it is tried again, with backoff, for up to the worker's store patience, so an outage
 * of a minute or two is waited out inside the activity instead of spending its few retries, whose
 * end fails the whole run. Any other failure is thrown at once. `op` runs again from its start.
 */
export async function whileStoreDown<T>(op: () => Promise<T>, beat?: () => void): Promise<T> {
  const started = Date.now();
  const patience = storePatienceMs();
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      const waited = Date.now() - started;
      if (!(err instanceof StoreFault) || err.kind !== 'retryable' || waited >= patience) throw err;
      // An activity with a heartbeat timeout stays alive while it waits.
      beat?.();
      await sleep(Math.min(PAID_WRITE_MAX_BACKOFF_MS, PAID_WRITE_BACKOFF_MS * 2 ** (attempt - 1), Math.max(0, patience - waited)));
    }
  }
}

/** What identifies a row's entries: the same in every entry of the row, whichever path writes it. */
export interface RowIdentity {
  index: number;
  position: number;
  runId: string;
  model: string;
  digest?: string | undefined;
  /** The row's S3 inputs' ETags and sizes as planned (lib/run/records.ts `inputs`). */
  inputs?: LedgerEntry['inputs'] | undefined;
}

/**
 * A ledger entry for a row, built in one place: the row's identity, its redo history carried from
 * the entry it replaces, and (for ok entries) the digest whose outputs it replaced.
 */
export function ledgerEntry(
  row: RowIdentity,
  prior: LedgerEntry | undefined,
  fields: Omit<LedgerEntry, 'index' | 'position' | 'runId' | 'model' | 'digest' | 'history' | 'finishedAt'>,
): LedgerEntry {
  const replaced =
    fields.status === 'ok' && prior?.status === 'ok' && prior.digest && prior.digest !== row.digest ? prior.digest : undefined;
  return {
    index: row.index,
    position: row.position,
    runId: row.runId,
    model: row.model,
    ...(row.digest ? { digest: row.digest } : {}),
    ...(row.inputs ? { inputs: row.inputs } : {}),
    ...(replaced ? { replacedDigest: replaced } : {}),
    // A redone row keeps its earlier outputs' history (and a later redo its own seed).
    ...(prior?.history?.length ? { history: prior.history } : {}),
    ...fields,
    finishedAt: new Date().toISOString(),
  };
}

/** One output of a row: where it goes and its encoded bytes. */
export interface RowOutput {
  path: string;
  bytes: Uint8Array;
}

/**
 * The one way a row is finished, on every path (direct, GPU, batch): its outputs are written, then
 * its ok entry is committed with one conditional write from the version the attempt started from
 * (`RunStore.commitEntry`). Returns the entry that holds (another attempt's, if it won).
 *
 * On a disk a row costs two fsyncs (its output's temp file, then its entry's), ~0.2 ms of worker
 * CPU each on an ext4 CI disk (issue 21). Neither can go by ordering the writes: each guards
 * against a power loss (a process killed, even SIGKILL, loses nothing written: the page cache
 * survives it) something the other cannot.
 * - Without the output's: the entry, flushed, can name an output whose data never reached the disk.
 *   ext4's delayed allocation leaves such a file empty or short, which the entry's recorded size
 *   catches only by redoing the row (paid twice); XFS can leave it zero-filled at its full size,
 *   which passes the size check: a broken image counted as done. Hashing every output on every
 *   done check would cost more than the fsync.
 * - Without the entry's: after the output's flush, the entry can come back missing (the row paid
 *   twice) or empty (unparsable: the run pauses on it), and one fsync flushes one file's data only.
 */
export async function commitRow(
  store: RunStore,
  args: {
    outputs: readonly RowOutput[];
    entry: LedgerEntry;
    /** The row's entry as the attempt read it when it began, or last wrote it; null: it had none. */
    startedFrom: TaggedEntry | null;
    paid?: boolean;
  },
): Promise<{ won: boolean; entry: LedgerEntry }> {
  const guard = <T>(what: string, write: () => Promise<T>) => (args.paid ? afterPaid(what, write) : write());
  for (const output of args.outputs)
    await guard(`writing ${store.storage.describe(output.path)}`, () => store.storage.write(output.path, output.bytes));
  const entry = withOutputDigests(args.entry, args.outputs);
  return guard(`committing row ${entry.index}`, () => store.commitEntry(entry, args.startedFrom));
}

/** The entry with the sha256 and size of each output the commit writes (issue 23: bytes, not names). */
function withOutputDigests(entry: LedgerEntry, outputs: readonly RowOutput[]): LedgerEntry {
  if (outputs.length === 0) return entry;
  const digests = { ...entry.outputDigests };
  for (const { path, bytes } of outputs)
    digests[path] = { sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.byteLength };
  return { ...entry, outputDigests: digests };
}
