// The client's compiled suites live in node_modules, which vitest skips by
// default; point it there explicitly.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["node_modules/@authzed/authzed-node/dist/src/*.test.js"],
    exclude: [],
    testTimeout: 30000,
    hookTimeout: 30000,
    fileParallelism: false,
  },
});
