import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { ClassifiedError } from '../../lib/shared/errors';
import { writeFileAtomicIn } from '../../storage/atomicFile';
import { LocalStorage } from '../../storage/local';
import { PinnedDir, pinnedDirsSupported } from '../../storage/pinnedDir';
import { tempDir } from '../helpers/fixtures';

/**
 * Runs in its own process so the swaps really interleave with the storage's syscalls: exchanges a
 * folder inside the output dir with a symlink to a folder outside it, by rename, as fast as it can.
 * Each round moves the folder aside under a fresh name (so a folder the writer recreates in the gap
 * never jams the loop), puts the link in its place, then takes the link back and the folder too.
 * Prints "ready" once a round has run, and the number of rounds when told to stop (stdin closes).
 */
const SWAPPER = `
const fs = require('fs');
const [real, link] = process.argv.slice(1);
let rounds = 0, stop = false;
process.stdin.on('end', () => { stop = true; });
process.stdin.resume();
const tryRename = (a, b) => { try { fs.renameSync(a, b); return true; } catch { return false; } };
function burst() {
  for (let i = 0; i < 200 && !stop; i++) {
    const aside = real + '.aside-' + rounds;
    tryRename(real, aside);
    tryRename(link, real);
    tryRename(real, link);
    tryRename(aside, real);
    if (rounds++ === 0) process.stdout.write('ready\\n');
  }
  if (stop) process.stdout.write('rounds ' + rounds + '\\n');
  else setImmediate(burst);
}
burst();
`;

/** Starts SWAPPER on `real` and `link`; resolves once it has swapped; stop() ends it and gives its rounds. */
async function startSwapper(real: string, link: string): Promise<{ stop: () => Promise<number> }> {
  const child = spawn(process.execPath, ['-e', SWAPPER, real, link], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const exited = new Promise<number | null>((done) => child.on('exit', done));
  const output: string[] = [];
  await new Promise<void>((done, fail) => {
    lines.on('line', (line) => {
      output.push(line);
      if (line === 'ready') done();
    });
    void exited.then(() => fail(new Error(`swapper exited before it was ready: ${output.join(' | ')}`)));
  });
  return {
    stop: async () => {
      child.stdin.end();
      await exited;
      return Number(/rounds (\d+)/.exec(output.join('\n'))?.[1] ?? 0);
    },
  };
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => join(e.parentPath, e.name));
}

describe('local storage under a folder/symlink swap loop', () => {
  it('writes nothing outside the output dir while a folder and a link to outside are exchanged', async () => {
    const base = tempDir();
    const root = join(base, 'out');
    const outside = join(base, 'outside');
    mkdirSync(outside);
    mkdirSync(join(root, 'run', 'sub'), { recursive: true });
    symlinkSync(outside, join(root, 'run', 'sublink'));
    const source = join(base, 'source.png');
    writeFileSync(source, Buffer.alloc(2048, 7));
    const storage = new LocalStorage(root);
    await storage.write('run/first.png', 'x'); // the root exists before the swapper starts

    const swapper = await startSwapper(join(root, 'run', 'sub'), join(root, 'run', 'sublink'));

    let rounds: number;
    let written = 0;
    let refused = 0;
    const unexpected: unknown[] = [];
    const deadline = Date.now() + 4_000;
    let next = 0;
    const writer = async (): Promise<void> => {
      while (Date.now() < deadline && next < 1_500) {
        const i = next++;
        const key = `run/sub/img-${i}.png`;
        try {
          if (i % 4 === 0) await storage.write(key, Buffer.alloc(1024, i % 256));
          else if (i % 4 === 1) await storage.create(key, Buffer.alloc(1024, i % 256));
          else if (i % 4 === 2) await storage.writeFromFile(key, source);
          else await storage.replaceFromFiles([{ key, localPath: source }]);
          written++;
        } catch (err) {
          // A write that meets the link (or a folder missing mid-swap) is refused; that is the point.
          if (err instanceof ClassifiedError) refused++;
          else unexpected.push(err);
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: 6 }, writer));
    } finally {
      rounds = await swapper.stop();
    }

    const escaped = filesUnder(outside);
    const tally = `${escaped.length} files escaped (${written} written, ${refused} refused, ${rounds} swap rounds)`;
    expect(escaped, tally).toEqual([]);
    expect(unexpected).toEqual([]);
    expect(rounds, tally).toBeGreaterThan(100); // the race was really run
    expect(written, tally).toBeGreaterThan(10); // and writes really got through during it
    // Every write that succeeded is somewhere under the root (the swapped-aside folders included).
    expect(filesUnder(root).filter((f) => /img-\d+\.png$/.test(f)).length).toBeGreaterThanOrEqual(written);
  });
});

