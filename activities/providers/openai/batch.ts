import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createInterface } from 'node:readline';
import OpenAI, { toFile } from 'openai';
import { batchRequestKey } from '../../../lib/shared/batch';
import type { PlanRow } from '../../../lib/run/plan';
import { ClassifiedError } from '../../../lib/shared/errors';
import { lineErrorType, type BatchClient, type BatchClientDeps, type ImageRef } from '../batchClient';
import { capabilities } from '../models';
import { classifyOpenAIError, openAIParams, usageOf as openAIUsage } from './adapter';

// OpenAI's Batch API for `atelier edit --batch`: JSON image edit lines in a JSONL file, each distinct
// input image uploaded once through the Files API (activities/batch.ts drives it).

function dataUrl(png: Buffer): string {
  return `data:image/png;base64,${png.toString('base64')}`;
}

/** OpenAI's JSON image reference: `{file_id}` for an uploaded image, else a data URL. */
function openAIImageRef(ref: ImageRef): { file_id: string } | { image_url: string } {
  return Buffer.isBuffer(ref) ? { image_url: dataUrl(ref) } : { file_id: ref.fileId };
}

export function openAIBatchClient(deps: BatchClientDeps): BatchClient {
  // SDK retries off: the activity's retry policy owns retries, as on the direct path.
  const client = new OpenAI({ apiKey: deps.apiKey, ...(deps.baseURL ? { baseURL: deps.baseURL } : {}), maxRetries: 0, timeout: 300_000 });
  const endpointFor = (row: PlanRow) => (row.images.length ? '/v1/images/edits' : '/v1/images/generations');
  return {
    // JSON edits take `images[].file_id` ([OA-edit]: "a fully qualified URL or base64 data URL" or
    // `file_id`): each distinct image is uploaded once (purpose `vision`), so a line is a few hundred
    // bytes and a job holds up to 50,000 rows instead of ~100 data-URL rows per 200 MB file.
    async uploadImage(png, label) {
      const hash = createHash('sha256').update(png).digest('hex');
      const file = await client.files.create({
        file: await toFile(png, `${label.replace(/[^A-Za-z0-9._-]/g, '_')}-${hash.slice(0, 32)}.png`, { type: 'image/png' }),
        purpose: 'vision',
      });
      return file.id;
    },
    async deleteFiles(fileIds) {
      for (const id of fileIds) {
        // Already gone (an earlier attempt deleted it): nothing to do.
        await client.files.delete(id).catch((err: unknown) => {
          if (!(err instanceof OpenAI.NotFoundError)) throw err;
        });
      }
    },
    requests(row, inputs, mask, spec) {
      const caps = capabilities('openai', spec.model);
      const request = { model: spec.model, prompt: row.turns[0]!, params: spec.params, numImages: row.outputs.length };
      const body = {
        model: spec.model,
        prompt: row.turns[0],
        ...openAIParams(request, caps, inputs.length ? 'edit' : 'generate'),
        ...(inputs.length ? { images: inputs.map(openAIImageRef) } : {}),
        ...(mask ? { mask: openAIImageRef(mask) } : {}),
      };
      return [
        { key: batchRequestKey(row.index), body: { custom_id: batchRequestKey(row.index), method: 'POST', url: endpointFor(row), body } },
      ];
    },
    async findTagged(spec, since) {
      // Newest first: stop at batches older than the job itself.
      for await (const batch of client.batches.list({ limit: 100 })) {
        if (batch.metadata?.atelier_job_id === spec.jobId) return batch.id;
        if (batch.created_at * 1000 < since) break;
      }
      return undefined;
    },
    async create(spec, requests) {
      const jsonl = `${requests.map((r) => JSON.stringify(r.body)).join('\n')}\n`;
      const endpoints = new Set(requests.map((r) => (r.body as { url: string }).url));
      if (endpoints.size > 1)
        throw new ClassifiedError('inputError', 'a batch job mixes edit and text-to-image rows; a batch has one endpoint');
      const file = await client.files.create({
        file: await toFile(Buffer.from(jsonl), `${spec.jobId.replace(/[^A-Za-z0-9._-]/g, '_')}.jsonl`),
        purpose: 'batch',
      });
      let batch;
      try {
        batch = await client.batches.create({
          input_file_id: file.id,
          endpoint: [...endpoints][0] as '/v1/images/edits',
          completion_window: '24h',
          metadata: { atelier_run_id: spec.runId.slice(0, 512), atelier_job_id: spec.jobId.slice(0, 512) },
        });
      } catch (err) {
        // No batch holds the input file: delete it, so a retried submit does not leave it behind.
        await client.files.delete(file.id).catch(() => undefined);
        throw err;
      }
      return { batchId: batch.id, inputFileId: file.id };
    },
    async status(batchId) {
      const b = await client.batches.retrieve(batchId);
      return {
        providerStatus: b.status,
        terminal: ['completed', 'failed', 'expired', 'cancelled'].includes(b.status),
        ...(b.request_counts
          ? { total: b.request_counts.total, completed: b.request_counts.completed, failed: b.request_counts.failed }
          : {}),
        ...(b.errors?.data?.length
          ? {
              error: b.errors.data
                .map((e) => `${e.line ? `line ${e.line}: ` : ''}${e.code ? `${e.code}: ` : ''}${e.message ?? ''}`)
                .slice(0, 5)
                .join('; '),
            }
          : {}),
      };
    },
    async results(batchId, each) {
      const b = await client.batches.retrieve(batchId);
      for (const fileId of [b.output_file_id, b.error_file_id]) {
        if (!fileId) continue;
        const response = await client.files.content(fileId);
        if (!response.body) continue;
        const lines = createInterface({ input: Readable.fromWeb(response.body as WebReadableStream), crlfDelay: Infinity });
        for await (const line of lines) {
          if (!line.trim()) continue;
          const record = JSON.parse(line) as {
            custom_id: string;
            response: {
              status_code: number;
              request_id?: string;
              body: OpenAI.ImagesResponse & { error?: { message?: string; code?: string } };
            } | null;
            error: { code?: string; message?: string } | null;
          };
          const r = record.response;
          if (r && r.status_code >= 200 && r.status_code < 300) {
            const images = (r.body.data ?? []).flatMap((d) => (d.b64_json ? [Buffer.from(d.b64_json, 'base64')] : []));
            const usage = openAIUsage(r.body.usage);
            await each(record.custom_id, {
              ok: true,
              images,
              ...(r.request_id ? { requestId: r.request_id } : {}),
              ...(usage ? { usage } : {}),
            });
          } else {
            const status = r?.status_code ?? 0;
            const code = r?.body?.error?.code ?? record.error?.code;
            const message = r?.body?.error?.message ?? record.error?.message ?? 'no answer';
            await each(record.custom_id, {
              ok: false,
              errorType: lineErrorType(status, code ?? undefined),
              error: `${status ? `${status} ` : ''}${code ? `${code}: ` : ''}${message}`,
            });
          }
        }
      }
    },
    async cancel(batchId) {
      await client.batches.cancel(batchId);
    },
    classify: (err) => classifyOpenAIError(err, client.baseURL),
  };
}
