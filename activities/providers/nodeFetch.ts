import { randomBytes } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';

// A `fetch` for the OpenAI SDK's image calls over node:http, for the worker's CPU (issue 21): the
// platform's fetch (undici) sends a multipart body and reads the answer through web streams, which
// costs ~1.1–1.5 ms of CPU per call where node:http costs ~0.4 (bench/rowActivity; an image edit
// is one call per row). What it does is what fetch does for these requests: the same method, headers
// and body bytes (FormData encoded as multipart/form-data per RFC 7578, the same escapes as undici),
// connections kept alive (and, as undici does, dropped when the server's Keep-Alive hint runs out),
// a gzip/deflate/br answer decoded, an abort rejecting with the signal's reason, a failed connection
// rejecting as `TypeError: fetch failed` with the system error as its cause (the SDK reads both
// the same way). The answer is read whole before it resolves (image answers are read whole anyway),
// so the SDK's timeout covers the body too. Anything else it hands to the platform's fetch as it
// was given: a Request object, a body of another kind (a stream, a Blob), a URL with credentials or
// of another scheme, and a redirect (sent again through fetch, which follows it).

type FetchInit = RequestInit & { duplex?: string };

/** A form field name or file name in a Content-Disposition header, escaped as undici (and browsers) do. */
function escapeName(name: string): string {
  return name.replace(/\n/g, '%0A').replace(/\r/g, '%0D').replace(/"/g, '%22');
}

/** Line breaks as CRLF (the HTML form encoding of names and string values). */
function crlf(value: string): string {
  return value.replace(/\r?\n|\r/g, '\r\n');
}

/** multipart/form-data bytes of a FormData, and its content type. */
async function encodeForm(form: FormData): Promise<{ bytes: Buffer; contentType: string }> {
  const boundary = `----formdata-atelier-${randomBytes(12).toString('hex')}`;
  const parts: Buffer[] = [];
  for (const [name, value] of form) {
    if (typeof value === 'string') {
      parts.push(
        Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${escapeName(crlf(name))}"\r\n\r\n${crlf(value)}\r\n`),
      );
    } else {
      parts.push(
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="${escapeName(crlf(name))}"; filename="${escapeName(value.name)}"\r\n` +
            `Content-Type: ${value.type || 'application/octet-stream'}\r\n\r\n`,
        ),
        Buffer.from(await value.arrayBuffer()),
        Buffer.from('\r\n'),
      );
    }
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { bytes: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

/** The body as bytes with its default content type, or undefined for a kind left to the platform's fetch. */
async function encodeBody(body: FetchInit['body']): Promise<{ bytes?: Buffer; contentType?: string } | undefined> {
  if (body === undefined || body === null) return {};
  if (typeof body === 'string') return { bytes: Buffer.from(body, 'utf8'), contentType: 'text/plain;charset=UTF-8' };
  if (body instanceof FormData) return encodeForm(body);
  if (ArrayBuffer.isView(body)) return { bytes: Buffer.from(body.buffer, body.byteOffset, body.byteLength) };
  if (body instanceof ArrayBuffer) return { bytes: Buffer.from(body) };
  return undefined;
}

function decode(bytes: Buffer, encoding: string | undefined): Buffer {
  switch (encoding?.trim().toLowerCase()) {
    case undefined:
    case '':
    case 'identity':
      return bytes;
    case 'gzip':
    case 'x-gzip':
      return gunzipSync(bytes);
    case 'deflate':
      return inflateSync(bytes);
    case 'br':
      return brotliDecompressSync(bytes);
    default:
      // An encoding fetch would not decode either: the bytes as they came.
      return bytes;
  }
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/** Statuses whose Response may carry no body (the Response constructor refuses one). */
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/**
 * How long an idle connection is kept, as undici keeps it: 4 s, or 1 s less than the server's
 * Keep-Alive hint when that is shorter (node's agent applies the hint only under a timeout of its
 * own). On a connection in use the timeout only emits an event nothing listens to: a long call is
 * never cut by it.
 */
const IDLE_CONNECTION_MS = 4000;

/** A fetch over node:http with its own keep-alive connections (see above). */
export function createNodeFetch(): typeof fetch {
  const agentOptions = { keepAlive: true, timeout: IDLE_CONNECTION_MS };
  const agents = { http: new HttpAgent(agentOptions), https: new HttpsAgent(agentOptions) };
  const nodeFetch = async (input: string | URL | Request, init: FetchInit = {}): Promise<Response> => {
    if (!(typeof input === 'string' || input instanceof URL)) return fetch(input, init);
    const url = new URL(input);
    const body = await encodeBody(init.body);
    if (!body || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password) return fetch(input, init);
    const { signal } = init;
    if (signal?.aborted) throw abortReason(signal);
    const headers = new Headers(init.headers);
    if (body.contentType && !headers.has('content-type')) headers.set('content-type', body.contentType);
    if (body.bytes) headers.set('content-length', String(body.bytes.length));
    const method = (init.method ?? 'GET').toUpperCase();
    const https = url.protocol === 'https:';
    const answer = await new Promise<{ res: IncomingMessage; bytes: Buffer }>((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        req.destroy();
        reject(err);
      };
      const onAbort = () => fail(abortReason(signal!));
      const req = (https ? httpsRequest : httpRequest)(
        url,
        { method, headers: Object.fromEntries(headers), agent: https ? agents.https : agents.http },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', (err) => fail(new TypeError('terminated', { cause: err })));
          res.on('aborted', () => fail(new TypeError('terminated', { cause: new Error('the connection closed mid-answer') })));
          res.on('end', () => {
            if (settled) return;
            settled = true;
            signal?.removeEventListener('abort', onAbort);
            resolve({ res, bytes: Buffer.concat(chunks) });
          });
        },
      );
      req.on('error', (err) => fail(new TypeError('fetch failed', { cause: err })));
      signal?.addEventListener('abort', onAbort, { once: true });
      req.end(body.bytes);
    });
    const { res } = answer;
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location && init.redirect !== 'manual') return fetch(input, init);
    const responseHeaders = new Headers();
    for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) responseHeaders.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
    let bytes: Buffer;
    try {
      bytes = decode(answer.bytes, res.headers['content-encoding']);
    } catch (err) {
      throw new TypeError('terminated', { cause: err });
    }
    return new Response(NULL_BODY_STATUS.has(status) || method === 'HEAD' ? null : bytes, {
      status,
      statusText: res.statusMessage ?? '',
      headers: responseHeaders,
    });
  };
  return nodeFetch as typeof fetch;
}
