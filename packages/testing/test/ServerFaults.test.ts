import { assert, describe, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Eventually, PgServer, ServerFaults } from "@sturdy/testing"
import { Cause, Effect, Exit, Fiber, type Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"

const client = (url: Redacted.Redacted<string>, applicationName: string, maxConnections = 2) =>
  PgClient.make({ url, applicationName, maxConnections, connectTimeout: "2 seconds" }).pipe(
    Effect.provide(Reactivity.layer)
  )

/** What the driver reported: the reason, its operation and the code of its cause. */
const reported = <A, E>(exit: Exit.Exit<A, E>) => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
  const reason = (error as { reason?: { _tag: string; operation?: string; cause?: { code?: string } } }).reason
  return { reason: reason?._tag, operation: reason?.operation, code: reason?.cause?.code }
}

describe("ServerFaults against a real server", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("smartShutdown: new connections get 57P03 while a session is held; afterwards the server is back", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* server.smartShutdown
            const app = yield* client(server.url, "smart-shutdown")
            const exit = yield* Effect.exit(app`SELECT 1`)
            assert.deepStrictEqual(reported(exit), { reason: "UnknownError", operation: "connect", code: "57P03" })
          })
        )
        const app = yield* client(server.url, "after-shutdown")
        assert.deepStrictEqual(yield* app<{ one: number }>`SELECT 1 AS one`, [{ one: 1 }])
      }).pipe(Effect.scoped)
    )

    it.effect("connectionLimit: beyond the limit, new connections get 53300", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const db = yield* ServerFaults.database(server)
        yield* ServerFaults.connectionLimit(server, db.role, 1)
        const app = yield* client(db.url, "limited")
        // The first connection is held for the rest of the test; the second is over the limit.
        yield* app.reserve
        const exit = yield* Effect.exit(app`SELECT 1`)
        assert.deepStrictEqual(reported(exit), { reason: "UnknownError", operation: "connect", code: "53300" })
      }).pipe(Effect.scoped)
    )

    it.effect("disallowConnections: new connections get 55000; existing sessions keep working", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const db = yield* ServerFaults.database(server)
        const before = yield* client(db.url, "before")
        yield* before`SELECT 1`
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* ServerFaults.disallowConnections(server, db.name)
            const app = yield* client(db.url, "refused")
            assert.deepStrictEqual(reported(yield* Effect.exit(app`SELECT 1`)), {
              reason: "UnknownError",
              operation: "connect",
              code: "55000"
            })
            assert.deepStrictEqual(yield* before<{ one: number }>`SELECT 1 AS one`, [{ one: 1 }])
          })
        )
        const after = yield* client(db.url, "after")
        yield* after`SELECT 1`
      }).pipe(Effect.scoped)
    )

    it.effect("readOnly: the application's writes fail with 25006 until the scope closes", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const db = yield* ServerFaults.database(server)
        const app = yield* client(db.url, "failover-app")
        yield* app`CREATE TABLE notes (id int PRIMARY KEY)`
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* ServerFaults.readOnly(server, db.name, "failover-app")
            // The first statement may land on a session the failover just terminated.
            yield* Effect.exit(app`SELECT 1`)
            const exit = yield* Effect.exit(app`INSERT INTO notes (id) VALUES (1)`)
            assert.deepStrictEqual(reported(exit), { reason: "UnknownError", operation: "query", code: "25006" })
            assert.deepStrictEqual(yield* app<{ n: number }>`SELECT count(*)::int AS n FROM notes`, [{ n: 0 }])
          })
        )
        yield* Effect.exit(app`SELECT 1`)
        yield* app`INSERT INTO notes (id) VALUES (1)`
      }).pipe(Effect.scoped)
    )

    it.effect("terminateBackends: a statement in flight sees its connection closed, with no SQLSTATE", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const app = yield* client(server.url, "terminated")
        const query = yield* Effect.forkChild(Effect.exit(app`SELECT pg_sleep(5)`))
        yield* Eventually.until(server.activeQueries("terminated"), {
          what: "the server to run pg_sleep",
          accept: (queries) => queries.length > 0,
          timeout: "5 seconds"
        })
        assert.strictEqual(yield* server.terminateBackends("terminated"), 1)
        assert.deepStrictEqual(reported(yield* Fiber.join(query)), {
          reason: "ConnectionError",
          operation: "query",
          code: undefined
        })
      }).pipe(Effect.scoped)
    )
  })
})
