import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { openAIErrorBody as errorBody, readBody, sendJson } from '../../../standins/server';

// The OpenAI stand-in's Files and Batch APIs, mounted by activities/providers/openai/standin.ts. Rules and their sources
// (developers.openai.com/api/reference: files, batches; openai-node 6.30.1 src/resources/batches.ts,
// files.ts; the batch guide developers.openai.com/api/docs/guides/batch):
// - `POST /v1/files` (multipart `file`, `purpose`): purpose one of assistants, batch, fine-tune,
//   vision, user_data, evals; a batch input file must be .jsonl and at most 200 MB. `GET
//   /v1/files/{id}`, `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`; an unknown id answers
//   404 "No such File object: <id>".
// - `POST /v1/batches` `{input_file_id, endpoint, completion_window, metadata?}`: endpoint one of
//   the documented ones (images edits and generations included); completion_window only `24h`;
//   metadata at most 16 pairs, keys up to 64 and values up to 512 characters; the file must exist and
//   have purpose `batch`.
// - Lifecycle: validating → in_progress → finalizing → completed, or failed (the input file is
//   invalid: each problem in `errors.data` with its line), expired (the window passed: requests not
//   run go to the error file as `batch_expired`), cancelling → cancelled (results so far are kept).
//   Validation: every line JSON with a unique `custom_id`, `method: POST`, `url` equal to the
//   batch's endpoint, one model for the whole file, at most 50,000 lines.
// - Results: an output file of `{id, custom_id, response: {status_code, request_id, body}, error:
//   null}` lines for 2xx answers, an error file for the others (and for requests not run), in any
//   order, keyed by custom_id.
// - `GET /v1/batches` lists newest first, cursor `after`, `limit` 1-100.
// Each line runs as a real request against this stand-in (header `x-standin-batch`), so batch
// lines meet exactly the rules, faults and images of direct calls; those calls carry `viaBatch`.
// Unverified: the wording of the validation errors and of cancelling a finished batch (the codes
// follow the API's usual shape).

const MB = 1024 * 1024;
const MAX_BATCH_FILE_BYTES = 200 * MB;
const MAX_BATCH_REQUESTS = 50_000;
const ENDPOINTS = [
  '/v1/responses',
  '/v1/chat/completions',
  '/v1/embeddings',
  '/v1/completions',
  '/v1/moderations',
  '/v1/images/generations',
  '/v1/images/edits',
];
const PURPOSES = ['assistants', 'batch', 'fine-tune', 'vision', 'user_data', 'evals'];

export interface OpenAIBatchOptions {
  /** Time in `validating` (default 50 ms). */
  validatingMs?: number;
  /** Least time in `in_progress`, however fast the lines run (default 100 ms). */
  inProgressMs?: number;
  /** Time in `finalizing` (default 50 ms). */
  finalizingMs?: number;
  /** Lines run at once (default 4). */
  concurrency?: number;
  /** The batch expires after running this many lines (the rest go to the error file as batch_expired). */
  expireAfterRequests?: number;
  /** Time in `cancelling` once no line is running (default 50 ms). */
  cancellingMs?: number;
  /** The next N `POST /v1/batches` answer 500 server_error (a transient fault after the uploads). */
  failCreates?: number;
  /** `POST /v1/files` answers after this long (a slow upload, or a worker stalled while it ran). */
  uploadDelayMs?: number;
}

export interface StoredFile {
  id: string;
  filename: string;
  purpose: string;
  bytes: Buffer;
  created_at: number;
}

type BatchStatus = 'validating' | 'failed' | 'in_progress' | 'finalizing' | 'completed' | 'expired' | 'cancelling' | 'cancelled';

export interface StoredBatch {
  id: string;
  object: 'batch';
  endpoint: string;
  errors: { object: 'list'; data: { code: string; message: string; param: string | null; line: number | null }[] } | null;
  input_file_id: string;
  completion_window: string;
  status: BatchStatus;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at: number | null;
  expires_at: number;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
  model?: string;
}

