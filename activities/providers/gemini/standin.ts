import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp from 'sharp';
import { createGeminiBatchApi, type GeminiBatchApi, type GeminiBatchOptions } from './standinBatch';
import {
  FaultScripts,
  listenOnLoopback,
  readBody,
  sendJson,
  sendStep,
  SlidingWindowLimiter,
  standinControls,
  type FaultStep,
  type Standin,
  type StandinOptions,
} from '../../../standins/server';

// A local stand-in for the Gemini API's `POST /v1beta/models/{model}:generateContent`, spoken
// closely enough for @google/genai: `x-goog-api-key` auth, camelCase JSON, candidates with parts,
// usageMetadata, and google.rpc error bodies (RetryInfo, QuotaFailure). It answers an edit with the
// image being edited colour-inverted (the first image of the newest user turn, else the last image
// the model produced earlier in the conversation: so a second turn edits the first turn's output),
// and a text-only request with a solid colour. Like Gemini 3, it checks thought signatures: a model
// turn sent back without the signature it was given is a 400. Models matching `thoughtImages` also
// emit an interim thought image first (clients must skip it). Scripted faults per prompt substring
// cover 429 (RetryInfo delay, per-day quota), 5xx, 400, safety finish reasons, blocked prompts,
// text-only answers, malformed bodies and delays; an optional rate limit answers 429 above R/s.
//
// It is a contract for the image models it knows (`GEMINI_MODELS`, listed at `GET /v1beta/models`
// as models.list serves them, paged), answering 400 INVALID_ARGUMENT like the real API to:
// - an aspect ratio the model does not take: 2.5 Flash Image and 3 Pro Image take 1:1, 2:3, 3:2,
//   3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9; 3.1 Flash Image also 1:4, 4:1, 1:8, 8:1
//   (ai.google.dev/gemini-api/docs/image-generation; docs.cloud.google.com 3-1-flash-image-preview);
// - an image size the model does not take: none on 2.5 Flash Image (one tier), 1K/2K/4K on 3 Pro
//   Image, 512/1K/2K/4K on 3.1 Flash Image (uppercase K; same pages);
// - more than 14 input images on the Gemini 3 image models ("up to 14 images in total", same page;
//   2.5 Flash Image "works best with up to 3" and has no documented hard limit, so none here);
// - a request body over 100 MB (Vertex: 500 MB): "Request payload size exceeds the limit: <n>
//   bytes." (the wording as answered at the old 20 MB limit; the limits: MAX_REQUEST_BYTES);
// - `responseModalities` other than TEXT and IMAGE.
// An unknown model id answers 404 NOT_FOUND as the API does, and so does a model shut down by the
// stand-in's clock `now` (by the Gemini API's dates, or Vertex's when it plays Vertex): ids are
// exact, a `-preview` id is its own model (shut down 2026-06-25 on the Gemini API, 2026-07-17 on
// Vertex), gemini-2.5-flash-image is gone from the Gemini API since 2026-10-02 but still served on
// Vertex (ai.google.dev/gemini-api/docs/deprecations, its changelog, and Vertex's model-versions page;
// checked 2026-12-07). `models.list` and `models.get` answer by the same dates. With
// `responseModalities: ['IMAGE']` the answer holds no text part.
//
// The Files API (ai.google.dev/gemini-api/docs/files; the protocol as @google/genai speaks it):
// `POST /upload/v1beta/files` with `X-Goog-Upload-Command: start` answers an `x-goog-upload-url`;
// chunks go to it with `upload` / `upload, finalize` and `X-Goog-Upload-Offset`, the last answered
// with `x-goog-upload-status: final` and the File (`name`, `uri`, `mimeType`, `state: ACTIVE`).
// Parts may then name it as `fileData: {fileUri, mimeType}`; an unknown file answers 403
// PERMISSION_DENIED as the API does. Uploaded bytes do not count toward the request limit.

export type { FaultStep } from '../../../standins/server';

const RATIOS_10 = ['1:1', '2:3', '3:2', '3:4', '4:3', '4:5', '5:4', '9:16', '16:9', '21:9'];

export interface GeminiModel {
  /** Id without `models/`, exact. */
  id: string;
  /** The day (YYYY-MM-DD, UTC) from which each API no longer serves it. */
  shutdown?: { gemini?: string; vertex?: string };
  displayName: string;
  aspectRatios: string[];
  imageSizes: string[];
  /** Hard input-image limit, when documented. */
  maxInputImages?: number;
}

