import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Removes each file's temporary directories (keys, certificates) after it.
    setupFiles: ["test/support/setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // End-to-end files start their own redis-server and gateway processes;
    // two workers match the 2-core machines this runs on.
    maxWorkers: 2,
  },
});
