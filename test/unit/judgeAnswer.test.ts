import { describe, expect, it } from 'vitest';
import { parseJudgeAnswer } from '../../activities/judge/client';
import type { ClassifiedError } from '../../lib/shared/errors';
import { overallScore } from '../../lib/run/judgeScores';

describe('the judge answer (VIEScore-style)', () => {
  it('reads the JSON object a chat model answers with, fenced or after some words', () => {
    const fenced = parseJudgeAnswer(
      'Here you go:\n```json\n{"instruction_following": 6, "preservation": 9, "quality": 8, "reason": "Good.\\nMore."}\n```',
      true,
    );
    expect(fenced).toEqual({
      scores: { instructionFollowing: 6, preservation: 9, quality: 8, overall: overallScore(6, 9, 8) },
      reason: 'Good.',
    });
    // Overall: sqrt(min(instruction following, preservation) x quality), as VIEScore's O = sqrt(min SC x min PQ).
    expect(overallScore(6, 9, 8)).toBeCloseTo(Math.sqrt(48), 2);
    expect(overallScore(9, 4, 9)).toBe(6);
    expect(overallScore(0, 9, 9)).toBe(0);
  });

  it('a text-to-image row has no preservation score', () => {
    expect(parseJudgeAnswer('{"instruction_following": 4, "quality": 9, "reason": "ok"}', false).scores).toEqual({
      instructionFollowing: 4,
      preservation: null,
      quality: 9,
      overall: 6,
    });
  });

  it('prose, a missing score or one outside 0-10 is a retryable error naming it', () => {
    const kind = (text: string) => {
      try {
        parseJudgeAnswer(text, true);
        return 'parsed';
      } catch (err) {
        return `${(err as ClassifiedError).kind}: ${(err as Error).message}`;
      }
    };
    expect(kind('Looks great!')).toMatch(/^retryable: the judge did not answer with a JSON object/);
    expect(kind('{"instruction_following": 4, "quality": 9}')).toMatch(
      /^retryable: the judge's preservation is not a score from 0 to 10: undefined/,
    );
    expect(kind('{"instruction_following": 11, "preservation": 2, "quality": 9}')).toMatch(
      /instruction_following is not a score from 0 to 10: 11/,
    );
  });
});
