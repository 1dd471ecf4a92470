import OpenAI, { APIError } from 'openai';
import { ClassifiedError } from '../../lib/shared/errors';
import { overallScore, type JudgeScores } from '../../lib/run/judgeScores';
import { estimateEnhancerCostUsd } from '../providers/models';
import { chatUsage } from '../providers/promptEnhance';
import { classifyOpenRouterError, dataUrl } from '../providers/openrouter/adapter';
import type { ProviderImage } from '../providers/provider';

// The judge: a vision-language model behind an OpenAI-compatible chat completions API (OpenAI,
// OpenRouter, a local vLLM or SGLang server) scores an edit the way VIEScore does (Ku et al.,
// "VIEScore: Towards Explainable Metrics for Conditional Image Synthesis Evaluation", ACL 2024;
// the protocol GEdit-Bench uses, Liu et al., "Step1X-Edit", 2025): the source image(s), the
// instruction and the edited image in one request, 0-10 scores for semantic consistency (here
// split, as VIEScore's editing prompt does, into instruction following and over-editing, i.e.
// preservation) and perceptual quality, and a short reason. The overall score is VIEScore's
// sqrt(min(SC) x PQ). SDK retries are off: Temporal retries.

const REQUEST_TIMEOUT_MS = 120_000;

/**
 * Models that take no sampling parameters: the GPT-5.x family (and the o-series reasoning models)
 * answer `temperature: 0` with 400 `unsupported_value` "Only the default (1) value is supported"
 * (tmc/langchaingo#1355, johny-b/llmcomp#69; checked 2026-12-07), directly and through OpenRouter
 * (`openai/...`). Gemini deprecated temperature/top_p/top_k on its latest models (changelog
 * 2026-07-21), so `google/gemini-3*` gets none either. Other models get `temperature: 0`; a server
 * that still answers `unsupported_value` for it is asked once more without it.
 */
const NO_SAMPLING = /^(openai\/)?(gpt-5|gpt-6|o\d)|^(google\/)?gemini-3/;

export function takesSamplingParams(model: string): boolean {
  return !NO_SAMPLING.test(model);
}

/** The answer's shape as a JSON schema (`response_format: json_schema`, strict): no free text to parse. */
function answerSchema(withSources: boolean) {
  const scoreField = { type: 'integer', minimum: 0, maximum: 10 };
  const fields = withSources
    ? ['instruction_following', 'preservation', 'quality', 'reason']
    : ['instruction_following', 'quality', 'reason'];
  return {
    type: 'json_schema' as const,
    json_schema: {
      name: 'edit_scores',
      strict: true,
      schema: {
        type: 'object',
        properties: Object.fromEntries(fields.map((f) => [f, f === 'reason' ? { type: 'string' } : scoreField])),
        required: fields,
        additionalProperties: false,
      },
    },
  };
}

/** A 400 about one request field (`param`), e.g. temperature or response_format. */
function rejectedParam(err: unknown): string | undefined {
  if (!(err instanceof APIError) || err.status !== 400) return undefined;
  const body = (err.error ?? {}) as { param?: unknown; code?: unknown; message?: unknown };
  const text = `${String(body.param ?? '')} ${String(body.message ?? err.message)}`;
  if (/temperature/.test(text) && /unsupported|not support|only the default/i.test(text)) return 'temperature';
  if (/response_format|json_schema/.test(text)) return 'response_format';
  return undefined;
}

/**
 * Errors that say the judge model itself will not take the request (unknown model, a rejected
 * parameter, no access): every row would get the same answer, so they are a configError, which
 * stops the judge run with the provider's reason instead of failing it row by row.
 */
function modelRefusal(err: unknown, model: string): ClassifiedError | undefined {
  if (!(err instanceof APIError) || err.status === undefined) return undefined;
  const body = (err.error ?? {}) as { code?: unknown; message?: unknown };
  const code = String(body.code ?? '');
  const words = typeof body.message === 'string' ? body.message : err.message;
  const refused =
    err.status === 401 ||
    err.status === 403 ||
    err.status === 404 ||
    (err.status === 400 && /^(model_not_found|unsupported_value|unsupported_parameter|invalid_model)$/.test(code));
  if (!refused) return undefined;
  return new ClassifiedError(
    'configError',
    `the judge model ${model} refused the request (${err.status}${code ? ` ${code}` : ''}): ${words}`,
    {
      status: err.status,
      ...(err.requestID ? { requestId: err.requestID } : {}),
    },
  );
}

export const JUDGE_SYSTEM_PROMPT = [
  'You are a meticulous evaluator of image edits.',
  'You get an edit instruction, the source image or images it was applied to, and, as the last image, the edited result.',
  'Rate the edited result on three scales from 0 to 10 (integers):',
  'instruction_following: how completely and exactly the edited image carries out the instruction (0: not at all, 10: perfectly);',
  'preservation: whether everything the instruction did not ask to change is left as it was in the source (0: a different picture or heavily over-edited, 10: only the requested change was made);',
  'quality: how natural the edited image looks and how free it is of artifacts, distortions or blur (0: broken, 10: flawless).',
  'Answer with one JSON object and nothing else:',
  '{"instruction_following": <0-10>, "preservation": <0-10>, "quality": <0-10>, "reason": "<one sentence>"}',
].join(' ');

