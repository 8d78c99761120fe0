import { defineProject } from "vitest/config"

export default defineProject({
  test: {
    name: "pg",
    include: ["test/**/*.test.ts"]
  }
})
