import { defineConfig } from 'vitest/config';

// Only for recording the --batch replay fixtures (see recordBatchHistories.ts).
export default defineConfig({
  test: {
    include: ['test/replay/recordBatchHistories.ts'],
    pool: 'forks',
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