/** For rows with no source image: nothing to preserve. */
export const JUDGE_T2I_SYSTEM_PROMPT = [
  'You are a meticulous evaluator of generated images.',
  'You get an instruction and the image generated for it.',
  'Rate the image on two scales from 0 to 10 (integers):',
  'instruction_following: how completely and exactly the image shows what the instruction asks (0: not at all, 10: perfectly);',
  'quality: how natural the image looks and how free it is of artifacts, distortions or blur (0: broken, 10: flawless).',
  'Answer with one JSON object and nothing else:',
  '{"instruction_following": <0-10>, "quality": <0-10>, "reason": "<one sentence>"}',
].join(' ');

export interface JudgeRequest {
  /** The instruction turns, in order. */
  turns: string[];
  sources: ProviderImage[];
  edited: ProviderImage;
  signal?: AbortSignal;
}

export interface JudgeAnswer {
  scores: JudgeScores;
  reason: string;
  requestId?: string;
  usage?: Record<string, number>;
  /** What the call cost: as the server reported, else the model's token prices; undefined if unknown. */
  costUsd?: number;
}

export interface JudgeClient {
  readonly secrets: readonly string[];
  judge(model: string, request: JudgeRequest): Promise<JudgeAnswer>;
}

function score(value: unknown, name: string): number {
  const n = typeof value === 'string' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0 || n > 10)
    throw new ClassifiedError('retryable', `the judge's ${name} is not a score from 0 to 10: ${JSON.stringify(value)}`);
  return n;
}

/** The scores in a judge's answer (a JSON object, possibly in a code fence or after some words). */
export function parseJudgeAnswer(text: string, withSources: boolean): { scores: JudgeScores; reason: string } {
  const start = text.indexOf('{');
  const end = text.lastIndexOf('}');
  let parsed: Record<string, unknown>;
  try {
    if (start < 0 || end < start) throw new Error('no JSON object');
    parsed = JSON.parse(text.slice(start, end + 1)) as Record<string, unknown>;
  } catch {
    throw new ClassifiedError('retryable', `the judge did not answer with a JSON object: ${JSON.stringify(text.slice(0, 200))}`);
  }
  const instructionFollowing = score(parsed.instruction_following, 'instruction_following');
  const preservation = withSources ? score(parsed.preservation, 'preservation') : null;
  const quality = score(parsed.quality, 'quality');
  const reason = typeof parsed.reason === 'string' ? parsed.reason.trim().split('\n')[0]!.slice(0, 500) : '';
  return {
    scores: { instructionFollowing, preservation, quality, overall: overallScore(instructionFollowing, preservation, quality) },
    reason,
  };
}

export function createJudgeClient(options: { apiKey: string; baseURL?: string | undefined; timeoutMs?: number }): JudgeClient {
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseURL,
    maxRetries: 0,
    timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS,
  });
  return {
    secrets: [options.apiKey],
    async judge(model, request) {
      const withSources = request.sources.length > 0;
      const instruction = request.turns.length > 1 ? request.turns.map((t, i) => `${i + 1}. ${t}`).join('\n') : request.turns[0]!;
      const content: OpenAI.ChatCompletionContentPart[] = [
        { type: 'text', text: `Instruction${request.turns.length > 1 ? 's, applied in turn' : ''}:\n${instruction}` },
        ...(withSources ? [{ type: 'text' as const, text: `Source image${request.sources.length > 1 ? 's' : ''}:` }] : []),
        ...request.sources.map((image) => ({ type: 'image_url' as const, image_url: { url: dataUrl(image) } })),
        { type: 'text', text: withSources ? 'Edited result:' : 'Generated image:' },
        { type: 'image_url', image_url: { url: dataUrl(request.edited) } },
      ];
      let completion: OpenAI.ChatCompletion | undefined;
      let headerId: string | null = null;
      // Sampling parameters only where the model takes them; structured output where the server
      // takes it. A server that rejects either is asked once more without it.
      let sampling = takesSamplingParams(model);
      let structured = true;
      for (let tries = 0; !completion; tries++) {
        try {
          const result = await client.chat.completions
            .create(
              {
                model,
                messages: [
                  { role: 'system', content: withSources ? JUDGE_SYSTEM_PROMPT : JUDGE_T2I_SYSTEM_PROMPT },
                  { role: 'user', content },
                ],
                ...(sampling ? { temperature: 0 } : {}),
                ...(structured ? { response_format: answerSchema(withSources) } : {}),
              },
              request.signal ? { signal: request.signal } : {},
            )
            .withResponse();
          completion = result.data;
          headerId = result.request_id;
        } catch (err) {
          const param = tries < 2 ? rejectedParam(err) : undefined;
          if (param === 'temperature' && sampling) sampling = false;
          else if (param === 'response_format' && structured) structured = false;
          else throw modelRefusal(err, model) ?? classifyOpenRouterError(err, client.baseURL);
        }
      }
      const requestId = completion?.id ?? headerId ?? undefined;
      const choice = completion?.choices?.[0];
      if (choice?.finish_reason === 'content_filter' || choice?.message?.refusal) {
        throw new ClassifiedError(
          'blocked',
          `the judge refused: ${choice?.message?.refusal ?? 'content_filter'}`,
          requestId ? { requestId } : {},
        );
      }
      const { scores, reason } = parseJudgeAnswer(choice?.message?.content ?? '', withSources);
      const usage = chatUsage(completion.usage);
      const costUsd = estimateEnhancerCostUsd(model, usage);
      return {
        scores,
        reason,
        ...(requestId ? { requestId } : {}),
        ...(usage ? { usage } : {}),
        ...(costUsd !== undefined ? { costUsd } : {}),
      };
    },
  };
}
