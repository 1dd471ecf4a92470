import { createRequire } from 'node:module';

// Some packages cost a noticeable share of the CLI's start (apache-arrow, the S3 client, ajv, yaml:
// 20–100 ms of CPU each) and serve one input format or one command only. Where the code that needs
// them is synchronous, `await import()` cannot defer them; this loads such a package on its first
// use instead. Type-only imports (`import type * as X from 'x'`) keep the types exact.
const load = createRequire(__filename);

/** A getter that loads `name` the first time it is called (Node's module cache keeps it after). */
export function loadOnUse<T>(name: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= load(name) as T);
}
