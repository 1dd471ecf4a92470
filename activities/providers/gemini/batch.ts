import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Content, GoogleGenAI, InlinedRequest, Part } from '@google/genai';
import { batchRequestKey, type BatchJobSpec } from '../../../lib/shared/batch';
import { boundedMessage, ClassifiedError } from '../../../lib/shared/errors';
import { ErrorTypes } from '../../../lib/shared/errorTypes';
import { lineErrorType, type BatchClient, type BatchClientDeps, type LineOutcome } from '../batchClient';
import { capabilities, supportsParam } from '../models';
import type * as GeminiAdapter from './adapter';
import { GEMINI_BATCH_LIMITS } from './spec';

// Gemini's Batch Mode for `atelier edit --batch`: inline requests under its inline limit, else a JSONL
// file, each distinct input image uploaded once through the Files API (activities/batch.ts drives it).

/**
 * The Gemini adapter (and @google/genai with it), loaded by a Gemini batch client's first call
 * rather than with this module: a worker serving only OpenAI never loads the Gemini SDK.
 */
let geminiAdapter: typeof GeminiAdapter | undefined;

function loadedGeminiAdapter(): typeof GeminiAdapter {
  if (!geminiAdapter) throw new Error('the Gemini adapter is used before a Gemini batch client loaded it');
  return geminiAdapter;
}

/** One GenerateContentResponse of a batch: its image, or why there is none. */
function geminiOutcome(response: {
  responseId?: string;
  promptFeedback?: { blockReason?: string };
  candidates?: { finishReason?: string; finishMessage?: string; content?: { parts?: Part[] } }[];
  usageMetadata?: {
    promptTokenCount?: number;
    candidatesTokenCount?: number;
    totalTokenCount?: number;
    thoughtsTokenCount?: number;
    candidatesTokensDetails?: { modality?: string; tokenCount?: number }[];
  };
}): LineOutcome {
  const block = response.promptFeedback?.blockReason;
  if (block && block !== 'BLOCKED_REASON_UNSPECIFIED')
    return { ok: false, errorType: ErrorTypes.blocked, error: `the prompt was blocked: ${block}` };
  const candidate = response.candidates?.[0];
  const finish = candidate?.finishReason;
  if (finish && loadedGeminiAdapter().BLOCKING_FINISH_REASONS.has(finish))
    return {
      ok: false,
      errorType: ErrorTypes.blocked,
      error: `the answer was withheld: ${finish}${candidate?.finishMessage ? ` (${candidate.finishMessage})` : ''}`,
    };
  const images = (candidate?.content?.parts ?? [])
    .filter((p) => !p.thought && p.inlineData?.data)
    .map((p) => Buffer.from(p.inlineData!.data!, 'base64'));
  // A batch answer cannot be asked again in place: no image is a retryable failure (the fallback decides).
  if (images.length === 0)
    return { ok: false, errorType: ErrorTypes.retryable, error: `no image in the answer${finish ? ` (finish reason ${finish})` : ''}` };
  const m = response.usageMetadata;
  const imageTokens = m?.candidatesTokensDetails?.filter((d) => d.modality === 'IMAGE').reduce((s, d) => s + (d.tokenCount ?? 0), 0);
  const usage: Record<string, number> = {};
  for (const [k, v] of Object.entries({
    inputTokens: m?.promptTokenCount,
    outputTokens: m?.candidatesTokenCount,
    totalTokens: m?.totalTokenCount,
    thoughtsTokens: m?.thoughtsTokenCount,
    outputImageTokens: imageTokens,
  })) {
    if (typeof v === 'number') usage[k] = v;
  }
  return { ok: true, images, ...(response.responseId ? { requestId: response.responseId } : {}), usage };
}

