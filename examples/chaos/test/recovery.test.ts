/**
 * A 3-second outage with the library's defaults, side by side with plain
 * `@effect/sql-pg` in the same run: a server restart (direct), and a PgBouncer
 * restart in transaction mode. Sturdy's first success after the endpoint
 * accepts again must come within plain's + 0.5 s, and it must fail no more
 * calls than plain.
 */
import { assert, describe, layer } from "@effect/vitest"
import { PgBouncer, PgServer } from "@sturdy/testing"
import { Effect } from "effect"
import * as Recovery from "../src/Recovery.ts"
import * as Workload from "../src/Workload.ts"

describe("recovery from a 3 s outage, defaults, side by side with plain", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect("server restart, 8 readers", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        yield* Workload.reads.setup(server.admin)
        const result = yield* Recovery.compare({
          url: server.url,
          stop: server.stop,
          start: server.start,
          outage: "3 seconds"
        })
        process.stdout.write(`\n${Recovery.describe("server restart, direct", result)}\n`)
        assert.isTrue(Recovery.sturdyKeepsUp(result), Recovery.describe("server restart", result))
      }).pipe(Effect.scoped)
    )

    it.effect("PgBouncer restart in transaction mode, 8 readers", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        yield* Workload.reads.setup(server.admin)
        const bouncer = yield* PgBouncer.make(server, { poolMode: "transaction" })
        const result = yield* Recovery.compare({
          url: bouncer.url,
          stop: bouncer.stop,
          start: bouncer.start,
          outage: "3 seconds"
        })
        process.stdout.write(`\n${Recovery.describe("PgBouncer restart, transaction mode", result)}\n`)
        assert.isTrue(Recovery.sturdyKeepsUp(result), Recovery.describe("PgBouncer restart", result))
      }).pipe(Effect.scoped)
    )
  })
})
