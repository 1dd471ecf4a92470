import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each workflow/CLI test file starts its own Temporal dev server; on a 2-core machine they run
    // one file at a time to keep timings (retry waits, Retry-After) honest.
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 180_000,
    hookTimeout: 180_000,
    reporters: ['default', './test/helpers/plainSummaryReporter.ts'],
  },
});
