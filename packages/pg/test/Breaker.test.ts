import { assert, describe, layer } from "@effect/vitest"
import { type PgFailure, ResilientPg } from "@sturdy/pg"
import type { Breaker } from "@sturdy/resilience"
import { Eventually, LogCapture, PgServer } from "@sturdy/testing"
import { Duration, Effect, Exit, Fiber, Layer, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { randomUUID } from "node:crypto"
import { failureOf, fast, resilient } from "./helpers.ts"

const tagOf = (error: unknown) => (error as { readonly _tag: string })._tag

describe("the breaker inside ResilientPg, against a real server", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect("opens on the 5th failed attempt; the next call is rejected without a connection attempt", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const { layer } = resilient(server, { ...fast, retriesAfterFirst: 0 })
        yield* server.stop
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const service = yield* ResilientPg.ResilientPg
          for (let i = 1; i <= 5; i++) {
            const error = failureOf(yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`)))
            assert.strictEqual(tagOf(error), "TransientError")
            assert.strictEqual((yield* service.breakerState)._tag, i < 5 ? "Closed" : "Open")
          }
          const opened = (yield* service.stats).connectionsOpened
          const rejection = failureOf(
            yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`))
          ) as Breaker.CircuitOpen
          assert.strictEqual(rejection._tag, "CircuitOpen")
          // The first opening lasts 1 s (doubling with each consecutive opening, to 60 s).
          assert.isAbove(Duration.toMillis(rejection.retryAfter), 500)
          assert.isAtMost(Duration.toMillis(rejection.retryAfter), 1000)
          const stats = yield* service.stats
          assert.strictEqual(stats.connectionsOpened, opened)
          assert.strictEqual(stats.attempts, 5)
          assert.strictEqual(stats.rejections, 1)
        }).pipe(Effect.provide(layer), Effect.ensuring(Effect.orDie(server.start)))
      })
    )

    it.effect(
      "50 callers, pool of 10, server stopped: no connection attempt while open, parked calls included; the health probe closes it when the server is back (TestClock)",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const { layer } = resilient(server, { maxConnections: 10 })
          yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const service = yield* ResilientPg.ResilientPg
            // The pool's sockets at each transition, read by the subscriber as the transition is published.
            const marks: Array<{ readonly to: string; readonly sockets: number }> = []
            const transitions = yield* Effect.forkChild(
              Stream.runCollect(
                Stream.takeUntil(
                  Stream.tap(service.transitions, (t) =>
                    Effect.map(service.stats, (stats) => {
                      marks.push({ to: t.to, sockets: stats.connectionsOpened! })
                    })
                  ),
                  (t) => t.to === "Closed"
                )
              ),
              { startImmediately: true }
            )
            yield* sql`SELECT 1`
            yield* server.stop
            const before = yield* service.stats
            // 50 callers on 10 connections: 10 try to connect, 40 wait for a slot.
            const callers = yield* Effect.forEach(
              Array.from({ length: 50 }),
              () => Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`)),
              { concurrency: "unbounded" }
            ).pipe(Effect.forkChild({ startImmediately: true }))
            // Retries come due after 1-2 s, 2-3 s, ...; one of them may be the half-open probe after each open period.
            // Each step lets the real connection attempts of the retries due in it finish (in real time) first.
            for (let i = 0; i < 60 && callers.pollUnsafe() === undefined; i++) {
              yield* TestClock.adjust("500 millis")
              yield* TestClock.withLive(Effect.sleep("50 millis"))
            }
            const failures = (yield* Fiber.join(callers)).map((exit) => tagOf(failureOf(exit)))
            const after = yield* service.stats
            assert.strictEqual((yield* service.breakerState)._tag, "Open")
            assert.strictEqual(marks[0]?.to, "Open")
            // While open, no socket: each open period ends at a half-open transition with at most its probe's socket.
            marks.push({ to: "now", sockets: after.connectionsOpened! })
            for (let i = 0; i + 1 < marks.length; i++) {
              if (marks[i]!.to !== "Open") continue
              assert.isAtMost(
                marks[i + 1]!.sockets - marks[i]!.sockets,
                1,
                `sockets opened while open: ${JSON.stringify(marks)}`
              )
            }
            // Only calls admitted while the circuit was closed tried to connect: the 10 with a slot, and those woken
            // before the 5th failure opened it.
            assert.isAtMost(marks[0]!.sockets - before.connectionsOpened!, 14)
            assert.isAtLeast(failures.filter((tag) => tag === "CircuitOpen" || tag === "CircuitHalfOpen").length, 36)

            // The server is back: the health monitor probes every 500 ms while the circuit is open, and its success
            // closes it; no caller's call is needed.
            yield* server.start
            yield* TestClock.adjust("500 millis")
            const seen = (yield* Fiber.join(transitions)).map((t: Breaker.Transition) => `${t.from}->${t.to}`)
            assert.deepStrictEqual(seen.slice(-2), ["Open->HalfOpen", "HalfOpen->Closed"])
            const results = yield* Effect.forEach(
              Array.from({ length: 50 }),
              () => sql<{ one: number }>`SELECT 1 AS one`,
              { concurrency: "unbounded" }
            )
            assert.strictEqual(results.length, 50)
          }).pipe(
            // The same TestClock for the client (its breaker reads the clock it was built with) and the test.
            Effect.provide(Layer.provideMerge(layer, TestClock.layer())),
            Effect.ensuring(Effect.orDie(server.start))
          )
        }),
      30_000
    )

    it.effect("100 syntax errors and unique violations in a row leave the breaker closed", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const table = `breaker_${randomUUID().replaceAll("-", "")}`
        yield* server.admin.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
        const { layer } = resilient(server, fast)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const service = yield* ResilientPg.ResilientPg
          yield* sql`INSERT INTO ${sql(table)} (id) VALUES (1)`
          for (let i = 0; i < 100; i++) {
            const error = failureOf(
              yield* Effect.exit(i % 2 === 0 ? sql`SELEC 1` : sql`INSERT INTO ${sql(table)} (id) VALUES (1)`)
            ) as PgFailure.PolicyFailure | { readonly _tag: "SqlError"; readonly reason: { readonly _tag: string } }
            assert.strictEqual(error._tag, "SqlError")
          }
          assert.strictEqual((yield* service.breakerState)._tag, "Closed")
          const stats = yield* service.stats
          assert.strictEqual(stats.attempts, 101)
          assert.strictEqual(stats.retries, 0)
        }).pipe(Effect.provide(layer))
      })
    )

    it.effect("with production's 5 retries, the breaker (5 failed attempts) rejects the 6th attempt: fail fast", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const { layer } = resilient(server, { profile: "production", ...fast })
        yield* server.stop
        const exit = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          return yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`))
        }).pipe(Effect.provide(layer), Effect.ensuring(Effect.orDie(server.start)))
        assert.isTrue(Exit.isFailure(exit))
        assert.strictEqual(tagOf(failureOf(exit)), "CircuitOpen")
      })
    )

    it.effect("sessions lost mid-statement do not open it: the server is up, the retry reconnects", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const { applicationName, layer } = resilient(server, { ...fast, breakerFailures: 2 })
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const service = yield* ResilientPg.ResilientPg
          // Three statements in flight are killed at once, five times: three failures in a row each time.
          for (let i = 0; i < 5; i++) {
            const calls = yield* Effect.forkChild(
              Effect.all([sql`SELECT pg_sleep(0.3)`, sql`SELECT pg_sleep(0.3)`, sql`SELECT pg_sleep(0.3)`], {
                concurrency: "unbounded"
              })
            )
            yield* Eventually.until(server.activeQueries(applicationName), {
              what: "the three statements running on the server",
              accept: (queries) => queries.length >= 3,
              timeout: "5 seconds",
              interval: "10 millis"
            })
            yield* server.terminateBackends(applicationName)
            yield* Fiber.join(calls)
          }
          const stats = yield* service.stats
          assert.strictEqual(stats.retries, 15)
          assert.strictEqual((yield* service.breakerState)._tag, "Closed")
        }).pipe(Effect.provide(layer))
      })
    )

    it.effect(
      'whenCircuitOpen "wait-and-retry" (the default): a rejected retry waits its own backoff; the health probe closes the breaker and the next retry rides out the outage (TestClock)',
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const logs = yield* LogCapture.make
          // No jitter: the retries come at 1 s and 3 s, while the breaker would stay open until 5 s on its own.
          const { layer } = resilient(server, {
            profile: "development",
            backoffJitter: 0,
            breakerFailures: 1,
            breakerOpenDuration: "5 seconds"
          })
          yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const service = yield* ResilientPg.ResilientPg
            yield* server.stop
            const call = yield* Effect.forkChild(sql<{ one: number }>`SELECT 1 AS one`)
            // The first attempt fails and opens the breaker.
            const first = yield* logs.waitFor((entry) => entry.annotations["sturdy.event"] === "retry")
            assert.strictEqual(first.annotations["sturdy.reason"], "ConnectionRefused")
            assert.strictEqual((yield* service.breakerState)._tag, "Open")
            yield* TestClock.adjust((first.annotations["sturdy.delayMillis"] as number) + 1)
            // The retry is rejected without reaching the server, and waits its own backoff, not the open period.
            const rejected = yield* logs.waitFor((entry) => entry.annotations["sturdy.event"] === "retry")
            assert.strictEqual(rejected.annotations["sturdy.reason"], "CircuitOpen")
            assert.strictEqual(rejected.annotations["sturdy.delayMillis"], 2000)
            // The server is back: the health monitor's next probe (every 250 ms while open) closes the breaker.
            yield* server.start
            yield* TestClock.adjust("250 millis")
            yield* logs.waitFor(
              (entry) => entry.annotations["sturdy.event"] === "breaker" && entry.annotations["sturdy.to"] === "Closed"
            )
            yield* TestClock.adjust(2000)
            assert.deepStrictEqual(yield* Fiber.join(call), [{ one: 1 }])
            assert.strictEqual((yield* service.breakerState)._tag, "Closed")
            const stats = yield* service.stats
            assert.strictEqual(stats.rejections, 1)
          }).pipe(
            Effect.provide(Layer.provideMerge(layer, Layer.merge(logs.layer, TestClock.layer()))),
            Effect.ensuring(Effect.orDie(server.start))
          )
        })
    )
  })
})