export function geminiBatchClient(deps: BatchClientDeps): BatchClient {
  let client: Promise<GoogleGenAI> | undefined;
  const genai = () =>
    (client ??= Promise.all([import('@google/genai'), import('./adapter')]).then(([sdk, adapter]) => {
      geminiAdapter = adapter;
      return new sdk.GoogleGenAI({ apiKey: deps.apiKey, ...(deps.baseURL ? { httpOptions: { baseUrl: deps.baseURL } } : {}) });
    }));
  const configFor = (spec: BatchJobSpec) => {
    const caps = capabilities('gemini', spec.model);
    const p = spec.params;
    const imageConfig = {
      ...(p.aspectRatio && supportsParam(caps, 'aspectRatio') ? { aspectRatio: p.aspectRatio } : {}),
      ...(p.imageSize && supportsParam(caps, 'imageSize') ? { imageSize: p.imageSize } : {}),
    };
    return {
      responseModalities: caps.imageOnlyResponse ? ['IMAGE'] : ['TEXT', 'IMAGE'],
      ...(Object.keys(imageConfig).length ? { imageConfig } : {}),
    };
  };
  return {
    // Batch requests take Files API parts (`fileData`, "supported in all … endpoints, including
    // Batch": ai.google.dev/gemini-api/docs/file-input-methods): each distinct image is uploaded once
    // and the requests name it, instead of inlining it in every request.
    async uploadImage(png, label) {
      const ai = await genai();
      const hash = createHash('sha256').update(png).digest('hex');
      const file = await ai.files.upload({
        file: new Blob([new Uint8Array(png)], { type: 'image/png' }),
        config: { mimeType: 'image/png', displayName: `${label}-${hash.slice(0, 32)}`.slice(0, 128) },
      });
      if (!file.uri) throw new ClassifiedError('retryable', 'the Files API answered without a file uri');
      return file.uri;
    },
    async deleteFiles(fileUris) {
      const ai = await genai();
      for (const uri of fileUris) {
        const name = /(files\/[^/?:]+)/.exec(uri)?.[1];
        if (!name) continue;
        // Already gone (an earlier attempt deleted it, or it expired after 48 hours): nothing to do.
        await ai.files.delete({ name }).catch(() => undefined);
      }
    },
    requests(row, inputs, _mask, spec) {
      const contents: Content[] = [
        {
          role: 'user',
          parts: [
            { text: row.turns[0]! },
            ...inputs.map((ref) =>
              Buffer.isBuffer(ref)
                ? { inlineData: { mimeType: 'image/png', data: ref.toString('base64') } }
                : { fileData: { fileUri: ref.fileId, mimeType: 'image/png' } },
            ),
          ],
        },
      ];
      // Gemini answers one image per call: --num-images N is N requests.
      return row.outputs.map((_, k) => ({ key: batchRequestKey(row.index, k), body: { contents, config: configFor(spec) } }));
    },
    async findTagged(spec, since) {
      const ai = await genai();
      const pager = await ai.batches.list({ config: { pageSize: 100 } });
      for await (const job of pager) {
        if (job.displayName === spec.jobId && job.name) return job.name;
        if (job.createTime && Date.parse(job.createTime) < since) break;
      }
      return undefined;
    },
    async create(spec, requests, bytes) {
      const ai = await genai();
      const inlineLimit = GEMINI_BATCH_LIMITS.maxInlineBytes!;
      if (bytes < inlineLimit * 0.95) {
        const src: InlinedRequest[] = requests.map((r) => ({ ...(r.body as InlinedRequest), metadata: { key: r.key } }));
        const job = await ai.batches.create({ model: spec.model, src, config: { displayName: spec.jobId } });
        return { batchId: job.name! };
      }
      // Over the inline limit: one GenerateContentRequest per JSONL line, through the Files API.
      const lines = requests.map((r) => {
        const { contents, config } = r.body as { contents: Content[]; config: Record<string, unknown> };
        return JSON.stringify({ key: r.key, request: { contents, generationConfig: config } });
      });
      const file = await ai.files.upload({
        file: new Blob([`${lines.join('\n')}\n`], { type: 'application/jsonl' }),
        config: { mimeType: 'application/jsonl', displayName: spec.jobId },
      });
      let job;
      try {
        job = await ai.batches.create({ model: spec.model, src: file.name!, config: { displayName: spec.jobId } });
      } catch (err) {
        // No batch holds the requests file: delete it, so a retried submit does not leave it behind.
        await ai.files.delete({ name: file.name! }).catch(() => undefined);
        throw err;
      }
      return { batchId: job.name!, inputFileId: file.name! };
    },
    async status(batchId) {
      const ai = await genai();
      const job = await ai.batches.get({ name: batchId });
      const state = String(job.state ?? 'JOB_STATE_UNSPECIFIED');
      return {
        providerStatus: state,
        terminal: [
          'JOB_STATE_SUCCEEDED',
          'JOB_STATE_FAILED',
          'JOB_STATE_CANCELLED',
          'JOB_STATE_EXPIRED',
          'JOB_STATE_PARTIALLY_SUCCEEDED',
        ].includes(state),
        ...(job.error?.message ? { error: job.error.message } : {}),
      };
    },
    async results(batchId, each) {
      const ai = await genai();
      const job = await ai.batches.get({ name: batchId });
      const inline = job.dest?.inlinedResponses;
      if (inline) {
        for (const [k, answer] of inline.entries()) {
          const key = answer.metadata?.key ?? String(k);
          if (answer.error)
            await each(key, {
              ok: false,
              errorType: lineErrorType(answer.error.code ?? 0, undefined),
              error: `${answer.error.code ?? ''} ${answer.error.message ?? ''}`.trim(),
            });
          else await each(key, geminiOutcome((answer.response ?? {}) as Parameters<typeof geminiOutcome>[0]));
        }
        return;
      }
      const fileName = job.dest?.fileName;
      if (!fileName) return;
      const dir = await mkdtemp(join(tmpdir(), 'atelier-batch-'));
      try {
        const path = join(dir, 'responses.jsonl');
        await ai.files.download({ file: fileName, downloadPath: path });
        for await (const line of createInterface({ input: createReadStream(path), crlfDelay: Infinity })) {
          if (!line.trim()) continue;
          const record = JSON.parse(line) as {
            key: string;
            response?: Parameters<typeof geminiOutcome>[0];
            error?: { code?: number; message?: string };
          };
          if (record.error)
            await each(record.key, {
              ok: false,
              errorType: lineErrorType(record.error.code ?? 0, undefined),
              error: `${record.error.code ?? ''} ${record.error.message ?? ''}`.trim(),
            });
          else await each(record.key, geminiOutcome(record.response ?? {}));
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
    async cancel(batchId) {
      const ai = await genai();
      await ai.batches.cancel({ name: batchId });
    },
    // Before the adapter is loaded, the only possible failure is its loading.
    classify: (err) =>
      geminiAdapter
        ? geminiAdapter.classifyGeminiError(err, undefined, deps.baseURL ?? geminiAdapter.DEFAULT_BASE_URL)
        : new ClassifiedError('retryable', boundedMessage(String(err))),
  };
}
