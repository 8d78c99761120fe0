import { assert, describe, layer } from "@effect/vitest"
import { PgFailure, ResilientPg } from "@sturdy/pg"
import { Eventually, FaultProxy, LogCapture, PgServer } from "@sturdy/testing"
import { Clock, Effect, Fiber, Layer, Random } from "effect"
import { TestClock } from "effect/testing"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { appName, failureOf, fast, resilient } from "./helpers.ts"

describe("ResilientPg against a real server", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("(a) fails after exactly the profile's attempts with ConnectionRefused while the server is down", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        for (const [profile, attempts] of [
          ["development", 4],
          ["production", 6]
        ] as const) {
          // The breaker would reject production's 6th attempt (it opens after 5 failed attempts): keep it out of this test.
          const { layer } = resilient(server, { profile, ...fast, breakerFailures: 100 })
          yield* server.stop
          const outcome = yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const exit = yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`))
            const stats = yield* (yield* ResilientPg.ResilientPg).stats
            return { exit, stats }
          }).pipe(Effect.provide(layer), Effect.ensuring(Effect.orDie(server.start)))
          const error = failureOf(outcome.exit)
          assert.strictEqual((error as PgFailure.TransientError)._tag, "TransientError")
          assert.strictEqual((error as PgFailure.TransientError).reason._tag, "ConnectionRefused")
          assert.strictEqual(PgFailure.phaseOf((error as PgFailure.TransientError).reason), "connect")
          assert.strictEqual(outcome.stats.attempts, attempts)
          assert.strictEqual(outcome.stats.retries, attempts - 1)
        }
      })
    )

    it.effect("(a) a call that waits through a restart succeeds, at the profile's backoff times (TestClock)", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const logs = yield* LogCapture.make
        const { layer } = resilient(server, { profile: "development" })
        yield* server.stop
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          // Every jitter drawn is a quarter of the profile's 1 s: the first backoff is 1 s + 250 ms.
          const quarter: Random.Random = { nextDoubleUnsafe: () => 0.25, nextIntUnsafe: () => 0 }
          const call = yield* Effect.forkChild(
            sql<{ one: number }>`SELECT 1 AS one`.pipe(Effect.provideService(Random.Random, quarter))
          )
          const first = yield* logs.waitFor((entry) => entry.annotations["sturdy.event"] === "retry")
          assert.strictEqual(first.annotations["sturdy.delayMillis"], 1250)
          // The server comes back while the call sleeps in its first backoff.
          yield* server.start
          yield* TestClock.adjust(1249)
          assert.strictEqual((yield* (yield* ResilientPg.ResilientPg).stats).attempts, 1)
          yield* TestClock.adjust(1)
          const rows = yield* Fiber.join(call)
          assert.deepStrictEqual(rows, [{ one: 1 }])
          const stats = yield* (yield* ResilientPg.ResilientPg).stats
          assert.strictEqual(stats.attempts, 2)
          const recovered = (yield* logs.entries).filter((entry) => entry.annotations["sturdy.event"] === "recovered")
          assert.strictEqual(recovered.length, 1)
        }).pipe(
          Effect.provide(Layer.provideMerge(Layer.merge(layer, logs.layer), TestClock.layer())),
          Effect.ensuring(Effect.orDie(server.start))
        )
      })
    )

    it.effect("acquiring a transaction's connection goes through the retry", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const logs = yield* LogCapture.make
        const { layer } = resilient(server, { ...fast, backoffBase: "300 millis" })
        yield* server.stop
        const rows = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const tx = yield* Effect.forkChild(sql.withTransaction(sql<{ one: number }>`SELECT 1 AS one`))
          yield* logs.waitFor((entry) => entry.annotations["sturdy.event"] === "retry")
          yield* server.start
          return yield* Fiber.join(tx)
        }).pipe(Effect.provide(Layer.merge(layer, logs.layer)), Effect.ensuring(Effect.orDie(server.start)))
        assert.deepStrictEqual(rows, [{ one: 1 }])
      })
    )
  })

  // These need no restart: they run against the server DATABASE_URL points at, when it is set.
  layer(PgServer.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("(b) an idle pooled connection killed by pg_terminate_backend is invisible to the next caller", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const { applicationName, layer } = resilient(server, fast)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* sql`SELECT 1`
          assert.strictEqual(yield* server.terminateBackends(applicationName), 1)
          const rows = yield* sql<{ two: number }>`SELECT 2 AS two`
          assert.deepStrictEqual(rows, [{ two: 2 }])
        }).pipe(Effect.provide(layer))
      })
    )

    it.effect("(c) a SELECT whose backend is killed mid-flight is retried and succeeds", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const { applicationName, layer } = resilient(server, fast)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const call = yield* Effect.forkChild(sql<{ done: string }>`SELECT 'done' AS done FROM pg_sleep(0.5)`)
          yield* Eventually.until(server.activeQueries(applicationName), {
            what: "the SELECT running on the server",
            accept: (queries) => queries.some((q) => q.includes("pg_sleep")),
            timeout: "5 seconds"
          })
          assert.strictEqual(yield* server.terminateBackends(applicationName), 1)
          assert.deepStrictEqual(yield* Fiber.join(call), [{ done: "done" }])
          const stats = yield* (yield* ResilientPg.ResilientPg).stats
          assert.strictEqual(stats.retries, 1)
        }).pipe(Effect.provide(layer))
      })
    )

    it.effect(
      "(d) an INSERT whose backend is killed after it was sent fails with OutcomeUnknown, at most one row",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const table = `outcome_${randomUUID().replaceAll("-", "")}`
          yield* server.admin.unsafe(`CREATE TABLE ${table} (id uuid PRIMARY KEY)`)
          const { applicationName, layer } = resilient(server, fast)
          const id = randomUUID()
          const exit = yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const call = yield* Effect.forkChild(
              Effect.exit(
                ResilientPg.unwrapFailures(sql`INSERT INTO ${sql(table)} (id) SELECT ${id}::uuid FROM pg_sleep(0.5)`)
              )
            )
            yield* Eventually.until(server.activeQueries(applicationName), {
              what: "the INSERT running on the server",
              accept: (queries) => queries.some((q) => q.includes("INSERT")),
              timeout: "5 seconds"
            })
            yield* server.terminateBackends(applicationName)
            const exit = yield* Fiber.join(call)
            const stats = yield* (yield* ResilientPg.ResilientPg).stats
            assert.strictEqual(stats.attempts, 1)
            assert.strictEqual(stats.outcomeUnknown, 1)
            return exit
          }).pipe(Effect.provide(layer))
          const error = failureOf(exit) as PgFailure.OutcomeUnknown
          assert.strictEqual(error._tag, "OutcomeUnknown")
          assert.strictEqual(PgFailure.phaseOf(error.reason), "sent")
          const rows = yield* server.admin.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)
          assert.isAtMost(rows[0]!.n, 1)
        })
    )

    it.effect("(d) the same INSERT marked idempotent is retried and lands exactly once", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const table = `idem_${randomUUID().replaceAll("-", "")}`
        yield* server.admin.unsafe(`CREATE TABLE ${table} (id uuid PRIMARY KEY)`)
        const { applicationName, layer } = resilient(server, fast)
        const id = randomUUID()
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const call = yield* Effect.forkChild(
            ResilientPg.idempotent(
              sql`INSERT INTO ${sql(table)} (id) SELECT ${id}::uuid FROM pg_sleep(0.5) ON CONFLICT (id) DO NOTHING`
            )
          )
          yield* Eventually.until(server.activeQueries(applicationName), {
            what: "the INSERT running on the server",
            accept: (queries) => queries.some((q) => q.includes("INSERT")),
            timeout: "5 seconds"
          })
          yield* server.terminateBackends(applicationName)
          yield* Fiber.join(call)
        }).pipe(Effect.provide(layer))
        const rows = yield* server.admin.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)
        assert.strictEqual(rows[0]!.n, 1)
      })
    )

    it.effect("(e) a syntax error and a unique violation are not retried: one attempt each", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const table = `unique_${randomUUID().replaceAll("-", "")}`
        yield* server.admin.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
        const { layer } = resilient(server, fast)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const service = yield* ResilientPg.ResilientPg
          const syntax = failureOf(yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELEC 1 AS sturdy_marker`)))
          assert.strictEqual((syntax as any)._tag, "SqlError")
          assert.strictEqual((syntax as any).reason._tag, "SqlSyntaxError")
          assert.strictEqual((yield* service.stats).attempts, 1)
          yield* sql`INSERT INTO ${sql(table)} (id) VALUES (1)`
          const unique = failureOf(yield* Effect.exit(sql`INSERT INTO ${sql(table)} (id) VALUES (1)`))
          assert.strictEqual((unique as any).reason._tag, "UniqueViolation")
          assert.strictEqual((yield* service.stats).attempts, 3)
        }).pipe(Effect.provide(layer))
        if (server.kind === "embedded") {
          const log = yield* server.serverLog
          assert.strictEqual(log.filter((line) => line.includes("STATEMENT:  SELEC 1 AS sturdy_marker")).length, 1)
        }
      })
    )

    it.effect(
      "(f) SELECT pg_sleep(30) with a 200 ms attempt timeout fails typed, and the server stops running it",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const { applicationName, layer } = resilient(server, {
            ...fast,
            attemptTimeout: "200 millis",
            retriesAfterFirst: 1
          })
          const started = yield* Clock.currentTimeMillis
          const exit = yield* Effect.exit(
            ResilientPg.unwrapFailures(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT pg_sleep(30)`)).pipe(
              Effect.provide(layer)
            )
          )
          const elapsed = (yield* Clock.currentTimeMillis) - started
          const error = failureOf(exit) as PgFailure.TransientError
          assert.strictEqual(error._tag, "TransientError")
          // Both deadlines are 200 ms: the client's (AttemptTimeout) or the server's statement_timeout (57014) wins.
          assert.include(["AttemptTimeout", "StatementTimeoutError"], error.reason._tag)
          assert.strictEqual(PgFailure.phaseOf(error.reason), "sent")
          assert.isBelow(elapsed, 10_000)
          yield* Eventually.until(server.activeQueries(applicationName), {
            what: "the server to stop running the statement",
            accept: (queries) => queries.length === 0,
            timeout: "1 second"
          })
        })
    )

    it.effect(
      "(f) an attempt cancelled by the server within its grace period settles, and the client keeps working (TestClock)",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          // No statement_timeout: only the client's deadline ends the statement, through a cancel request.
          const { applicationName, layer } = resilient(server, {
            ...fast,
            attemptTimeout: "300 millis",
            statementTimeout: "off",
            retriesAfterFirst: 0
          })
          const outcome = yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const timedOut = yield* Effect.forkChild(Effect.exit(ResilientPg.unwrapFailures(sql`SELECT pg_sleep(30)`)))
            // The statement runs on the server, so its deadline will find it on a connection.
            yield* TestClock.withLive(
              Eventually.until(server.activeQueries(applicationName), {
                what: "the statement running on the server",
                accept: (queries) => queries.length === 1,
                timeout: "5 seconds"
              })
            )
            // The deadline passes: the watchdog sends a cancel and holds the call for its grace period (75 ms).
            yield* TestClock.adjust("320 millis")
            // The server cancels at once and the call settles while the clock stands still: inside the grace
            // period, the case that once left the watchdog looping forever on its next pass.
            const exit = yield* Fiber.join(timedOut)
            yield* TestClock.adjust("200 millis")
            const after = yield* sql<{ one: number }>`SELECT 1 AS one`
            return { exit, after }
          }).pipe(Effect.provide(Layer.provideMerge(layer, TestClock.layer())))
          const error = failureOf(outcome.exit) as PgFailure.TransientError
          // The server answered the cancel with 57014, so the statement was not applied: StatementTimeout,
          // retryable whatever the statement (an AttemptTimeout in the sent phase would be an unknown outcome).
          assert.strictEqual(error._tag, "TransientError")
          assert.strictEqual(error.reason._tag, "StatementTimeoutError")
          assert.deepStrictEqual(outcome.after, [{ one: 1 }])
          assert.deepStrictEqual(yield* server.activeQueries(applicationName), [])
        })
    )

    it.effect(
      "(f) on a silent network (the proxy holds everything) the attempt ends at its deadline plus the grace period",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const proxy = yield* FaultProxy.make(server)
          // The cancel request needs a connection of its own, which the paused proxy holds too: only ending the
          // session (after the 125 ms grace period) can end the attempt.
          const outcome = yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            yield* sql`SELECT 1`
            yield* proxy.pause
            const started = yield* Clock.currentTimeMillis
            const exit = yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`)).pipe(
              Effect.timeoutOrElse({
                duration: "5 seconds",
                orElse: () => Effect.die(new Error("the attempt waited for the network instead of ending the session"))
              })
            )
            const elapsed = (yield* Clock.currentTimeMillis) - started
            yield* proxy.resume
            const after = yield* sql<{ one: number }>`SELECT 1 AS one`
            return { exit, elapsed, after }
          }).pipe(
            Effect.provide(
              ResilientPg.layer({
                url: proxy.url,
                applicationName: appName(),
                ...fast,
                maxConnections: 1,
                attemptTimeout: "500 millis",
                retriesAfterFirst: 0
              })
            )
          )
          const error = failureOf(outcome.exit) as PgFailure.TransientError
          assert.strictEqual(error._tag, "TransientError")
          assert.deepStrictEqual([error.reason._tag, PgFailure.phaseOf(error.reason)], ["AttemptTimeout", "sent"])
          // 500 ms deadline + 125 ms grace + one watchdog tick (25 ms) each, with room for a slow machine.
          assert.isAtLeast(outcome.elapsed, 500)
          assert.isBelow(outcome.elapsed, 2000)
          assert.deepStrictEqual(outcome.after, [{ one: 1 }])
        }).pipe(Effect.scoped)
    )

    it.effect(
      "(g) with the pool's only connection held, a statement fails with the typed timeout instead of hanging",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const { layer } = resilient(server, {
            ...fast,
            maxConnections: 1,
            attemptTimeout: "150 millis",
            retriesAfterFirst: 2
          })
          const exit = yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const holder = yield* Effect.forkChild(sql.withTransaction(Effect.never))
            yield* Eventually.until((yield* ResilientPg.ResilientPg).stats, {
              what: "the holder's attempt",
              accept: (s) => s.attempts >= 1,
              timeout: "5 seconds"
            })
            const exit = yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`))
            yield* Fiber.interrupt(holder)
            return exit
          }).pipe(Effect.provide(layer))
          const error = failureOf(exit) as PgFailure.TransientError
          assert.strictEqual(error.reason._tag, "AttemptTimeout")
          assert.strictEqual(PgFailure.phaseOf(error.reason), "connect")
        })
    )

    it.effect("statements inside a transaction are not retried one by one", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const table = `tx_${randomUUID().replaceAll("-", "")}`
        yield* server.admin.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
        const { applicationName, layer } = resilient(server, fast)
        const exit = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const tx = yield* Effect.forkChild(
            Effect.exit(
              sql.withTransaction(
                Effect.gen(function* () {
                  yield* sql`INSERT INTO ${sql(table)} (id) VALUES (1)`
                  yield* sql`SELECT pg_sleep(0.5)`
                  yield* sql`INSERT INTO ${sql(table)} (id) VALUES (2)`
                })
              )
            )
          )
          yield* Eventually.until(server.activeQueries(applicationName), {
            what: "the transaction's pg_sleep running on the server",
            accept: (queries) => queries.some((q) => q.includes("pg_sleep")),
            timeout: "5 seconds"
          })
          yield* server.terminateBackends(applicationName)
          const exit = yield* Fiber.join(tx)
          const stats = yield* (yield* ResilientPg.ResilientPg).stats
          // One acquisition of the transaction's connection, no statement-level attempts.
          assert.strictEqual(stats.attempts, 1)
          assert.strictEqual(stats.statements, 0)
          return exit
        }).pipe(Effect.provide(layer))
        const error = failureOf(exit) as any
        assert.strictEqual(error.reason._tag, "ConnectionError")
        const rows = yield* server.admin.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)
        assert.strictEqual(rows[0]!.n, 0)
      })
    )
  })
})
