import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchCached } from '../../lib/dataset/imageCache';
import { tempDir } from '../helpers/fixtures';

// Rows of one worker that need the same URL at once share one download: before, each missed the
// cache the other was still filling and fetched the URL again (a flake of test/datasets.test.ts's
// "downloads a URL once for all rows" under load).

let server: Server;
let hits = 0;
let url = '';

beforeAll(async () => {
  server = createServer((_req, res) => {
    hits += 1;
    // Slow enough that every caller asks while the first download is still running.
    setTimeout(() => res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.alloc(64, 7)), 200);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/shared.png`;
});
afterAll(() => server?.close());

describe('the image cache', () => {
  it('downloads a URL once for rows asking at the same time, and not again once cached', async () => {
    const cache = join(tempDir(), 'cache');
    const got = await Promise.all(Array.from({ length: 4 }, () => fetchCached(url, cache)));
    expect(got.every((b) => b.equals(Buffer.alloc(64, 7)))).toBe(true);
    expect(hits).toBe(1);
    await fetchCached(url, cache);
    expect(hits).toBe(1);
  });
});