const RATIOS_14 = [...RATIOS_10, '1:4', '4:1', '1:8', '8:1'];
const PREVIEW_SHUTDOWN = { gemini: '2026-06-25', vertex: '2026-07-17' };

export const GEMINI_MODELS: GeminiModel[] = [
  { id: 'gemini-2.5-flash-image', displayName: 'Nano Banana', aspectRatios: RATIOS_10, imageSizes: [], shutdown: { gemini: '2026-10-02' } },
  { id: 'gemini-3-pro-image', displayName: 'Nano Banana Pro', aspectRatios: RATIOS_10, imageSizes: ['1K', '2K', '4K'], maxInputImages: 14 },
  {
    id: 'gemini-3-pro-image-preview',
    displayName: 'Nano Banana Pro (preview)',
    aspectRatios: RATIOS_10,
    imageSizes: ['1K', '2K', '4K'],
    maxInputImages: 14,
    shutdown: PREVIEW_SHUTDOWN,
  },
  {
    id: 'gemini-3.1-flash-image',
    displayName: 'Nano Banana 2',
    aspectRatios: RATIOS_14,
    imageSizes: ['512', '1K', '2K', '4K'],
    maxInputImages: 14,
  },
  {
    id: 'gemini-3.1-flash-image-preview',
    displayName: 'Nano Banana 2 (preview)',
    aspectRatios: RATIOS_14,
    imageSizes: ['512', '1K', '2K', '4K'],
    maxInputImages: 14,
    shutdown: PREVIEW_SHUTDOWN,
  },
  // GA 2026-06-30, 1K only, 10 aspect ratios (ai.google.dev/gemini-api/docs/models/gemini-3.1-flash-lite-image).
  { id: 'gemini-3.1-flash-lite-image', displayName: 'Nano Banana 2 Lite', aspectRatios: RATIOS_10, imageSizes: ['1K'], maxInputImages: 14 },
  // 14 aspect ratios at 1K/2K/4K, no 512 (tanstack/ai @tanstack/ai-gemini@0.36.0).
  {
    id: 'gemini-nano-banana-2.1',
    displayName: 'Nano Banana 2.1',
    aspectRatios: RATIOS_14,
    imageSizes: ['1K', '2K', '4K'],
    maxInputImages: 14,
  },
];

/** Text models models.list also returns (so clients must filter); gemini-3-pro-preview shut down 2026-03-09. */
const TEXT_MODELS = ['gemini-2.5-flash'];

/** The model, when the API (Gemini, or Vertex) serves this exact id on this date. */
function geminiModel(id: string, now: Date, vertex = false): GeminiModel | undefined {
  const today = now.toISOString().slice(0, 10);
  const m = GEMINI_MODELS.find((g) => g.id === id);
  const shutdown = vertex ? m?.shutdown?.vertex : m?.shutdown?.gemini;
  return m && !(shutdown && today >= shutdown) ? m : undefined;
}

/**
 * Request payload limits: the Gemini API's 100 MB since 2026-01-08 (it was 20 MB; ai.google.dev
 * changelog), Vertex's 500 MB ([V-31] "Input size limit 500 MB"). Wording of the Gemini API's 400.
 */
const MAX_REQUEST_BYTES = { gemini: 100 * 1024 * 1024, vertex: 500 * 1024 * 1024 };

function googleError(code: number, status: string, message: string, details: unknown[] = []) {
  return { error: { code, message, status, ...(details.length ? { details } : {}) } };
}

/**
 * Vertex auth: the express-mode path (no project) takes an API key; a project path takes an OAuth
 * token (ADC) and answers a bare API key with Google's "API keys are not supported by this API".
 */
function vertexAuthProblem(route: VertexRoute, apiKey: string, bearer: boolean) {
  if (route.project) {
    if (bearer) return undefined;
    if (apiKey)
      return googleError(
        401,
        'UNAUTHENTICATED',
        'API keys are not supported by this API. Expected OAuth2 access token or other authentication credentials that assert a principal. See https://cloud.google.com/docs/authentication',
      );
  } else if (apiKey) return undefined;
  return googleError(
    401,
    'UNAUTHENTICATED',
    'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
  );
}

function candidateOnly(candidate: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return {
    candidates: [{ index: 0, ...candidate }],
    usageMetadata: { promptTokenCount: 20, candidatesTokenCount: 0, totalTokenCount: 20 },
    modelVersion: 'standin',
    responseId: `resp_standin_fault_${Math.random().toString(36).slice(2, 10)}`,
    ...extra,
  };
}

