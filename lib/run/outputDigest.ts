import { createHash } from 'node:crypto';
import type { OutputDigest } from './records';

// An output's bytes checked against what its row's commit recorded (the ledger entry's
// outputDigests): the export and the viewer publish an output only if it is the bytes the row made.

/** Why an output's bytes are not the ones its row's commit wrote, or undefined (also when none was recorded). */
export function replacedSince(bytes: Uint8Array, recorded: OutputDigest | undefined): string | undefined {
  if (!recorded) return undefined;
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (sha256 === recorded.sha256 && bytes.byteLength === recorded.size) return undefined;
  return `it is not what the row made (sha256 ${sha256.slice(0, 16)}…, ${bytes.byteLength} bytes; the commit recorded ${recorded.sha256.slice(0, 16)}…, ${recorded.size} bytes): it was replaced after the run`;
}
