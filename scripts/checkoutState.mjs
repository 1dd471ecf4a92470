// What the checkout's own state dir (./.atelier, the CLI's default --state-dir) holds, so the suite
// can prove it wrote nothing there: tests use temp state dirs, and a CLI call that forgot
// `--state-dir` would leave run records (runs/<id>.json), server state or logs in the checkout.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

/** Every file and folder under `<root>/.atelier`, as paths relative to the checkout (none when absent). */
export function checkoutStateEntries(root) {
  const top = join(root, '.atelier');
  const out = [];
  const walk = (dir) => {
    let names;
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const path = join(dir, name);
      out.push(relative(root, path));
      if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) walk(path);
    }
  };
  walk(top);
  return out.sort();
}

/** The entries `after` has that `before` had not. */
export function gainedEntries(before, after) {
  const had = new Set(before);
  return after.filter((p) => !had.has(p));
}
