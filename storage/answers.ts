import { createHash } from 'node:crypto';
import { runMetaKey } from '../lib/shared/constants';
import { openStorage } from './index';

// Paid provider answers, kept in the run's storage the moment they arrive and before any local step
// that can fail (decoding, encoding, writing the output, the ledger). A retry after such a failure
// finishes from the stored answer without calling the provider again: no answer is paid for twice.
// Image bytes are content-addressed per row (answers/objects/<index>/<sha256>); one small record per row and call
// (answers/<index>-<call>.json) names them, with the row digest it answers, so an answer is never
// reused for a row that changed. Records are removed once the row's ledger entry is committed.

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
  images: Array<{ sha256: string; mimeType: string }>;
  storedAt: string;
}

function recordKey(index: number, call: number): string {
  return runMetaKey(`answers/${String(index).padStart(6, '0')}-${call}.json`);
}

/**
 * Image bytes by content, per row: rows often get byte-identical answers (the same input and a
 * similar instruction), and one row's clean-up must never remove an answer another row still holds.
 */
function objectKey(index: number, sha256: string): string {
  return runMetaKey(`answers/objects/${String(index).padStart(6, '0')}/${sha256}`);
}

/** Stores an answer; images first, then the record that names them. */
export async function storeAnswer(
  outputDir: string,
  index: number,
  call: number,
  digest: string | undefined,
  answer: StoredAnswer,
): Promise<void> {
  const storage = openStorage(outputDir);
  const images: AnswerRecord['images'] = [];
  for (const image of answer.images) {
    const sha256 = createHash('sha256').update(image.data).digest('hex');
    await storage.create(objectKey(index, sha256), image.data);
    images.push({ sha256, mimeType: image.mimeType });
  }
  const { images: _bytes, ...rest } = answer;
  const record: AnswerRecord = { ...rest, digest: digest ?? null, images, storedAt: new Date().toISOString() };
  await storage.write(recordKey(index, call), JSON.stringify(record));
}

/** The stored answer to this row's call, if there is one for what the row asks now. */
export async function storedAnswer(
  outputDir: string,
  index: number,
  call: number,
  digest: string | undefined,
): Promise<StoredAnswer | undefined> {
  const storage = openStorage(outputDir);
  const bytes = await storage.read(recordKey(index, call));
  if (!bytes) return undefined;
  const record = JSON.parse(bytes.toString('utf8')) as AnswerRecord;
  if ((record.digest ?? undefined) !== digest) return undefined;
  const images: StoredAnswerImage[] = [];
  for (const image of record.images) {
    const data = await storage.read(objectKey(index, image.sha256));
    if (!data) return undefined;
    images.push({ data, mimeType: image.mimeType });
  }
  const { digest: _digest, storedAt: _at, images: _refs, ...rest } = record;
  return { ...rest, images };
}

/** Forgets a finished row's answers (its outputs and ledger entry now hold what they held). */
export async function clearAnswers(outputDir: string, index: number, calls: number): Promise<void> {
  const storage = openStorage(outputDir);
  for (let call = 0; call < calls; call++) {
    const bytes = await storage.read(recordKey(index, call));
    if (!bytes) continue;
    const record = JSON.parse(bytes.toString('utf8')) as AnswerRecord;
    for (const image of record.images) await storage.remove(objectKey(index, image.sha256));
    await storage.remove(recordKey(index, call));
  }
}