export interface OpenAIBatchApi {
  /** A stored file (the edits endpoint reads `file_id` image references from here). */
  file(id: string): StoredFile | undefined;
  /** Serves `/v1/files*` and `/v1/batches*`; false for any other path. */
  route(req: IncomingMessage, res: ServerResponse, path: string): boolean;
  /** Every batch created, oldest first. */
  readonly all: StoredBatch[];
  /** Files uploaded with purpose batch. */
  uploadsForBatch(): number;
  /** Bytes uploaded by clients (`POST /v1/files`, all purposes; not the output files) since the stand-in started. */
  uploadedBytes(): number;
  /** Files currently stored (deleted ones gone), by purpose. */
  storedFiles(purpose?: string): StoredFile[];
  /** Files uploaded by clients since the stand-in started (deleted ones included), by purpose. */
  uploadCount(purpose?: string): number;
  /** `POST /v1/batches/{id}/cancel` calls answered 200. */
  cancelCalls(): number;
  /** Changes the timing and faults for batches created from now on. */
  configure(options: OpenAIBatchOptions): void;
  stop(): void;
}

const seconds = () => Math.floor(Date.now() / 1000);

function notFoundFile(id: string) {
  return { error: { message: `No such File object: ${id}`, type: 'invalid_request_error', param: 'id', code: null } };
}

function notFoundBatch(id: string) {
  return { error: { message: `No batch found with id '${id}'.`, type: 'invalid_request_error', param: null, code: null } };
}

