import { createHash, randomBytes } from 'node:crypto';
import { openStorage, type Storage } from '../../storage';
import type { KeptEntry, KeptEntryLookup, RowLedgerState } from './ledger';
import type { PlanMeta } from './plan';
import { RecordsGone } from './resultsErrors';
import { layout } from './runStore';

// The results tables' row records: each row's ledger state as the last refresh read it, kept so a
// refresh re-reads only the rows finished since the one before (the workflow names them) instead of
// every ledger entry and every output. A full pass (a run's first write, or records made for
// another plan) writes a base segment; each refresh then appends one segment with the rows it
// re-read; a later segment's record of a row replaces an earlier one. A pointer names the base and
// how many segments count, so a refresh that dies before moving it leaves the records as they were.
//
//   .atelier/results/records.json             { plan, base, segments }
//   .atelier/results/<base>/000000.jsonl      one {"i": index, "s": state, "t": tag} per line
//
// `t` is the tag the row's ledger entry had when it was read (storage's ListedObject): a later pass
// lists the ledger once and takes every entry whose tag is unchanged from here instead of reading
// it again (planning a re-run, the final tables), so the records are a cache of the ledger too.

/** A row's state as recorded: the ledger's, or why its entry could not be read (re-read next time). */
export type RecordedState = RowLedgerState | { status: 'unreadable'; error: string };

interface RecordsPointer {
  /** The plan the states were read against (a `changed` state depends on the plan's digest). */
  plan: string;
  base: string;
  segments: number;
}

/**
 * Past this many segments the records are rewritten as one base: by the results tables, from the
 * states of every chunk they write then (activities/resultsTables.ts), so no segment is read whole.
 */
const MAX_SEGMENTS = 24;

/** What ties records to a plan: its meta (run, input, rows, columns), hashed. */
export function planTag(meta: PlanMeta): string {
  return createHash('sha256').update(JSON.stringify(meta)).digest('hex').slice(0, 16);
}

function serialise(records: ReadonlyMap<number, RecordedState>, tags: ReadonlyMap<number, string>): string {
  let out = '';
  for (const [i, s] of records) {
    const t = tags.get(i);
    out += `${JSON.stringify(t === undefined ? { i, s } : { i, s, t })}\n`;
  }
  return out;
}

/** The segments a pointer names, in order (read together: one request each on S3); undefined when one is gone. */
async function readSegmentBytes(storage: Storage, pointer: RecordsPointer): Promise<Buffer[] | undefined> {
  const segments = await Promise.all(
    Array.from({ length: pointer.segments }, (_, n) => storage.read(layout.results.segment(pointer.base, n))),
  );
  return segments.every((segment) => segment !== undefined) ? (segments as Buffer[]) : undefined;
}

/** Every record a pointer names, a later segment's record of a row replacing an earlier one; undefined when a segment is gone. */
async function readSegments(
  storage: Storage,
  pointer: RecordsPointer,
): Promise<{ states: Map<number, RecordedState>; tags: Map<number, string> } | undefined> {
  const states = new Map<number, RecordedState>();
  const tags = new Map<number, string>();
  const segments = await readSegmentBytes(storage, pointer);
  if (!segments) return undefined;
  // Applied in order: a later record of a row wins.
  for (const segment of segments) {
    for (const line of segment.toString('utf8').split('\n')) {
      if (!line) continue;
      const { i, s, t } = JSON.parse(line) as { i: number; s: RecordedState; t?: string };
      states.set(i, s);
      if (t === undefined) tags.delete(i);
      else tags.set(i, t);
    }
  }
  return { states, tags };
}

export class ResultsRecords {
  private constructor(
    private readonly storage: Storage,
    private readonly plan: string,
    private pointer: RecordsPointer | undefined,
    private readonly states: Map<number, RecordedState>,
    private readonly tags: Map<number, string> = new Map(),
    /** Whether `states` holds every record (false after a pointer-only load or `commitBase`). */
    private complete = true,
  ) {}

  /**
   * The records for this plan, or undefined when there are none to build on (never written, made
   * for another plan, or unreadable: the caller then makes a full pass). With `pointerOnly`, only
   * the pointer is read (a refresh that takes its rows' states from the tables' kept chunks): the
   * records can then be committed on, but `get` and `unreadable` know no row.
   */
  static async load(
    outputDir: string,
    plan: string | undefined,
    options: { pointerOnly?: boolean } = {},
  ): Promise<ResultsRecords | undefined> {
    const storage = openStorage(outputDir);
    try {
      const bytes = await storage.read(layout.results.pointer);
      if (!bytes) return undefined;
      const pointer = JSON.parse(bytes.toString('utf8')) as RecordsPointer;
      if (plan !== undefined && pointer.plan !== plan) return undefined;
      if (options.pointerOnly) return new ResultsRecords(storage, pointer.plan, pointer, new Map(), new Map(), false);
      const read = await readSegments(storage, pointer);
      return read && new ResultsRecords(storage, pointer.plan, pointer, read.states, read.tags);
    } catch {
      // Records are a cache of the ledger: any doubt about them costs one full pass, never a wrong table.
      return undefined;
    }
  }

