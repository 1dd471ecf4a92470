import OpenAI from 'openai';
import { ClassifiedError } from '../../lib/shared/errors';
import { classifyOpenRouterError, dataUrl } from './openrouter/adapter';
import type { ProviderImage } from './provider';

// `--prompt-enhance`: an OpenAI-compatible chat model (OpenAI, OpenRouter, a local vLLM...) rewrites
// each instruction into a precise, self-contained edit instruction before the edit, optionally
// looking at the row's images. Errors are classified like the OpenAI adapter's (plus OpenRouter's
// 402 and moderation 403); SDK retries are off, Temporal retries.

const REQUEST_TIMEOUT_MS = 60_000;

/** A chat completion's token counts (and OpenRouter's `cost`), under the ledger's usage names. */
export function chatUsage(usage: OpenAI.CompletionUsage | undefined): Record<string, number> | undefined {
  if (!usage) return undefined;
  const u = usage as OpenAI.CompletionUsage & { cost?: number };
  return Object.fromEntries(
    Object.entries({
      inputTokens: u.prompt_tokens,
      outputTokens: u.completion_tokens,
      totalTokens: u.total_tokens,
      costUsd: u.cost,
    }).filter((e): e is [string, number] => typeof e[1] === 'number'),
  );
}

export const ENHANCE_SYSTEM_PROMPT = [
  'You rewrite instructions for an image-editing model.',
  'You get one edit instruction from a user and, when attached, the image or images it applies to.',
  'Write a single precise, self-contained edit instruction that the editing model can follow without the conversation:',
  'say exactly what to change, where in the image, and how the result should look (colours, materials, lighting, style), and state that everything else stays unchanged.',
  "Keep the user's intent: do not add objects, styles or changes they did not ask for, and do not drop anything they asked for.",
  'When there are several images, refer to them as "the first image", "the second image", and so on.',
  'Keep any text that must appear in the image verbatim, in its original language.',
  'Answer with the rewritten instruction only: no preamble, no quotes, no lists, no markdown, at most 120 words.',
].join(' ');

export interface PromptEnhancerOptions {
  apiKey: string;
  /** OpenAI-compatible base URL (ends in /v1 or /api/v1); default OpenAI's. */
  baseURL?: string | undefined;
  /** The chat model that rewrites, e.g. gpt-4.1-mini or google/gemini-2.5-flash. */
  model: string;
  timeoutMs?: number;
  /** Replaces ENHANCE_SYSTEM_PROMPT. */
  systemPrompt?: string;
}

export interface EnhanceRequest {
  instruction: string;
  /** The row's input images, when the enhancer should see them. */
  images?: ProviderImage[];
  signal?: AbortSignal;
}

export interface EnhanceResult {
  text: string;
  requestId?: string;
  /** inputTokens, outputTokens, totalTokens, costUsd (when the server reports it). */
  usage?: Record<string, number>;
}

export interface PromptEnhancer {
  /** Values that must never appear in anything recorded (the key). */
  readonly secrets: readonly string[];
  readonly model: string;
  enhance(request: EnhanceRequest): Promise<EnhanceResult>;
}

/** Strips what chat models wrap answers in: quotes, "Instruction:" labels, code fences. */
export function cleanEnhancedText(text: string): string {
  let out = text.trim();
  for (let previous = ''; previous !== out;) {
    previous = out;
    out = out.replace(/^```[a-z]*\s*|\s*```$/gi, '').trim();
    out = out
      .replace(/^(?:\*\*)?(?:rewritten |enhanced |edit |improved )?(?:instruction|prompt)\s*:?\s*(?:\*\*)?\s*:?\s*/i, (m) =>
        m.includes(':') ? '' : m,
      )
      .trim();
    const quoted = /^["'“”‘’](.*)["'“”‘’]$/s.exec(out);
    if (quoted) out = quoted[1]!.trim();
  }
  return out;
}

export function createPromptEnhancer(options: PromptEnhancerOptions): PromptEnhancer {
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseURL,
    maxRetries: 0,
    timeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS,
  });
  const system = options.systemPrompt ?? ENHANCE_SYSTEM_PROMPT;
  return {
    secrets: [options.apiKey],
    model: options.model,
    async enhance(request: EnhanceRequest): Promise<EnhanceResult> {
      const images = request.images ?? [];
      const content: OpenAI.ChatCompletionContentPart[] = [
        { type: 'text', text: `Instruction: ${request.instruction}` },
        ...images.map((image) => ({ type: 'image_url' as const, image_url: { url: dataUrl(image) } })),
      ];
      let completion: OpenAI.ChatCompletion;
      let headerId: string | null;
      try {
        const result = await client.chat.completions
          .create(
            {
              model: options.model,
              messages: [
                { role: 'system', content: system },
                { role: 'user', content },
              ],
            },
            request.signal ? { signal: request.signal } : {},
          )
          .withResponse();
        completion = result.data;
        headerId = result.request_id;
      } catch (err) {
        throw classifyOpenRouterError(err, client.baseURL);
      }
      const requestId = completion?.id ?? headerId ?? undefined;
      const details = requestId ? { requestId } : {};
      const choice = completion?.choices?.[0];
      if (choice?.finish_reason === 'content_filter' || choice?.message?.refusal) {
        throw new ClassifiedError('blocked', `the prompt enhancer refused: ${choice?.message?.refusal ?? 'content_filter'}`, details);
      }
      const text = cleanEnhancedText(choice?.message?.content ?? '');
      if (!text) throw new ClassifiedError('retryable', 'the prompt enhancer answered with no text', details);
      const usage = chatUsage(completion.usage);
      return { text, ...(requestId ? { requestId } : {}), ...(usage && Object.keys(usage).length ? { usage } : {}) };
    },
  };
}
