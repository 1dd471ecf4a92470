import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ClassifiedError } from '../../lib/shared/errors';
import { LocalStorage } from '../../storage/local';
import { S3Storage, s3ClientFromEnv } from '../../storage/s3';
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

  it("replaces files as a set and gives each version's tag; a ranged read names the version it wants", async () => {
    const storage = make();
    const dir = tempDir();
    writeFileSync(join(dir, 'x'), 'first table');
    writeFileSync(join(dir, 'y'), 'second');
    const tags = await storage.replaceFromFiles([
      { key: 't/x.csv', localPath: join(dir, 'x') },
      { key: 't/y.csv', localPath: join(dir, 'y') },
    ]);
    const listed = await storage.listObjects('t');
    expect(tags).toEqual(['x.csv', 'y.csv'].map((key) => listed.find((o) => o.key === key)!.tag));
    expect(String(await storage.readRangeIf('t/x.csv', 6, 11, tags[0]!))).toBe('table');
    // Another version (same size), or gone: no bytes.
    await storage.write('t/x.csv', 'first TABLE');
    expect(await storage.readRangeIf('t/x.csv', 6, 11, tags[0]!)).toBeUndefined();
    expect(await storage.readRangeIf('t/gone.csv', 0, 2, tags[0]!)).toBeUndefined();
    // No version named: nothing to match (an empty If-Match and an answer without an ETag would agree).
    expect(await storage.readRangeIf('t/y.csv', 0, 2, '')).toBeUndefined();
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

  it('writes conditionally: a replace only over the version it names, a create only where there is none; of 16 racing replacers from one version exactly one wins', async () => {
    const storage = make();
    expect(await storage.writeIf('w/a.json', 'v0', 'no-such-tag')).toBeUndefined();
    expect(await storage.read('w/a.json')).toBeUndefined();
    const v1 = (await storage.writeIf('w/a.json', 'v1', null))!;
    expect(v1).toBe((await storage.readTagged('w/a.json'))!.tag);
    expect(await storage.writeIf('w/a.json', 'again', null)).toBeUndefined();
    const v2 = (await storage.writeIf('w/a.json', 'v2', v1))!;
    expect(v2).not.toBe(v1);
    expect(await storage.writeIf('w/a.json', 'stale', v1)).toBeUndefined();
    expect(String(await storage.read('w/a.json'))).toBe('v2');
    // The tag a listing gives is one a replace can name.
    expect((await storage.listObjects('w')).map((o) => [o.key, o.tag])).toEqual([['a.json', v2]]);
    for (let round = 0; round < 3; round++) {
      const from = (await storage.readTagged('w/a.json'))!.tag;
      const results = await Promise.all(
        Array.from({ length: 16 }, (_, i) => storage.writeIf('w/a.json', `round ${round} writer ${i}`, from)),
      );
      expect(results.filter((t) => t !== undefined)).toHaveLength(1);
      const winner = results.findIndex((t) => t !== undefined);
      const now = (await storage.readTagged('w/a.json'))!;
      expect([String(now.data), now.tag]).toEqual([`round ${round} writer ${winner}`, results[winner]]);
    }
    // No lock or temp file is left to be listed.
    expect(await storage.list('w')).toEqual(['a.json']);
    await storage.remove('w/a.json');
    expect(await storage.writeIf('w/a.json', 'gone', v2)).toBeUndefined();
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

describe('s3 ranged reads of a version', () => {
  it('a store that ignores If-Match on a read and answers without an ETag passes off no bytes, whatever tag is named', async () => {
    // Such a store, as the client meets it: the If-Match header never sent (before signing), and
    // no ETag in the answer.
    const client = s3ClientFromEnv({ ...process.env });
    client.middlewareStack.add(
      (next) => async (args) => {
        delete (args.request as { headers: Record<string, string> }).headers['if-match'];
        return next(args);
      },
      { step: 'build', name: 'dropIfMatch' },
    );
    client.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args);
        delete (out.output as { ETag?: string }).ETag;
        return out;
      },
      { step: 'initialize', name: 'dropETag' },
    );
    const location = `s3://unit/run-${Math.random().toString(36).slice(2)}/out`;
    await new S3Storage(location).write('t.csv', 'first table');
    const storage = new S3Storage(location, client);
    const { tag } = (await new S3Storage(location).readTagged('t.csv'))!;
    expect(String(await storage.readRange('t.csv', 0, 5))).toBe('first');
    expect(await storage.readRangeIf('t.csv', 0, 5, tag)).toBeUndefined();
    expect(await storage.readRangeIf('t.csv', 0, 5, '')).toBeUndefined();
  });
});

describe('local version tags', () => {
  it('a tag names the file as it is in place: what a later stat of the unchanged file sees, after the rename or link that put it there', async () => {
    const storage = new LocalStorage(join(tempDir(), 'out'));
    const dir = tempDir();
    writeFileSync(join(dir, 'x'), 'first table');
    const listed = async (key: string) => (await storage.listObjects(''))!.find((o) => o.key === key)!.tag;
    const [table] = await storage.replaceFromFiles([{ key: 'x.csv', localPath: join(dir, 'x') }]);
    const created = (await storage.writeIf('c.json', 'v1', null))!;
    const replaced = (await storage.writeIf('r.json', 'v1', null))!;
    const second = (await storage.writeIf('r.json', 'v2', replaced))!;
    // A rename and a link count change set the ctime: tags taken before them would not match.
    expect([await listed('x.csv'), await listed('c.json'), await listed('r.json')]).toEqual([table, created, second]);
    expect(String(await storage.readRangeIf('x.csv', 0, 5, table!))).toBe('first');
    expect(await storage.writeIf('c.json', 'v2', created)).toBeDefined();
  });

  it('a write in place whose mtime is set back (touch -r, cp -p, rsync -t) still changes the tag: the ctime is in it', async () => {
    const storage = new LocalStorage(join(tempDir(), 'out'));
    await storage.write('a.csv', 'first table');
    const path = join(storage.location, 'a.csv');
    utimesSync(path, 1_000_000_000, 1_000_000_000); // a whole second: set back exactly below
    const { tag } = (await storage.readTagged('a.csv'))!;
    const ctime = statSync(path, { bigint: true }).ctimeNs;
    // Same inode, same size, same mtime; until the clock the kernel stamps ctimes with has moved on
    // (coarse on some kernels: a few ms), so the change is one a user could make later.
    while (statSync(path, { bigint: true }).ctimeNs === ctime) {
      await sleep(5);
      writeFileSync(path, 'first TABLE');
      utimesSync(path, 1_000_000_000, 1_000_000_000);
    }
    expect(statSync(path, { bigint: true }).mtimeNs).toBe(1_000_000_000_000_000_000n);
    expect((await storage.readTagged('a.csv'))!.tag).not.toBe(tag);
    expect(await storage.readRangeIf('a.csv', 0, 5, tag)).toBeUndefined();
  });

  it('a ranged read whose file is written in place between the tag check and the read gives no bytes', async () => {
    const storage = new LocalStorage(join(tempDir(), 'out'));
    await storage.write('a.csv', 'first table');
    const path = join(storage.location, 'a.csv');
    const { tag } = (await storage.readTagged('a.csv'))!;
    // Another process's write in place (an editor saving in place, `cat >`), just before this read's
    // bytes are read: Node's read of the held descriptor is where it lands. Same inode and size; the
    // mtime set explicitly apart, so coarse kernel clocks cannot hide it.
    const probe = await open(path, 'r');
    const FileHandleProto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    const original = FileHandleProto.read;
    FileHandleProto.read = async function (this: unknown, ...args: unknown[]) {
      FileHandleProto.read = original;
      writeFileSync(path, 'first TABLE');
      utimesSync(path, 1_000_000_000, 1_000_000_000);
      return original.apply(this, args);
    };
    try {
      expect(await storage.readRangeIf('a.csv', 0, 11, tag)).toBeUndefined();
    } finally {
      FileHandleProto.read = original;
    }
    expect(String(await storage.read('a.csv'))).toBe('first TABLE');
  });

  it('no version named, no bytes: an empty tag matches nothing', async () => {
    const storage = new LocalStorage(join(tempDir(), 'out'));
    await storage.write('a.csv', 'first table');
    expect(await storage.readRangeIf('a.csv', 0, 5, '')).toBeUndefined();
  });
});

describe('local conditional writes: the key lock', () => {
  it('breaks a lock whose holder is gone (this host, process ended; another host, past the stale age) and waits for a live one', async () => {
    const storage = new LocalStorage(join(tempDir(), 'out'));
    const v1 = (await storage.writeIf('k.json', 'v1', null))!;
    const lock = join(storage.location, 'k.json.cas-lock');
    // A holder killed while it held the lock: a process of this host that has ended.
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    writeFileSync(lock, JSON.stringify({ host: hostname(), pid: dead, nonce: 'a', at: Date.now() }));
    const v2 = (await storage.writeIf('k.json', 'v2', v1))!;
    expect(v2).toBeDefined();
    expect(existsSync(lock)).toBe(false);
    // Another host's holder: it can't be asked, and its clock is not ours (its lock says ten minutes
    // ago). The writer waits its while and gives up (retryable), having seen the lock once...
    writeFileSync(lock, JSON.stringify({ host: 'another-host', pid: 1, nonce: 'b', at: Date.now() - 600_000 }));
    const waited = await storage.writeIf('k.json', 'v3', v2).catch((e: unknown) => e);
    expect((waited as ClassifiedError).kind).toBe('retryable');
    expect(String(await storage.read('k.json'))).toBe('v2');
    // ... and breaks it once this process has seen that very lock for over two minutes (its own clock).
    const realNow = Date.now.bind(Date);
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 150_000);
    let v3: string;
    try {
      v3 = (await storage.writeIf('k.json', 'v3', v2))!;
    } finally {
      clock.mockRestore();
    }
    expect(v3).toBeDefined();
    // A live holder (this very process): the writer waits until it lets go, then compares.
    writeFileSync(lock, JSON.stringify({ host: hostname(), pid: process.pid, nonce: 'c', at: Date.now() }));
    const waiting = storage.writeIf('k.json', 'v4', v3);
    await sleep(300);
    expect(String(await storage.read('k.json'))).toBe('v3');
    rmSync(lock);
    expect(await waiting).toBeDefined();
    expect(String(await storage.read('k.json'))).toBe('v4');
    expect(readdirSync(storage.location)).toEqual(['k.json']);
  }, 60_000);
});