  /**
   * The ledger entries the records hold with their tags, whatever plan they were made for (an
   * entry is the ledger's, not the plan's): empty when there are none or they cannot be read.
   * Held as the records' bytes, a row's line parsed when it is asked for (KeptEntries).
   */
  static async keptEntries(outputDir: string): Promise<KeptEntries> {
    const storage = openStorage(outputDir);
    try {
      const bytes = await storage.read(layout.results.pointer);
      if (!bytes) return KeptEntries.none;
      const segments = await readSegmentBytes(storage, JSON.parse(bytes.toString('utf8')) as RecordsPointer);
      return segments ? KeptEntries.of(segments) : KeptEntries.none;
    } catch {
      // A cache of the ledger: when in doubt every entry is read again.
      return KeptEntries.none;
    }
  }

  /** Empty records for a full pass; `commit` then writes them as a new base. */
  static fresh(outputDir: string, plan: string): ResultsRecords {
    return new ResultsRecords(openStorage(outputDir), plan, undefined, new Map());
  }

  /** Which records these are (base and segment count): the tables' kept chunks name the records they were made from. */
  get version(): string | undefined {
    return this.pointer ? `${this.pointer.plan}/${this.pointer.base}/${this.pointer.segments}` : undefined;
  }

  get(index: number): RecordedState | undefined {
    return this.states.get(index);
  }

  /** Whether the next `commit` that stores anything writes a new base (and removes the current one). */
  get rebasesOnCommit(): boolean {
    return this.pointer !== undefined && this.pointer.segments >= MAX_SEGMENTS;
  }

  /** Rows whose entry could not be read last time: a refresh reads them again. */
  unreadable(): number[] {
    return [...this.states].filter(([, s]) => s.status === 'unreadable').map(([i]) => i);
  }

  /**
   * Stores the states read by this pass: a new base for a full pass (or when the segments grew
   * many), else one more segment. Only then does the pointer move.
   */
  async commit(read: ReadonlyMap<number, RecordedState>, tags: ReadonlyMap<number, string> = new Map()): Promise<void> {
    for (const [i, s] of read) {
      this.states.set(i, s);
      const t = tags.get(i);
      if (t === undefined) this.tags.delete(i);
      else this.tags.set(i, t);
    }
    const old = this.pointer;
    // Nothing read on top of loaded records: nothing to store, and the pointer is left alone (a
    // write of the tables alone, the viewer's after a mark, must not move back a pointer that the
    // run's own refresh moved meanwhile).
    if (old && read.size === 0) return;
    if (!this.complete && (!old || old.segments >= MAX_SEGMENTS)) {
      // A new base holds every record: those of a pointer-only load are read now (once every
      // MAX_SEGMENTS refreshes), under this pass's states.
      const earlier = old && (await readSegments(this.storage, old).catch(() => undefined));
      if (!earlier) throw new RecordsGone('the results records changed or went missing while they were extended');
      for (const [i, s] of earlier.states) if (!this.states.has(i)) this.states.set(i, s);
      for (const [i, t] of earlier.tags) if (!this.tags.has(i) && !read.has(i)) this.tags.set(i, t);
      this.complete = true;
    }
    // A full pass replaces whatever records were there (made for another plan, say): removed below.
    const previous = old ?? (await this.readPointer());
    let next: RecordsPointer;
    if (!old || old.segments >= MAX_SEGMENTS) {
      const base = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
      // A row with no entry and no record is pending: the base keeps only rows with something to say.
      const kept = new Map([...this.states].filter(([, s]) => s.status !== 'pending' || s.entry !== undefined));
      await this.storage.write(layout.results.segment(base, 0), serialise(kept, this.tags));
      next = { plan: this.plan, base, segments: 1 };
    } else {
      if (read.size) await this.storage.write(layout.results.segment(old.base, old.segments), serialise(read, tags));
      next = { ...old, segments: old.segments + (read.size ? 1 : 0) };
    }
    await this.storage.write(layout.results.pointer, `${JSON.stringify(next)}\n`);
    this.pointer = next;
    if (previous && previous.base !== next.base) await this.storage.removeAll(layout.results.base(previous.base)).catch(() => undefined);
  }

  /**
   * Stores a full pass's records, streamed from a local file of `{"i", "s", "t"}` lines (every row's
   * state, written a chunk at a time): a new base, then the pointer; the previous records go.
   * Returns the base segment's key (the tables' manifest reads chunks' states from it by range).
   */
  async commitBase(localPath: string): Promise<string> {
    const previous = this.pointer ?? (await this.readPointer());
    const base = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    const key = layout.results.segment(base, 0);
    await this.storage.writeFromFile(key, localPath);
    const next: RecordsPointer = { plan: this.plan, base, segments: 1 };
    await this.storage.write(layout.results.pointer, `${JSON.stringify(next)}\n`);
    this.pointer = next;
    // Its states are the file's: this object holds none of them (a refresh loads by pointer).
    this.complete = false;
    if (previous && previous.base !== next.base) await this.storage.removeAll(layout.results.base(previous.base)).catch(() => undefined);
    return key;
  }