export const geminiFaults = {
  /** Per-minute rate limit: 429 RESOURCE_EXHAUSTED with a RetryInfo delay. */
  rateLimited: (retryDelaySeconds = 1): FaultStep => ({
    status: 429,
    body: googleError(429, 'RESOURCE_EXHAUSTED', 'You exceeded your current quota, please check your plan and billing details.', [
      {
        '@type': 'type.googleapis.com/google.rpc.QuotaFailure',
        violations: [
          {
            quotaMetric: 'generativelanguage.googleapis.com/generate_content_paid_tier_requests',
            quotaId: 'GenerateRequestsPerMinutePerProjectPerModel',
            quotaDimensions: { location: 'global', model: 'gemini-2.5-flash-image' },
            quotaValue: '10',
          },
        ],
      },
      {
        '@type': 'type.googleapis.com/google.rpc.Help',
        links: [{ description: 'Learn more about Gemini API quotas', url: 'https://ai.google.dev/gemini-api/docs/rate-limits' }],
      },
      { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${retryDelaySeconds}s` },
    ]),
  }),
  /** The daily quota is spent (retrying before midnight Pacific is pointless). */
  dailyQuota: (): FaultStep => ({
    status: 429,
    body: googleError(429, 'RESOURCE_EXHAUSTED', 'You exceeded your current quota, please check your plan and billing details.', [
      {
        '@type': 'type.googleapis.com/google.rpc.QuotaFailure',
        violations: [
          {
            quotaMetric: 'generativelanguage.googleapis.com/generate_content_free_tier_requests',
            quotaId: 'GenerateRequestsPerDayPerProjectPerModel-FreeTier',
            quotaDimensions: { location: 'global', model: 'gemini-2.5-flash-image' },
            quotaValue: '100',
          },
        ],
      },
      { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '43s' },
    ]),
  }),
  unavailable: (): FaultStep => ({
    status: 503,
    body: googleError(503, 'UNAVAILABLE', 'The model is overloaded. Please try again later.'),
  }),
  serverError: (): FaultStep => ({
    status: 500,
    body: googleError(
      500,
      'INTERNAL',
      'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting',
    ),
  }),
  invalidArgument: (message = 'Request contains an invalid argument.'): FaultStep => ({
    status: 400,
    body: googleError(400, 'INVALID_ARGUMENT', message),
  }),
  /** HTTP 200, no image, a safety finish reason. */
  finishReason: (reason = 'IMAGE_SAFETY'): FaultStep => ({
    status: 200,
    body: candidateOnly({
      content: { role: 'model', parts: [] },
      finishReason: reason,
      finishMessage:
        "Unable to show the generated image. The image was filtered out because it violated Google's Generative AI Prohibited Use policy.",
    }),
  }),
  /** HTTP 200, the prompt itself blocked (no candidates). */
  promptBlocked: (reason = 'PROHIBITED_CONTENT'): FaultStep => ({
    status: 200,
    body: {
      promptFeedback: { blockReason: reason },
      usageMetadata: { promptTokenCount: 20, totalTokenCount: 20 },
      modelVersion: 'standin',
      responseId: 'resp_standin_blocked',
    },
  }),
  /** HTTP 200, text and no image (the model chatted instead of drawing). */
  textOnly: (text = 'I can certainly help with that! What style would you like?'): FaultStep => ({
    status: 200,
    body: candidateOnly({ content: { role: 'model', parts: [{ text }] }, finishReason: 'STOP' }),
  }),
  malformed: (): FaultStep => ({ status: 200, raw: '{"candidates": [{"content": {"parts": [{"inlineData": ' }),
  slow: (delayMs: number): FaultStep => ({ status: 500, delayMs, body: googleError(500, 'INTERNAL', 'slow') }),
};

export interface GeminiStandinCall {
  model: string;
  /** Text of the newest user turn. */
  prompt: string;
  /** Number of contents (turns) sent, the newest included. */
  turns: number;
  /** Images in the newest user turn. */
  imageCount: number;
  imageTypes: string[];
  imageSizes: { width: number; height: number }[];
  /** Images in the whole request (history included). */
  totalImages: number;
  /** Thought signatures the request carried back in model turns. */
  signaturesReturned: string[];
  generationConfig: Record<string, unknown>;
  /** What the caller sent as x-goog-api-key (or ?key=). */
  apiKey: string;
  /** The request path (Vertex: the express or the project shape). */
  path: string;
  /** Vertex project mode: whether an OAuth bearer token came with the request. */
  bearer?: boolean;
  /** Run as a request of a batch job (activities/providers/gemini/standinBatch.ts), not called directly. */
  viaBatch?: boolean;
  status: number;
  at: number;
}

/** Base URL for the SDK's httpOptions.baseUrl (host root; the SDK adds /v1beta/...). Its 429 is RESOURCE_EXHAUSTED with Retry-After and RetryInfo. */
export interface GeminiStandin extends Standin<GeminiStandinCall> {
  /** Files uploaded through the Files API since the stand-in started (deleted ones included). */
  uploadedFiles(): number;
  /** Files stored now (uploads and batch outputs, less the deleted ones). */
  storedFiles(): number;
  /** Batch Mode (`batchGenerateContent`, `batches/*`): its jobs and counters. */
  batches: GeminiBatchApi;
}

/** Vertex AI's URL shape and auth (activities/providers/vertex/standin.ts); the request and answer rules are the same. */
interface VertexRoute {
  /** Project and location of a project path; both absent on the express-mode (API key) path. */
  project?: string;
  location?: string;
}

export interface GeminiStandinOptions extends StandinOptions {
  /** Serve Vertex AI's paths (`/v1beta1/[projects/{p}/locations/{l}/]publishers/google/models/{m}:generateContent`) instead of the Gemini API's. */
  vertex?: boolean;
  /** Models that emit an interim thought image before the answer (default: gemini-3 pro image models). */
  thoughtImages?: RegExp;
  /** Models that require thought signatures back on earlier model turns (default: gemini-3 models). */
  strictSignatures?: RegExp;
  /** Batch Mode's timing and faults. */
  batch?: GeminiBatchOptions;
  /** The stand-in's clock for model shutdowns (default: the real date). */
  now?: () => Date;
}

interface Part {
  text?: string;
  thought?: boolean;
  thoughtSignature?: string;
  inlineData?: { mimeType?: string; data?: string };
  fileData?: { fileUri?: string; mimeType?: string };
}
interface Content {
  role?: string;
  parts?: Part[];
}

export async function startGeminiStandin(options: GeminiStandinOptions = {}): Promise<GeminiStandin> {
  const calls: GeminiStandinCall[] = [];
  const scripts = new FaultScripts();
  const limiter = options.rateLimitPerSecond ? new SlidingWindowLimiter(options.rateLimitPerSecond) : undefined;
  const thoughtImages = options.thoughtImages ?? /^gemini-3-pro-image/;
  const strictSignatures = options.strictSignatures ?? /^gemini-3/;
  const issuedSignatures = new Set<string>();
  const now = options.now ?? (() => new Date());
  let counter = 0;
  const files = new Map<string, { mimeType: string; data: Buffer }>();
  let uploadCount = 0;
  const uploads = new Map<string, { mimeType: string; chunks: Buffer[]; size: number }>();
  let fileCounter = 0;
  let baseURL = '';
  const batchApi = createGeminiBatchApi(
    () => baseURL,
    {
      get: (name) => files.get(`${baseURL}/v1beta/${name}`),
      put: (mimeType, data) => {
        const name = `files/standin-output-${++fileCounter}`;
        files.set(`${baseURL}/v1beta/${name}`, { mimeType, data });
        return name;
      },
    },
    (model) => geminiModel(model, now()) !== undefined,
    options.batch ?? {},
  );

  async function handle(req: IncomingMessage, res: ServerResponse, model: string, url: URL, vertex?: VertexRoute): Promise<void> {
    const apiKey = String(req.headers['x-goog-api-key'] ?? url.searchParams.get('key') ?? '');
    let body: { contents?: Content[]; generationConfig?: Record<string, unknown> };
    const raw = (await readBody(req)).toString('utf8');
    try {
      body = JSON.parse(raw) as typeof body;
    } catch {
      return sendJson(res, 400, googleError(400, 'INVALID_ARGUMENT', `Invalid JSON payload received. Unexpected token.`));
    }
    // Parts naming an uploaded file read as its bytes from here on.
    let missingFile: string | undefined;
    const contents = (Array.isArray(body.contents) ? body.contents : []).map((c) => ({
      ...c,
      parts: (c.parts ?? []).map((p) => {
        if (!p.fileData) return p;
        const file = files.get(p.fileData.fileUri ?? '');
        if (!file) {
          missingFile ??= p.fileData.fileUri ?? '';
          return p;
        }
        const { fileData: _f, ...rest } = p;
        return { ...rest, inlineData: { mimeType: p.fileData.mimeType ?? file.mimeType, data: file.data.toString('base64') } };
      }),
    }));
    const newest = contents[contents.length - 1];
    const newestImages = (newest?.parts ?? []).filter((p) => p.inlineData?.data);
    const buffers = newestImages.map((p) => Buffer.from(p.inlineData!.data!, 'base64'));
    const metas = await Promise.all(
      buffers.map((b) =>
        sharp(b)
          .metadata()
          .catch(() => undefined),
      ),
    );
    const modelTurns = contents.filter((c) => c.role === 'model');
    const call: GeminiStandinCall = {
      model,
      prompt: (newest?.parts ?? [])
        .map((p) => p.text ?? '')
        .join(' ')
        .trim(),
      turns: contents.length,
      imageCount: newestImages.length,
      imageTypes: newestImages.map((p) => p.inlineData!.mimeType ?? ''),
      imageSizes: metas.map((m) => ({ width: m?.width ?? 0, height: m?.height ?? 0 })),
      totalImages: contents.flatMap((c) => c.parts ?? []).filter((p) => p.inlineData?.data && !p.thought).length,
      signaturesReturned: modelTurns.flatMap((c) => c.parts ?? []).flatMap((p) => (p.thoughtSignature ? [p.thoughtSignature] : [])),
      generationConfig: body.generationConfig ?? {},
      apiKey,
      path: url.pathname,
      ...(vertex ? { bearer: /^Bearer \S+/.test(String(req.headers.authorization ?? '')) } : {}),
      ...(req.headers['x-standin-batch'] ? { viaBatch: true } : {}),
      status: 200,
      at: Date.now(),
    };
    calls.push(call);
    const responseId = `resp_standin_${++counter}`;
    const reply = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      call.status = status;
      sendJson(res, status, payload, headers);
    };

    if (vertex) {
      const denied = vertexAuthProblem(vertex, apiKey, call.bearer ?? false);
      if (denied) return reply(401, denied);
    } else if (!apiKey)
      return reply(
        403,
        googleError(
          403,
          'PERMISSION_DENIED',
          "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        ),
      );
    if (limiter && !limiter.admit()) {
      return reply(
        429,
        googleError(429, 'RESOURCE_EXHAUSTED', 'Resource has been exhausted (e.g. check quota).', [
          { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '1s' },
        ]),
        { 'retry-after': '1' },
      );
    }
    const step = scripts.next(call.prompt);
    if (options.latencyMs) await sleep(options.latencyMs);
    if (step) {
      call.status = step.status;
      return sendStep(res, step, googleError(step.status, 'UNKNOWN', `scripted ${step.status}`));
    }

    if (missingFile !== undefined) {
      return reply(
        403,
        googleError(
          403,
          'PERMISSION_DENIED',
          `You do not have permission to access the File ${missingFile.replace(/^.*\/(files\/[^/?]+).*$/, '$1')} or it may not exist.`,
        ),
      );
    }
    const spec = geminiModel(model, now(), vertex !== undefined);
    if (!spec && vertex) {
      const name = `${vertex.project ? `projects/${vertex.project}/locations/${vertex.location}/` : ''}publishers/google/models/${model}`;
      return reply(
        404,
        googleError(
          404,
          'NOT_FOUND',
          `Publisher Model \`${name}\` was not found or your project does not have access to it. Please ensure you are using a valid model version. For more information, see: https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions`,
        ),
      );
    }
    if (!spec) {
      return reply(
        404,
        googleError(
          404,
          'NOT_FOUND',
          `models/${model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.`,
        ),
      );
    }
    const payloadLimit = vertex ? MAX_REQUEST_BYTES.vertex : MAX_REQUEST_BYTES.gemini;
    if (raw.length > payloadLimit) {
      return reply(400, googleError(400, 'INVALID_ARGUMENT', `Request payload size exceeds the limit: ${payloadLimit} bytes.`));
    }
    if (contents.length === 0 || !newest || newest.role === 'model') {
      return reply(400, googleError(400, 'INVALID_ARGUMENT', '* GenerateContentRequest.contents: contents is not specified'));
    }
    const config = body.generationConfig ?? {};
    const modalities = (config.responseModalities ?? ['TEXT', 'IMAGE']) as string[];
    if (!Array.isArray(modalities) || modalities.some((m) => !['TEXT', 'IMAGE'].includes(m))) {
      return reply(
        400,
        googleError(
          400,
          'INVALID_ARGUMENT',
          `* GenerateContentRequest.generation_config.response_modalities: unsupported modality ${JSON.stringify(modalities)}`,
        ),
      );
    }
    const imageConfig = (config.imageConfig ?? {}) as { aspectRatio?: string; imageSize?: string };
    if (imageConfig.aspectRatio !== undefined && !spec.aspectRatios.includes(imageConfig.aspectRatio)) {
      return reply(
        400,
        googleError(
          400,
          'INVALID_ARGUMENT',
          `Unsupported aspect ratio: ${imageConfig.aspectRatio}. ${spec.id} supports ${spec.aspectRatios.join(', ')}.`,
        ),
      );
    }
    if (imageConfig.imageSize !== undefined) {
      if (spec.imageSizes.length === 0)
        return reply(400, googleError(400, 'INVALID_ARGUMENT', 'Image size is not supported for this model.'));
      if (!spec.imageSizes.includes(imageConfig.imageSize)) {
        return reply(
          400,
          googleError(
            400,
            'INVALID_ARGUMENT',
            `Invalid image size: ${imageConfig.imageSize}. ${spec.id} supports ${spec.imageSizes.join(', ')} (uppercase K).`,
          ),
        );
      }
    }
    if (spec.maxInputImages !== undefined && call.totalImages > spec.maxInputImages) {
      return reply(
        400,
        googleError(
          400,
          'INVALID_ARGUMENT',
          `Too many input images: ${call.totalImages}. ${spec.id} supports at most ${spec.maxInputImages}.`,
        ),
      );
    }
    // Gemini 3: every earlier model turn must come back with its signatures (first part, images).
    if (strictSignatures.test(model)) {
      for (const [i, content] of contents.entries()) {
        if (content.role !== 'model') continue;
        const parts = content.parts ?? [];
        const firstAnswer = parts.findIndex((p) => !p.thought);
        for (const [j, part] of parts.entries()) {
          if (part.thought || (j !== firstAnswer && !part.inlineData)) continue;
          if (!part.thoughtSignature || !issuedSignatures.has(part.thoughtSignature)) {
            return reply(
              400,
              googleError(
                400,
                'INVALID_ARGUMENT',
                `Image part is missing a thought_signature in content position ${i + 1}, part position ${j + 1}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.`,
              ),
            );
          }
        }
      }
    }

    // The image to edit: this turn's first image, else the model's latest output, else none.
    let source: Buffer | undefined = buffers[0];
    if (!source) {
      for (const content of [...contents].reverse()) {
        const part = [...(content.parts ?? [])].reverse().find((p) => p.inlineData?.data && !p.thought);
        if (part) {
          source = Buffer.from(part.inlineData!.data!, 'base64');
          break;
        }
      }
    }
    let output: Buffer;
    try {
      if (source) output = await sharp(source).negate({ alpha: false }).png().toBuffer();
      else {
        const [w, h] = (imageConfig.aspectRatio ?? '1:1').split(':').map(Number) as [number, number];
        const scale = 64 / Math.max(w, h);
        const hue = [...call.prompt].reduce((a, c) => (a * 31 + c.charCodeAt(0)) % 360, 7);
        output = await sharp({
          create: {
            width: Math.max(1, Math.round(w * scale)),
            height: Math.max(1, Math.round(h * scale)),
            channels: 3,
            background: `hsl(${hue}, 70%, 50%)`,
          },
        })
          .png()
          .toBuffer();
      }
    } catch {
      return reply(
        400,
        googleError(
          400,
          'INVALID_ARGUMENT',
          'Unable to process input image. Please retry or report in https://developers.generativeai.google/guide/troubleshooting',
        ),
      );
    }
    const signature = () => {
      const sig = Buffer.from(`standin-signature-${counter}-${Math.random().toString(36).slice(2)}`).toString('base64');
      issuedSignatures.add(sig);
      return sig;
    };
    const parts: Part[] = [];
    if (thoughtImages.test(model)) {
      const draft = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#ff00ff' } })
        .png()
        .toBuffer();
      parts.push({ text: '**Planning the edit**\nI will adjust the colours as asked.', thought: true });
      parts.push({ inlineData: { mimeType: 'image/png', data: draft.toString('base64') }, thought: true });
    }
    const withText = modalities.includes('TEXT');
    if (withText) parts.push({ text: 'Here is the edited image.', thoughtSignature: signature() });
    parts.push({ inlineData: { mimeType: 'image/png', data: output.toString('base64') }, thoughtSignature: signature() });
    const imageTokens = /^gemini-2\.5/.test(model) ? 1290 : imageConfig.imageSize === '4K' ? 2000 : 1120;
    const promptTokens = 12 + call.totalImages * 258 + contents.length * 4;
    reply(200, {
      candidates: [{ content: { role: 'model', parts }, finishReason: 'STOP', index: 0 }],
      usageMetadata: {
        promptTokenCount: promptTokens,
        candidatesTokenCount: imageTokens + (withText ? 6 : 0),
        totalTokenCount: promptTokens + imageTokens + (withText ? 6 : 0) + (thoughtImages.test(model) ? 120 : 0),
        ...(thoughtImages.test(model) ? { thoughtsTokenCount: 120 } : {}),
        promptTokensDetails: [
          { modality: 'TEXT', tokenCount: promptTokens - call.totalImages * 258 },
          ...(call.totalImages ? [{ modality: 'IMAGE', tokenCount: call.totalImages * 258 }] : []),
        ],
        candidatesTokensDetails: [
          ...(withText ? [{ modality: 'TEXT', tokenCount: 6 }] : []),
          { modality: 'IMAGE', tokenCount: imageTokens },
        ],
      },
      modelVersion: model,
      responseId,
    });
  }

  /** models.list: `{models: [...], nextPageToken}`, paged by pageSize / pageToken. */
  function listModels(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const apiKey = String(req.headers['x-goog-api-key'] ?? url.searchParams.get('key') ?? '');
    if (!apiKey)
      return sendJson(
        res,
        403,
        googleError(
          403,
          'PERMISSION_DENIED',
          "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        ),
      );
    const all = [
      ...GEMINI_MODELS.filter((m) => geminiModel(m.id, now())).map((m) => ({
        id: m.id,
        displayName: m.displayName,
        outputTokenLimit: 32768,
      })),
      ...TEXT_MODELS.map((id) => ({ id, displayName: id, outputTokenLimit: 65536 })),
    ].map((m) => ({
      name: `models/${m.id}`,
      version: '001',
      displayName: m.displayName,
      description: '',
      inputTokenLimit: 65536,
      outputTokenLimit: m.outputTokenLimit,
      supportedGenerationMethods: ['generateContent', 'countTokens', 'batchGenerateContent'],
    }));
    // models.get: one model, or the API's 404 for an id it does not serve.
    const one = /^\/(?:v1beta|v1)\/models\/([^:/]+)$/.exec(url.pathname);
    if (one) {
      const id = decodeURIComponent(one[1]!);
      const hit = all.find((m) => m.name === `models/${id}`);
      return hit
        ? sendJson(res, 200, hit)
        : sendJson(
            res,
            404,
            googleError(
              404,
              'NOT_FOUND',
              `models/${id} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.`,
            ),
          );
    }
    const size = Math.max(1, Math.min(1000, Number(url.searchParams.get('pageSize') ?? 50) || 50));
    const start = Number(url.searchParams.get('pageToken') ?? 0) || 0;
    const page = all.slice(start, start + size);
    sendJson(res, 200, { models: page, ...(start + size < all.length ? { nextPageToken: String(start + size) } : {}) });
  }

  /** Files API uploads: start, then chunks to the upload URL, the last one finalizing. */
  async function upload(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const apiKey = String(req.headers['x-goog-api-key'] ?? url.searchParams.get('key') ?? '');
    const body = await readBody(req);
    if (!apiKey)
      return sendJson(
        res,
        403,
        googleError(
          403,
          'PERMISSION_DENIED',
          "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        ),
      );
    const command = String(req.headers['x-goog-upload-command'] ?? '')
      .split(',')
      .map((c) => c.trim());
    const id = url.searchParams.get('upload_id');
    if (command.includes('start')) {
      const uploadId = `standin-upload-${++fileCounter}`;
      uploads.set(uploadId, {
        mimeType: String(req.headers['x-goog-upload-header-content-type'] ?? 'application/octet-stream'),
        chunks: [],
        size: 0,
      });
      res.writeHead(200, {
        'x-goog-upload-url': `${baseURL}/upload/v1beta/files?upload_id=${uploadId}&upload_protocol=resumable`,
        'x-goog-upload-status': 'active',
        'content-type': 'application/json',
      });
      return void res.end('');
    }
    const pending = id ? uploads.get(id) : undefined;
    if (!pending || !command.includes('upload')) return sendJson(res, 400, googleError(400, 'INVALID_ARGUMENT', 'Invalid upload request.'));
    if (Number(req.headers['x-goog-upload-offset'] ?? -1) !== pending.size)
      return sendJson(res, 400, googleError(400, 'INVALID_ARGUMENT', 'Invalid upload offset.'));
    pending.chunks.push(body);
    pending.size += body.length;
    if (!command.includes('finalize')) {
      res.writeHead(200, { 'x-goog-upload-status': 'active' });
      return void res.end('');
    }
    uploads.delete(id!);
    const name = `files/${id!.replace('standin-upload-', 'standin')}`;
    const uri = `${baseURL}/v1beta/${name}`;
    const data = Buffer.concat(pending.chunks);
    files.set(uri, { mimeType: pending.mimeType, data });
    uploadCount += 1;
    const now = new Date();
    sendJson(
      res,
      200,
      {
        file: {
          name,
          mimeType: pending.mimeType,
          sizeBytes: String(data.length),
          createTime: now.toISOString(),
          updateTime: now.toISOString(),
          expirationTime: new Date(now.getTime() + 48 * 3600_000).toISOString(),
          uri,
          state: 'ACTIVE',
          source: 'UPLOADED',
        },
      },
      { 'x-goog-upload-status': 'final' },
    );
  }

  const { server, port } = await listenOnLoopback((req, res) => {
    const url = new URL(req.url ?? '/', 'http://standin');
    if (options.vertex) {
      const m = /^\/(v1|v1beta1)\/(?:projects\/([^/]+)\/locations\/([^/]+)\/)?publishers\/google\/models\/([^:/]+):generateContent$/.exec(
        url.pathname,
      );
      if (req.method !== 'POST' || !m)
        return sendJson(res, 404, googleError(404, 'NOT_FOUND', `Invalid URL (${req.method} ${url.pathname})`));
      const route: VertexRoute = m[2] ? { project: decodeURIComponent(m[2]), location: decodeURIComponent(m[3]!) } : {};
      handle(req, res, decodeURIComponent(m[4]!), url, route).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, googleError(500, 'INTERNAL', `stand-in failure: ${(err as Error).message}`));
      });
      return;
    }
    if (req.method === 'GET' && /^\/(v1beta|v1)\/models(\/[^:/]+)?$/.test(url.pathname)) return listModels(req, res, url);
    if (batchApi.route(req, res, url)) return;
    // files.delete: `DELETE /v1beta/files/{id}` answers `{}`; an unknown file 403 as on use.
    const del = /^\/v1beta\/(files\/[^:/]+)$/.exec(url.pathname);
    if (req.method === 'DELETE' && del) {
      const key = `${baseURL}/v1beta/${del[1]}`;
      if (!files.delete(key))
        return sendJson(
          res,
          403,
          googleError(403, 'PERMISSION_DENIED', `You do not have permission to access the File ${del[1]} or it may not exist.`),
        );
      return sendJson(res, 200, {});
    }
    if (req.method === 'POST' && /^\/upload\/v1beta\/files\/?$/.test(url.pathname)) {
      upload(req, res, url).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, googleError(500, 'INTERNAL', `stand-in failure: ${(err as Error).message}`));
      });
      return;
    }
    const match = /^\/(v1beta|v1|v1alpha)\/models\/([^:/]+):generateContent$/.exec(url.pathname);
    if (req.method === 'POST' && match) {
      handle(req, res, decodeURIComponent(match[2]!), url).catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, googleError(500, 'INTERNAL', `stand-in failure: ${(err as Error).message}`));
      });
      return;
    }
    sendJson(res, 404, googleError(404, 'NOT_FOUND', `Invalid URL (${req.method} ${url.pathname})`));
  }, options.port);
  const controls = standinControls(calls, scripts, server);
  baseURL = `http://127.0.0.1:${port}`;

  return {
    baseURL,
    uploadedFiles: () => uploadCount,
    storedFiles: () => files.size,
    batches: batchApi,
    ...controls,
    close: async () => {
      batchApi.stop();
      await controls.close();
    },
  };
}
