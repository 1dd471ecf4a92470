import { defineConfig } from 'vitest/config';

// Only for recording replay fixtures (see recordHistories.ts); the suite uses vitest.config.mts.
export default defineConfig({
  test: {
    include: ['test/replay/recordHistories.ts'],
    pool: 'forks',
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