  private async readPointer(): Promise<RecordsPointer | undefined> {
    try {
      const bytes = await this.storage.read(layout.results.pointer);
      return bytes ? (JSON.parse(bytes.toString('utf8')) as RecordsPointer) : undefined;
    } catch {
      return undefined;
    }
  }
}

/**
 * Where a segment's line starts, as one number: the segment (at most MAX_SEGMENTS) times 2^33 plus
 * the byte offset, times 2, plus 1 when the line carries a tag.
 */
const SEGMENT_SPAN = 2 ** 33;
const NEWLINE = 0x0a;
const LINE_HEAD = Buffer.from('{"i":');

/**
 * The ledger entries the records keep, looked up by row: each row's latest line is found once by
 * its offset, and parsed only when the row is asked for. Parsed whole, a 1,000,000-row run's records
 * took ~1.5 KB of heap a row (every state an object tree), and one string of them passes V8's
 * longest (~512 MB) near that size; here a row costs its bytes off the heap and a map entry.
 */
export class KeptEntries implements KeptEntryLookup {
  static readonly none = new KeptEntries([]);

  /** Each row's latest line: its packed start (see SEGMENT_SPAN). */
  private readonly lines = new Map<number, number>();
  private tagged = 0;

  private constructor(private readonly segments: readonly Buffer[]) {}

  /** Indexes the segments' lines, in order: a later segment's line for a row replaces an earlier one. */
  static of(segments: readonly Buffer[]): KeptEntries {
    // An offset must fit below SEGMENT_SPAN (no Buffer is that long today): else nothing is kept.
    if (segments.some((bytes) => bytes.length >= SEGMENT_SPAN)) return KeptEntries.none;
    const kept = new KeptEntries(segments);
    segments.forEach((bytes, n) => {
      for (let start = 0; start < bytes.length;) {
        const end = lineEnd(bytes, start);
        if (end > start) {
          const index = lineIndex(bytes, start, end);
          // A line with a tag ends `"t":"…"}` (one without ends `}}`): when no row has one, a
          // caller need not list the ledger's tags to use them.
          const tagged = bytes[end - 1] === 0x7d && bytes[end - 2] === 0x22 ? 1 : 0;
          if (index !== undefined) kept.lines.set(index, (n * SEGMENT_SPAN + start) * 2 + tagged);
        }
        start = end + 1;
      }
    });
    for (const at of kept.lines.values()) kept.tagged += at % 2;
    return kept;
  }

  /** How many rows are recorded with a tag (those `get` may give). */
  get size(): number {
    return this.tagged;
  }

  get(index: number): KeptEntry | undefined {
    const packed = this.lines.get(index);
    if (packed === undefined) return undefined;
    const at = Math.floor(packed / 2);
    const bytes = this.segments[Math.floor(at / SEGMENT_SPAN)]!;
    const start = at % SEGMENT_SPAN;
    try {
      const { s, t } = JSON.parse(bytes.toString('utf8', start, lineEnd(bytes, start))) as { s: RecordedState; t?: string };
      // A row recorded without a tag, unreadable, or with no entry: its entry is read from the ledger.
      return typeof t === 'string' && s.status !== 'unreadable' && s.entry ? { tag: t, entry: s.entry } : undefined;
    } catch {
      return undefined;
    }
  }
}

/** Where the line starting at `start` ends (its newline, or the end of the bytes). */
function lineEnd(bytes: Buffer, start: number): number {
  const end = bytes.indexOf(NEWLINE, start);
  return end < 0 ? bytes.length : end;
}

/** A line's row index: its `{"i":123,` head read from the bytes (the records write `i` first), else from the parsed line. */
function lineIndex(bytes: Buffer, start: number, end: number): number | undefined {
  if (bytes.compare(LINE_HEAD, 0, LINE_HEAD.length, start, Math.min(end, start + LINE_HEAD.length)) === 0) {
    let index = 0;
    let at = start + LINE_HEAD.length;
    for (; at < end && bytes[at]! >= 0x30 && bytes[at]! <= 0x39 && at - start < LINE_HEAD.length + 15; at++)
      index = index * 10 + (bytes[at]! - 0x30);
    if (at > start + LINE_HEAD.length && bytes[at] === 0x2c) return index;
  }
  try {
    const { i } = JSON.parse(bytes.toString('utf8', start, end)) as { i?: unknown };
    return Number.isSafeInteger(i) ? (i as number) : undefined;
  } catch {
    // Unparsable: the row is not kept, and its entry is read from the ledger.
    return undefined;
  }
}
