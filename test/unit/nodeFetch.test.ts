import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeFetch } from '../../activities/providers/nodeFetch';
import { freePort } from '../../lib/temporal/devServer';

// The OpenAI adapter's fetch over node:http (issue 21, worker CPU): what a request sends and what
// its answer reads must be what the platform's fetch sends and reads. The multipart body is parsed
// by the platform's own parser (undici's Response.formData(), which the OpenAI stand-in uses too).

interface Seen {
  method: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
  socket: unknown;
}

let server: Server;
let base: string;
const seen: Seen[] = [];
const routes: Record<string, (res: ServerResponse) => void> = {
  '/json': (res) => {
    res.writeHead(201, 'Made', { 'content-type': 'application/json', 'x-request-id': 'req_1' });
    res.end(JSON.stringify({ ok: true }));
  },
  '/gzip': (res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
    res.end(gzipSync(JSON.stringify({ zipped: 'yes' })));
  },
  '/moved': (res) => {
    res.writeHead(307, { location: '/json' });
    res.end();
  },
  '/never': () => undefined,
  '/empty': (res) => {
    res.writeHead(204);
    res.end();
  },
};

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method!, headers: req.headers, body: Buffer.concat(chunks), socket: req.socket });
      routes[req.url!]!(res);
    });
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe('the OpenAI adapter fetch over node:http', () => {
  it('sends a FormData as the multipart body the platform parses back to the same fields and files', async () => {
    const form = new FormData();
    form.append('model', 'gpt-image-2');
    form.append('prompt', 'line one\nline "two"\r\nthree');
    form.append('we"ird\nname', 'x');
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 1, 2, 3, 13, 10, 255]);
    form.append('image[]', new File([png], 'image_0.png', { type: 'image/png' }));
    form.append('image[]', new File([Buffer.from('raw')], 'a"b.bin'));
    const res = await createNodeFetch()(`${base}/json`, { method: 'post', body: form, headers: { authorization: 'Bearer sk-test' } });
    expect(res.status).toBe(201);
    expect(res.statusText).toBe('Made');
    expect(res.headers.get('x-request-id')).toBe('req_1');
    expect(await res.json()).toEqual({ ok: true });

    const sent = seen.at(-1)!;
    expect(sent.method).toBe('POST');
    expect(sent.headers.authorization).toBe('Bearer sk-test');
    expect(Number(sent.headers['content-length'])).toBe(sent.body.length);
    // The same form through the platform's fetch: both bodies parse to the same entries.
    await (await fetch(`${base}/json`, { method: 'POST', body: form })).arrayBuffer();
    const byFetch = seen.at(-1)!;
    const entries = async (s: Seen) => {
      const parsed = await new Response(s.body, { headers: { 'content-type': s.headers['content-type']! } }).formData();
      return Promise.all(
        [...parsed].map(async ([name, value]) =>
          typeof value === 'string'
            ? [name, value]
            : [name, value.name, value.type, Buffer.from(await value.arrayBuffer()).toString('hex')],
        ),
      );
    };
    const ours = await entries(sent);
    expect(ours).toEqual(await entries(byFetch));
    // Line breaks in string values go as CRLF; the PNG's bytes as they are.
    expect(ours[1]).toEqual(['prompt', 'line one\r\nline "two"\r\nthree']);
    expect(ours[3]).toEqual(['image[]', 'image_0.png', 'image/png', png.toString('hex')]);
  });

  it('keeps the connection for the next call, decodes a gzip answer, and reads a 204 as no body', async () => {
    const nodeFetch = createNodeFetch();
    const gz = await nodeFetch(`${base}/gzip`, { method: 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json' } });
    expect(await gz.json()).toEqual({ zipped: 'yes' });
    const first = seen.at(-1)!;
    expect(first.headers['content-type']).toBe('application/json');
    expect(first.body.toString()).toBe('{"a":1}');
    const empty = await nodeFetch(`${base}/empty`, { method: 'DELETE' });
    expect(empty.status).toBe(204);
    expect(await empty.text()).toBe('');
    expect(seen.at(-1)!.socket).toBe(first.socket);
  });

  it('follows a redirect through the platform fetch, as fetch does', async () => {
    const res = await createNodeFetch()(`${base}/moved`, { method: 'POST', body: 'again' });
    expect(res.status).toBe(201);
    expect(await res.json()).toEqual({ ok: true });
    // 307 keeps the method and body.
    expect(seen.at(-1)!.method).toBe('POST');
    expect(seen.at(-1)!.body.toString()).toBe('again');
  });

  it('rejects as fetch does: an abort with the signal reason, a refused connection as "fetch failed" with its cause', async () => {
    const controller = new AbortController();
    const pending = createNodeFetch()(`${base}/never`, { method: 'POST', body: 'x', signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });

    const port = await freePort();
    const refused = await createNodeFetch()(`http://127.0.0.1:${port}/x`, { method: 'POST', body: 'x' }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(TypeError);
    expect((refused as Error).message).toBe('fetch failed');
    expect(((refused as Error).cause as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
  });
});