export function createOpenAIBatchApi(selfBaseURL: () => string, initial: OpenAIBatchOptions): OpenAIBatchApi {
  let options = { ...initial };
  const files = new Map<string, StoredFile>();
  const uploadsByPurpose = new Map<string, number>();
  const batches: StoredBatch[] = [];
  const timers = new Set<NodeJS.Timeout>();
  /** Batches whose lines have all run: what a cancel does to them (they keep every answer). */
  const cancelFinishers = new Map<string, () => void>();
  let counter = 0;
  let cancels = 0;
  let stopped = false;

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      if (!stopped) fn();
    }, ms);
    timers.add(t);
  };

  const id = (prefix: string) => `${prefix}-standin${String(++counter).padStart(6, '0')}`;

  let received = 0;
  function storeFile(filename: string, purpose: string, bytes: Buffer): StoredFile {
    const file = { id: id('file'), filename, purpose, bytes, created_at: seconds() };
    files.set(file.id, file);
    return file;
  }

  function fileObject(f: StoredFile) {
    return {
      id: f.id,
      object: 'file',
      bytes: f.bytes.length,
      created_at: f.created_at,
      filename: f.filename,
      purpose: f.purpose,
      status: 'processed',
      expires_at: null,
      status_details: null,
    };
  }

  function authorized(req: IncomingMessage, res: ServerResponse): string | undefined {
    const authorization = String(req.headers.authorization ?? '');
    if (!authorization.startsWith('Bearer ') || authorization.length <= 'Bearer '.length) {
      sendJson(res, 401, errorBody("You didn't provide an API key.", 'invalid_api_key'));
      return undefined;
    }
    return authorization;
  }

  async function uploadFile(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!authorized(req, res)) return;
    const raw = await readBody(req);
    if (options.uploadDelayMs) await sleep(options.uploadDelayMs);
    let form: FormData;
    try {
      form = await new Response(raw, { headers: { 'content-type': String(req.headers['content-type'] ?? '') } }).formData();
    } catch {
      return sendJson(res, 400, errorBody('Invalid multipart body; expected multipart/form-data.'));
    }
    const purpose = form.get('purpose');
    const upload = form.get('file');
    if (typeof purpose !== 'string')
      return sendJson(res, 400, errorBody("Missing required parameter: 'purpose'.", 'missing_required_parameter', 'purpose'));
    if (!PURPOSES.includes(purpose))
      return sendJson(
        res,
        400,
        errorBody(
          `Invalid value: '${purpose}'. Supported values are: ${PURPOSES.map((p) => `'${p}'`).join(', ')}.`,
          'invalid_value',
          'purpose',
        ),
      );
    if (!upload || typeof upload === 'string')
      return sendJson(res, 400, errorBody("Missing required parameter: 'file'.", 'missing_required_parameter', 'file'));
    const bytes = Buffer.from(await upload.arrayBuffer());
    if (purpose === 'batch') {
      if (!upload.name.endsWith('.jsonl'))
        return sendJson(res, 400, errorBody(`Invalid file format for Batch API. Must be .jsonl`, 'invalid_file_format', 'file'));
      if (bytes.length > MAX_BATCH_FILE_BYTES)
        return sendJson(
          res,
          400,
          errorBody(`File is too large for Batch API: ${bytes.length} bytes. The maximum is 200 MB.`, 'file_too_large', 'file'),
        );
    }
    received += bytes.length;
    uploadsByPurpose.set(purpose, (uploadsByPurpose.get(purpose) ?? 0) + 1);
    sendJson(res, 200, fileObject(storeFile(upload.name, purpose, bytes)));
  }

  /** The input file's problems, as the batch's `errors.data` (empty when it is valid). */
  function validate(batch: StoredBatch, lines: string[]): NonNullable<StoredBatch['errors']> {
    const data: NonNullable<StoredBatch['errors']>['data'] = [];
    const seen = new Set<string>();
    let model: string | undefined;
    if (lines.length > MAX_BATCH_REQUESTS)
      data.push({
        code: 'too_many_requests',
        message: `The input file has ${lines.length} requests; a batch takes at most ${MAX_BATCH_REQUESTS}.`,
        param: null,
        line: null,
      });
    if (lines.length === 0) data.push({ code: 'empty_file', message: 'The input file is empty.', param: null, line: null });
    for (const [i, text] of lines.entries()) {
      const line = i + 1;
      let request: { custom_id?: unknown; method?: unknown; url?: unknown; body?: { model?: unknown } };
      try {
        request = JSON.parse(text) as typeof request;
      } catch {
        data.push({ code: 'invalid_json_line', message: `This line is not parseable as valid JSON.`, param: null, line });
        continue;
      }
      if (typeof request.custom_id !== 'string' || !request.custom_id)
        data.push({ code: 'missing_required_parameter', message: "Missing required parameter: 'custom_id'.", param: 'custom_id', line });
      else if (seen.has(request.custom_id))
        data.push({
          code: 'duplicate_custom_id',
          message: `The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch.`,
          param: 'custom_id',
          line,
        });
      else seen.add(request.custom_id);
      if (request.method !== 'POST')
        data.push({ code: 'invalid_method', message: `Invalid value for 'method': only POST is supported.`, param: 'method', line });
      if (request.url !== batch.endpoint)
        data.push({
          code: 'mismatched_url',
          message: `The url for this request does not match the batch's endpoint ${batch.endpoint}.`,
          param: 'url',
          line,
        });
      const lineModel = typeof request.body?.model === 'string' ? request.body.model : undefined;
      if (model !== undefined && lineModel !== model)
        data.push({
          code: 'mismatched_model',
          message:
            'The provided model does not match the model of the other requests in the batch. All requests in a batch must use the same model.',
          param: 'body.model',
          line,
        });
      model ??= lineModel;
    }
    if (model) batch.model = model;
    return { object: 'list', data: data.slice(0, 100) };
  }

  async function runLine(
    authorization: string,
    text: string,
  ): Promise<{ custom_id: string; status: number; requestId: string; body: unknown }> {
    const request = JSON.parse(text) as { custom_id: string; url: string; body: unknown };
    const response = await fetch(`${selfBaseURL()}${request.url.replace(/^\/v1/, '')}`, {
      method: 'POST',
      headers: { authorization, 'content-type': 'application/json', 'x-standin-batch': '1' },
      body: JSON.stringify(request.body),
    });
    const raw = await response.text();
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      body = {
        error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null },
      };
    }
    return { custom_id: request.custom_id, status: response.status, requestId: response.headers.get('x-request-id') ?? id('req'), body };
  }

  /** Runs the batch's lines, then finalizes it (or leaves it to a cancel or an expiry). */
  async function run(batch: StoredBatch, authorization: string, lines: string[], settings: OpenAIBatchOptions): Promise<void> {
    const started = Date.now();
    const output: string[] = [];
    const errors: string[] = [];
    const limit = settings.expireAfterRequests ?? Infinity;
    let next = 0;
    let expired = false;
    const worker = async () => {
      while (next < lines.length && !stopped) {
        if (batch.status === 'cancelling') return;
        if (next >= limit) {
          expired = true;
          return;
        }
        const text = lines[next++]!;
        const result = await runLine(authorization, text).catch((err: unknown) => ({
          custom_id: (JSON.parse(text) as { custom_id: string }).custom_id,
          status: 500,
          requestId: id('req'),
          body: errorBody(`stand-in failure: ${(err as Error).message}`),
        }));
        const record = {
          id: id('batch_req'),
          custom_id: result.custom_id,
          response: { status_code: result.status, request_id: result.requestId, body: result.body },
          error: null,
        };
        if (result.status >= 200 && result.status < 300) {
          output.push(JSON.stringify(record));
          batch.request_counts.completed += 1;
        } else {
          errors.push(JSON.stringify(record));
          batch.request_counts.failed += 1;
        }
      }
    };
    await Promise.all(Array.from({ length: settings.concurrency ?? 4 }, worker));
    if (stopped) return;
    const notRun = (code: string, message: string) => {
      const done = new Set([...output, ...errors].map((l) => (JSON.parse(l) as { custom_id: string }).custom_id));
      for (const text of lines) {
        const customId = (JSON.parse(text) as { custom_id: string }).custom_id;
        if (!done.has(customId))
          errors.push(JSON.stringify({ id: id('batch_req'), custom_id: customId, response: null, error: { code, message } }));
      }
    };
    const writeFiles = () => {
      batch.output_file_id = output.length
        ? storeFile(`${batch.id}_output.jsonl`, 'batch_output', Buffer.from(`${output.join('\n')}\n`)).id
        : null;
      batch.error_file_id = errors.length
        ? storeFile(`${batch.id}_error.jsonl`, 'batch_output', Buffer.from(`${errors.join('\n')}\n`)).id
        : null;
    };
    if (batch.status === 'cancelling') {
      // Cancelled: what ran is kept; the rest never runs (it is not in either file).
      batch.status = 'cancelled';
      batch.cancelled_at = seconds();
      writeFiles();
      return;
    }
    if (expired) {
      notRun('batch_expired', 'This request could not be executed before the completion window expired.');
      batch.request_counts.failed = errors.length;
      batch.status = 'expired';
      batch.expired_at = seconds();
      writeFiles();
      return;
    }
    // Every line has run: a cancel from now on ends the batch soon, with all its answers.
    cancelFinishers.set(batch.id, () => {
      batch.status = 'cancelled';
      batch.cancelled_at = seconds();
      writeFiles();
    });
    later(Math.max(0, (settings.inProgressMs ?? 100) - (Date.now() - started)), () => {
      if (batch.status !== 'in_progress') return;
      cancelFinishers.delete(batch.id);
      batch.status = 'finalizing';
      batch.finalizing_at = seconds();
      later(settings.finalizingMs ?? 50, () => {
        writeFiles();
        batch.status = 'completed';
        batch.completed_at = seconds();
      });
    });
  }

  async function createBatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const authorization = authorized(req, res);
    if (!authorization) return;
    if (options.failCreates) {
      options.failCreates -= 1;
      await readBody(req);
      return sendJson(res, 500, {
        error: {
          message: 'The server had an error while processing your request. Sorry about that!',
          type: 'server_error',
          param: null,
          code: null,
        },
      });
    }
    let body: { input_file_id?: unknown; endpoint?: unknown; completion_window?: unknown; metadata?: unknown };
    try {
      body = JSON.parse((await readBody(req)).toString('utf8')) as typeof body;
    } catch {
      return sendJson(res, 400, errorBody('We could not parse the JSON body of your request.'));
    }
    for (const field of ['input_file_id', 'endpoint', 'completion_window'] as const) {
      if (typeof body[field] !== 'string')
        return sendJson(res, 400, errorBody(`Missing required parameter: '${field}'.`, 'missing_required_parameter', field));
    }
    const endpoint = String(body.endpoint);
    if (!ENDPOINTS.includes(endpoint))
      return sendJson(
        res,
        400,
        errorBody(
          `Invalid value: '${endpoint}'. Supported values are: ${ENDPOINTS.map((e) => `'${e}'`).join(', ')}.`,
          'invalid_value',
          'endpoint',
        ),
      );
    if (body.completion_window !== '24h')
      return sendJson(
        res,
        400,
        errorBody(`Invalid value: '${String(body.completion_window)}'. Supported values are: '24h'.`, 'invalid_value', 'completion_window'),
      );
    const metadata = body.metadata === undefined || body.metadata === null ? null : (body.metadata as Record<string, unknown>);
    if (metadata) {
      const entries = Object.entries(metadata);
      if (entries.length > 16)
        return sendJson(
          res,
          400,
          errorBody(
            `Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but got an object with ${entries.length} properties instead.`,
            'object_above_max_properties',
            'metadata',
          ),
        );
      const bad = entries.find(([k, v]) => k.length > 64 || typeof v !== 'string' || v.length > 512);
      if (bad)
        return sendJson(
          res,
          400,
          errorBody(
            `Invalid 'metadata.${bad[0]}': keys must be strings of at most 64 characters and values strings of at most 512 characters.`,
            'invalid_value',
            'metadata',
          ),
        );
    }
    const file = files.get(String(body.input_file_id));
    if (!file) return sendJson(res, 404, notFoundFile(String(body.input_file_id)));
    if (file.purpose !== 'batch')
      return sendJson(
        res,
        400,
        errorBody(
          `The file ${file.id} has purpose '${file.purpose}'; a batch input file must have purpose 'batch'.`,
          'invalid_file_purpose',
          'input_file_id',
        ),
      );
    const created = seconds();
    const batch: StoredBatch = {
      id: id('batch'),
      object: 'batch',
      endpoint,
      errors: null,
      input_file_id: file.id,
      completion_window: '24h',
      status: 'validating',
      output_file_id: null,
      error_file_id: null,
      created_at: created,
      in_progress_at: null,
      expires_at: created + 24 * 3600,
      finalizing_at: null,
      completed_at: null,
      failed_at: null,
      expired_at: null,
      cancelling_at: null,
      cancelled_at: null,
      request_counts: { total: 0, completed: 0, failed: 0 },
      metadata: metadata as Record<string, string> | null,
    };
    batches.push(batch);
    const settings = { ...options };
    const lines = file.bytes
      .toString('utf8')
      .split('\n')
      .filter((l) => l.trim() !== '');
    later(settings.validatingMs ?? 50, () => {
      if (batch.status !== 'validating') return;
      const problems = validate(batch, lines);
      if (problems.data.length) {
        batch.errors = problems;
        batch.status = 'failed';
        batch.failed_at = seconds();
        return;
      }
      batch.status = 'in_progress';
      batch.in_progress_at = seconds();
      batch.request_counts.total = lines.length;
      void run(batch, authorization, lines, settings);
    });
    sendJson(res, 200, batch);
  }

  function cancelBatch(req: IncomingMessage, res: ServerResponse, batchId: string): void {
    if (!authorized(req, res)) return;
    const batch = batches.find((b) => b.id === batchId);
    if (!batch) return sendJson(res, 404, notFoundBatch(batchId));
    if (!['validating', 'in_progress', 'finalizing', 'cancelling'].includes(batch.status)) {
      return sendJson(res, 409, errorBody(`Cannot cancel a batch with status '${batch.status}'.`, 'batch_not_cancellable'));
    }
    cancels += 1;
    if (batch.status === 'validating') {
      batch.status = 'cancelled';
      batch.cancelling_at = batch.cancelled_at = seconds();
    } else if (batch.status === 'finalizing') {
      // Too late to stop: it completes, as a real batch in finalizing may.
    } else if (batch.status === 'in_progress') {
      batch.status = 'cancelling';
      batch.cancelling_at = seconds();
      const finish = cancelFinishers.get(batch.id);
      if (finish) {
        cancelFinishers.delete(batch.id);
        later(options.cancellingMs ?? 50, finish);
      }
    }
    sendJson(res, 200, batch);
  }

  function listBatches(req: IncomingMessage, res: ServerResponse, url: URL): void {
    if (!authorized(req, res)) return;
    const limit = Math.max(1, Math.min(100, Number(url.searchParams.get('limit') ?? 20) || 20));
    const newestFirst = [...batches].reverse();
    const after = url.searchParams.get('after');
    const start = after ? newestFirst.findIndex((b) => b.id === after) + 1 : 0;
    const page = newestFirst.slice(start, start + limit);
    sendJson(res, 200, {
      object: 'list',
      data: page,
      first_id: page[0]?.id ?? null,
      last_id: page[page.length - 1]?.id ?? null,
      has_more: start + limit < newestFirst.length,
    });
  }

  function route(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    const url = new URL(req.url ?? '/', 'http://standin');
    const fail = (err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, errorBody(`stand-in failure: ${(err as Error).message}`));
    };
    if (path === '/v1/files' && req.method === 'POST') return (void uploadFile(req, res).catch(fail), true);
    let m = /^\/v1\/files\/([^/]+)(\/content)?$/.exec(path);
    if (m) {
      if (!authorized(req, res)) return true;
      const file = files.get(decodeURIComponent(m[1]!));
      if (!file) return (sendJson(res, 404, notFoundFile(decodeURIComponent(m[1]!))), true);
      if (req.method === 'DELETE' && !m[2]) {
        files.delete(file.id);
        return (sendJson(res, 200, { id: file.id, object: 'file', deleted: true }), true);
      }
      if (req.method !== 'GET') return false;
      if (!m[2]) return (sendJson(res, 200, fileObject(file)), true);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(file.bytes.length) });
      res.end(file.bytes);
      return true;
    }
    if (path === '/v1/batches') {
      if (req.method === 'POST') return (void createBatch(req, res).catch(fail), true);
      if (req.method === 'GET') return (listBatches(req, res, url), true);
      return false;
    }
    m = /^\/v1\/batches\/([^/]+)(\/cancel)?$/.exec(path);
    if (m) {
      const batchId = decodeURIComponent(m[1]!);
      if (m[2] && req.method === 'POST') return (cancelBatch(req, res, batchId), true);
      if (!m[2] && req.method === 'GET') {
        if (!authorized(req, res)) return true;
        const batch = batches.find((b) => b.id === batchId);
        return (batch ? sendJson(res, 200, batch) : sendJson(res, 404, notFoundBatch(batchId)), true);
      }
    }
    return false;
  }

  return {
    file: (fileId) => files.get(fileId),
    route,
    all: batches,
    uploadsForBatch: () => [...files.values()].filter((f) => f.purpose === 'batch').length,
    uploadedBytes: () => received,
    storedFiles: (purpose) => [...files.values()].filter((f) => !purpose || f.purpose === purpose),
    uploadCount: (purpose) => (purpose ? (uploadsByPurpose.get(purpose) ?? 0) : [...uploadsByPurpose.values()].reduce((a, b) => a + b, 0)),
    cancelCalls: () => cancels,
    configure(next) {
      options = { ...options, ...next };
    },
    stop() {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
    },
  };
}
