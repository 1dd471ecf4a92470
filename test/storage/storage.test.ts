import { mkdirSync, readFileSync, symlinkSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClassifiedError } from '../../lib/shared/errors';
import { LocalStorage } from '../../storage/local';
import { S3Storage } from '../../storage/s3';
import type { Storage } from '../../storage';
import { tempDir } from '../helpers/fixtures';
import { startS3Server, type S3TestServer } from '../../testing/versitygw';

let s3: S3TestServer;

beforeAll(async () => {
  s3 = await startS3Server();
  Object.assign(process.env, s3.env);
  await s3.createBucket('unit');
});
afterAll(async () => s3?.stop());

const backends: Array<[string, () => Storage]> = [
  ['local', () => new LocalStorage(join(tempDir(), 'out'))],
  ['s3', () => new S3Storage(`s3://unit/run-${Math.random().toString(36).slice(2)}/out`)],
];

describe.each(backends)('%s storage', (_name, make) => {
  it('writes, reads, ranges, lists and removes', async () => {
    const storage = make();
    expect(await storage.read('a/b.txt')).toBeUndefined();
    expect(await storage.stat('a/b.txt')).toBeUndefined();
    await storage.write('a/b.txt', 'hello world');
    await storage.write('a/c/d.txt', Buffer.from('x'));
    expect(String(await storage.read('a/b.txt'))).toBe('hello world');
    expect(await storage.stat('a/b.txt')).toEqual({ size: 11 });
    expect(String(await storage.readRange('a/b.txt', 6, 11))).toBe('world');
    expect((await storage.list('a')).sort()).toEqual(['b.txt', 'c/d.txt']);
    expect((await storage.list('')).sort()).toEqual(['a/b.txt', 'a/c/d.txt']);
    await storage.write('a/b.txt', 'replaced');
    expect(String(await storage.read('a/b.txt'))).toBe('replaced');
    await storage.removeAll('a/c');
    expect(await storage.list('a')).toEqual(['b.txt']);
    await storage.remove('a/b.txt');
    expect(await storage.list('a')).toEqual([]);
  });

  it('lists objects with sizes and tags (shallow or not); a read gives the listed tag, a rewrite a new one', async () => {
    const storage = make();
    expect(await storage.listObjects('l')).toEqual([]);
    expect(await storage.readTagged('l/a.json')).toBeUndefined();
    await storage.write('l/a.json', '{"v":1}');
    await storage.write('l/sub/b.json', 'bb');
    expect((await storage.create('l/c.json', 'c')) && true).toBe(true);
    const all = (await storage.listObjects('l')).sort((x, y) => x.key.localeCompare(y.key));
    expect(all.map((o) => [o.key, o.size])).toEqual([
      ['a.json', 7],
      ['c.json', 1],
      ['sub/b.json', 2],
    ]);
    const shallow = await storage.listObjects('l', { shallow: true });
    expect(shallow.map((o) => o.key).sort()).toEqual(['a.json', 'c.json']);
    const listed = shallow.find((o) => o.key === 'a.json')!.tag;
    const read = (await storage.readTagged('l/a.json'))!;
    expect(String(read.data)).toBe('{"v":1}');
    expect(read.tag).toBe(listed);
    // Same size, other bytes: the tag still changes.
    await storage.write('l/a.json', '{"v":2}');
    const again = (await storage.readTagged('l/a.json'))!;
    expect(again.tag).not.toBe(listed);
    expect((await storage.listObjects('l', { shallow: true })).find((o) => o.key === 'a.json')!.tag).toBe(again.tag);
  });

  it('creates only once: of 16 racing creators exactly one wins and its bytes stay', async () => {
    const storage = make();
    for (let round = 0; round < 3; round++) {
      const key = `claim-${round}.json`;
      const results = await Promise.all(Array.from({ length: 16 }, (_, i) => storage.create(key, `writer ${i}`)));
      expect(results.filter(Boolean)).toHaveLength(1);
      const winner = results.indexOf(true);
      expect(String(await storage.read(key))).toBe(`writer ${winner}`);
    }
  });

  it('refuses names the target cannot hold, as the row input error', async () => {
    const storage = make();
    for (const key of ['a\0b.png', `${'x'.repeat(300)}.png`, '../escape.png', 'a/../../b.png']) {
      const err = await storage.write(key, 'x').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ClassifiedError);
      expect((err as ClassifiedError).errorType).toBe('InputError');
    }
  });

  it('hands out a create-only URL that cannot overwrite, and a read URL', async () => {
    const storage = make();
    const url = await storage.createUrl('gpu/out.png', 600);
    if (storage.kind === 's3') {
      const put = (body: string) => fetch(url, { method: 'PUT', body, headers: { 'If-None-Match': '*' } });
      expect((await put('first')).status).toBe(200);
      expect((await put('second')).status).toBe(412);
      expect((await fetch(url, { method: 'PUT', body: 'no header' })).status).toBe(403);
      const read = await storage.readUrl('gpu/out.png', 600);
      expect(await (await fetch(read)).text()).toBe('first');
    } else {
      expect(url).toBe(join(storage.location, 'gpu', 'out.png'));
      expect(existsSync(join(storage.location, 'gpu'))).toBe(true);
      expect(await storage.readUrl('gpu/out.png', 600)).toBe(url);
    }
  });
});

describe('local storage confinement', () => {
  it('refuses to write through a symlink inside the root', async () => {
    const base = tempDir();
    const outside = join(base, 'elsewhere');
    mkdirSync(outside);
    const storage = new LocalStorage(join(base, 'out'));
    await storage.write('ok.txt', 'x');
    symlinkSync(outside, join(base, 'out', 'link'));
    const err = await storage.write('link/x.png', 'data').catch((e: unknown) => e);
    expect((err as ClassifiedError).errorType).toBe('InputError');
    expect((err as Error).message).toMatch(/symbolic link/);
    expect(existsSync(join(outside, 'x.png'))).toBe(false);
    expect(await storage.create('link/y.png', 'data').catch((e: unknown) => (e as ClassifiedError).errorType)).toBe('InputError');
    await expect(storage.checkWritable('link/z.png')).rejects.toThrow(/symbolic link/);
  });

  it('classes a file/folder clash as the row input error', async () => {
    const storage = new LocalStorage(join(tempDir(), 'out'));
    await storage.write('a.png', 'x');
    const err = await storage.write('a.png/b.png', 'y').catch((e: unknown) => e);
    expect((err as ClassifiedError).errorType).toBe('InputError');
    expect(readFileSync(join(storage.location, 'a.png'), 'utf8')).toBe('x');
  });
});
