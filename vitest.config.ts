import { defineConfig } from 'vitest/config';

// Engine tests load onnxruntime-node (a native addon): run each file in its own process.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
