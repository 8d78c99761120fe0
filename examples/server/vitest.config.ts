import { defineProject } from "vitest/config"

export default defineProject({
  test: {
    name: "server",
    include: ["test/**/*.test.ts"],
    // Real servers, real browsers, real signals: seconds each, more on a loaded 2-core machine.
    testTimeout: 30_000
  }
})