describe('local storage removals under a folder/symlink swap loop', () => {
  it('removes nothing outside the output dir while a folder and a link to outside are exchanged', async () => {
    const base = tempDir();
    const root = join(base, 'out');
    const outside = join(base, 'outside');
    mkdirSync(outside);
    const bait = Array.from({ length: 20 }, (_, i) => join(outside, `img-${i}.png`));
    for (const file of bait) writeFileSync(file, "not Atelier's to remove");
    mkdirSync(join(root, 'run', 'sub'), { recursive: true });
    symlinkSync(outside, join(root, 'run', 'sublink'));
    const storage = new LocalStorage(root);
    const swapper = await startSwapper(join(root, 'run', 'sub'), join(root, 'run', 'sublink'));
    let rounds: number;
    let removals = 0;
    const unexpected: unknown[] = [];
    const deadline = Date.now() + 3_000;
    try {
      while (Date.now() < deadline && bait.every((file) => existsSync(file))) {
        for (let i = 0; i < 20; i++) await storage.write(`run/sub/img-${i}.png`, 'x').catch(() => undefined);
        for (let i = 0; i < 10; i++)
          await storage.remove(`run/sub/img-${i}.png`).catch((e: unknown) => e instanceof ClassifiedError || unexpected.push(e));
        await storage.removeAll('run/sub').catch((e: unknown) => e instanceof ClassifiedError || unexpected.push(e));
        removals++;
      }
    } finally {
      rounds = await swapper.stop();
    }
    // Only the bait is counted: files a write may have put there are the other test's concern.
    const left = bait.filter((file) => existsSync(file)).length;
    expect(left, `${bait.length - left} outside files removed (${removals} removal rounds, ${rounds} swap rounds)`).toBe(bait.length);
    expect(unexpected).toEqual([]);
    expect(rounds).toBeGreaterThan(100);
    expect(removals).toBeGreaterThan(5);
  });
});

describe('a folder held by descriptor (/proc/self/fd/N)', () => {
  it('keeps naming the folder it was opened on after that folder is renamed and a link takes its place', async () => {
    const base = tempDir();
    const root = join(base, 'out');
    const outside = join(base, 'outside');
    mkdirSync(outside);
    mkdirSync(join(root, 'sub'), { recursive: true });
    // The claim the local backend rests on; where /proc can't pin folders it falls back (and says so).
    const supported = await pinnedDirsSupported(root);
    if (process.platform === 'linux') expect(supported).toBe(true);
    if (!supported) return;
    const held = await PinnedDir.walk(root, ['sub'], false, 'sub/x.png');
    try {
      renameSync(join(root, 'sub'), join(root, 'moved'));
      symlinkSync(outside, join(root, 'sub'));
      await writeFileAtomicIn(held, 'x.png', 'pinned');
      expect(readdirSync(outside)).toEqual([]);
      expect(readFileSync(join(root, 'moved', 'x.png'), 'utf8')).toBe('pinned');
      // Opening the path again now meets the link, and refuses it.
      await expect(PinnedDir.walk(root, ['sub'], true, 'sub/y.png')).rejects.toThrow(/sub is a symbolic link/);
      expect(readdirSync(outside)).toEqual([]);
    } finally {
      await held.close();
    }
  });
});
