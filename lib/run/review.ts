import { openStorage } from '../../storage';
import { layout, rowRecordIndex } from './runStore';

// A person's verdict on a row's output, from the viewer (`atelier view`): accepted or rejected.
// Kept with the run, beside its ledger, one small object per row written whole (temp file + rename
// on a disk, one PUT on S3), so two marks on different rows never overwrite each other and a crash
// never leaves half a mark. The mark names the ledger entry it judged (its finish time): a redone
// row's new output has not been judged yet.

export type ReviewVerdict = 'accepted' | 'rejected';

export interface ReviewMark {
  index: number;
  verdict: ReviewVerdict;
  /** Why a rejected output was rejected (a preset of the viewer's or the person's own words). */
  reason?: string;
  /** The outputs the person saw (relative to the output dir). */
  outputImages: string[];
  /** `finishedAt` of the ledger entry that made them. */
  entryFinishedAt: string;
  at: string;
}

const REVIEW = layout.review;

function markKey(index: number): string {
  return layout.reviewMark(index);
}

export function isVerdict(value: unknown): value is ReviewVerdict {
  return value === 'accepted' || value === 'rejected';
}

/** The longest reject reason kept: a note, not a report. */
export const MAX_REVIEW_REASON = 500;

export async function writeReviewMark(outputDir: string, mark: ReviewMark): Promise<void> {
  await openStorage(outputDir).write(markKey(mark.index), `${JSON.stringify(mark)}\n`);
}

export async function clearReviewMark(outputDir: string, index: number): Promise<void> {
  await openStorage(outputDir).remove(markKey(index));
}

/** Every row's mark, by index (one listing, then a read per marked row). */
export async function readReviewMarks(outputDir: string): Promise<Map<number, ReviewMark>> {
  const storage = openStorage(outputDir);
  const names = (await storage.list(REVIEW)).filter((n) => rowRecordIndex(n) !== undefined);
  const marks = new Map<number, ReviewMark>();
  await Promise.all(
    names.map(async (name) => {
      const bytes = await storage.read(`${REVIEW}/${name}`);
      if (bytes) {
        const mark = JSON.parse(bytes.toString('utf8')) as ReviewMark;
        marks.set(mark.index, mark);
      }
    }),
  );
  return marks;
}

/** A mark holds for a row only while its ledger entry is the one that was judged. */
export function markStillHolds(mark: ReviewMark | undefined, entry: { finishedAt: string } | undefined): ReviewMark | undefined {
  return mark && entry && mark.entryFinishedAt === entry.finishedAt ? mark : undefined;
}
