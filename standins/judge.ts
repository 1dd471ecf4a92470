import { startOpenRouterStandin, type ChatStandin, type ChatStandinOptions } from '../activities/providers/openrouter/standin';

// A stand-in judge: an OpenAI-compatible chat completions server (the OpenRouter stand-in's
// `/v1/chat/completions`, which holds requests to the API's rules: a Bearer key, a model, a user
// message, `image_url` content parts whose data URLs must decode as images, the API's error bodies)
// answering as a vision-language judge would: one JSON object with the scores the judge's system
// prompt asks for. Scores are scripted by markers in the instruction, so tests know what to expect:
// `judge-low` scores low, `judge-garbage` answers with prose (no JSON), anything else scores well
// (in a ```json fence, as chat models often answer).

export const JUDGE_ANSWERS = {
  good: {
    instruction_following: 8,
    preservation: 9,
    quality: 7,
    reason: 'The requested change is made cleanly and the rest of the image is untouched.',
  },
  low: { instruction_following: 2, preservation: 3, quality: 6, reason: 'The requested change is barely visible.' },
};

export function judgeAnswer(prompt: string, imageCount: number, system: string | undefined): string {
  if (imageCount === 0) return 'I cannot judge an edit without seeing the images.';
  if (prompt.includes('judge-garbage')) return 'Looks fine to me overall, nice work!';
  const answer = prompt.includes('judge-low') ? JUDGE_ANSWERS.low : JUDGE_ANSWERS.good;
  // The text-to-image prompt asks for no preservation score.
  const { preservation, ...rest } = answer;
  const fields = system?.includes('preservation') ? answer : rest;
  void preservation;
  return `\`\`\`json\n${JSON.stringify(fields)}\n\`\`\``;
}

export function startJudgeStandin(options: Omit<ChatStandinOptions, 'answer'> = {}): Promise<ChatStandin> {
  return startOpenRouterStandin({ compatible: true, ...options, answer: judgeAnswer });
}
