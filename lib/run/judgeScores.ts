import { openStorage } from '../../storage';
import { runMetaKey } from '../shared/constants';

// What the judge (`atelier judge`) said about a row's output, kept with the run beside its ledger:
// one object per row, written whole. A record holds only for the ledger entry it judged (its
// finish time), so a redone row is unscored until judged again.

export interface JudgeScores {
  /** 0-10: does the output do what the instruction asks (VIEScore's semantic consistency). */
  instructionFollowing: number;
  /** 0-10: is what the instruction did not ask to change left as it was (VIEScore's over-editing); null for text-to-image rows. */
  preservation: number | null;
  /** 0-10: natural, free of artifacts (VIEScore's perceptual quality). */
  quality: number;
  /** VIEScore's overall: sqrt(min(instruction following, preservation) x quality), 0-10. */
  overall: number;
}

export interface JudgeRecord {
  index: number;
  model: string;
  entryFinishedAt: string;
  scores: JudgeScores;
  /** The judge's one-line reason. */
  reason: string;
  requestId?: string;
  usage?: Record<string, number>;
  costUsd?: number;
  at: string;
}

const JUDGE = runMetaKey('judge');

function recordKey(index: number): string {
  return `${JUDGE}/${String(index).padStart(6, '0')}.json`;
}

/** VIEScore's overall score from the sub-scores (Ku et al. 2024, eq. O = sqrt(min SC x min PQ)). */
export function overallScore(instructionFollowing: number, preservation: number | null, quality: number): number {
  const semantic = preservation === null ? instructionFollowing : Math.min(instructionFollowing, preservation);
  return Math.round(Math.sqrt(semantic * quality) * 100) / 100;
}

export async function writeJudgeRecord(outputDir: string, record: JudgeRecord): Promise<void> {
  await openStorage(outputDir).write(recordKey(record.index), `${JSON.stringify(record)}\n`);
}

export async function readJudgeRecord(outputDir: string, index: number): Promise<JudgeRecord | undefined> {
  const bytes = await openStorage(outputDir).read(recordKey(index));
  return bytes ? (JSON.parse(bytes.toString('utf8')) as JudgeRecord) : undefined;
}

/** Every row's record, by index (one listing, then a read per scored row). */
export async function readJudgeRecords(outputDir: string): Promise<Map<number, JudgeRecord>> {
  const storage = openStorage(outputDir);
  const names = (await storage.list(JUDGE)).filter((n) => /^\d+\.json$/.test(n));
  const records = new Map<number, JudgeRecord>();
  await Promise.all(
    names.map(async (name) => {
      const bytes = await storage.read(`${JUDGE}/${name}`);
      if (bytes) {
        const record = JSON.parse(bytes.toString('utf8')) as JudgeRecord;
        records.set(record.index, record);
      }
    }),
  );
  return records;
}

/** A record holds for a row only while its ledger entry is the one that was judged. */
export function scoreStillHolds(record: JudgeRecord | undefined, entry: { finishedAt: string } | undefined): JudgeRecord | undefined {
  return record && entry && record.entryFinishedAt === entry.finishedAt ? record : undefined;
}
