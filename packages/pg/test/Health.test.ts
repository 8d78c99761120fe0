import { assert, describe, layer } from "@effect/vitest"
import { ResilientPg } from "@sturdy/pg"
import { HealthMonitor } from "@sturdy/resilience"
import { Eventually, PgServer } from "@sturdy/testing"
import { Effect, Exit, Fiber, Layer, Option, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { failureOf, resilient } from "./helpers.ts"

const nextWithStatus = (health: HealthMonitor.Service, status: "healthy" | "unhealthy") =>
  Effect.forkChild(Stream.runHead(Stream.filter(health.changes, (result) => result.status === status)), {
    startImmediately: true
  })

describe("the health monitor, probing a real server on a TestClock schedule", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect(
      "with no traffic: unhealthy as soon as the server stops (its session ends), healthy one fast interval after it is back",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const { layer } = resilient(server, { healthCheckInterval: "30 seconds" })
          yield* Effect.gen(function* () {
            const health = yield* HealthMonitor.HealthMonitor
            const first = yield* health.lastHealthCheck
            assert.strictEqual(first.status, "healthy")
            // Under TestClock no time passes while the server answers.
            assert.strictEqual(first.responseTime, 0)

            // No clock adjustment: the probe's kept session ends with the server, which starts the next probe.
            const down = yield* nextWithStatus(health, "unhealthy")
            yield* server.stop
            const unhealthy = Option.getOrThrow(yield* Fiber.join(down))
            assert.strictEqual(unhealthy.status, "unhealthy")
            // Refused, or caught while the server was still shutting down: 57P03, a closed or reset start-up (seen in
            // CI: "read ECONNRESET" while connecting).
            assert.match(
              unhealthy.error!,
              /^(ConnectionRefused|CannotConnectNow|ConnectionClosed|ConnectionReset|AdminShutdown): /
            )
            assert.isUndefined(unhealthy.responseTime)
            assert.strictEqual((yield* health.lastHealthCheck).status, "unhealthy")

            // While unhealthy it probes every 500 ms, not every 30 s.
            yield* server.start
            const up = yield* nextWithStatus(health, "healthy")
            yield* TestClock.adjust("500 millis")
            assert.strictEqual(Option.getOrThrow(yield* Fiber.join(up)).status, "healthy")
          }).pipe(
            Effect.provide(Layer.provideMerge(layer, TestClock.layer())),
            Effect.ensuring(Effect.orDie(server.start))
          )
        })
    )

    it.effect(
      "the probe does not wait behind a saturated pool nor go through an open breaker, and its success closes it",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const { layer } = resilient(server, { maxConnections: 1, attemptTimeout: "100 millis", retriesAfterFirst: 0 })
          yield* Effect.gen(function* () {
            const health = yield* HealthMonitor.HealthMonitor
            const service = yield* ResilientPg.ResilientPg
            const sql = yield* SqlClient.SqlClient
            // The only connection is held; statements time out waiting for it, which opens the breaker.
            const holder = yield* Effect.forkChild(sql.withTransaction(Effect.never))
            yield* Eventually.until(service.pool, {
              what: "the holder to have the only connection",
              accept: (pool) => pool.inUse === 1,
              timeout: "5 seconds"
            })
            for (let i = 0; i < 5; i++) yield* Effect.exit(sql`SELECT 1`)
            assert.strictEqual((yield* service.stats).timeouts, 5)
            assert.strictEqual((yield* service.breakerState)._tag, "Open")
            assert.strictEqual((yield* health.check).status, "healthy")
            // The server answered the probe: the circuit closes without a caller's call.
            yield* Eventually.until(service.breakerState, {
              what: "the breaker to close",
              accept: (state) => state._tag === "Closed",
              timeout: "5 seconds"
            })
            yield* Fiber.interrupt(holder)
          }).pipe(Effect.provide(layer))
        })
    )

    it.effect('onStartup "degraded" (default) builds the layer while the server is down; "fail" fails it, typed', () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        yield* server.stop
        const degraded = yield* Effect.gen(function* () {
          return yield* (yield* HealthMonitor.HealthMonitor).lastHealthCheck
        }).pipe(Effect.provide(resilient(server).layer), Effect.exit)
        assert.isTrue(Exit.isSuccess(degraded))
        assert.strictEqual(Exit.isSuccess(degraded) ? degraded.value.status : "", "unhealthy")

        const failed = yield* Effect.exit(
          Effect.provide(Effect.void, resilient(server, { healthOnStartup: "fail" }).layer)
        )
        const error = failureOf(failed) as HealthMonitor.StartupHealthCheckFailed
        assert.strictEqual(error._tag, "StartupHealthCheckFailed")
        assert.include(error.message, "ConnectionRefused")
        yield* server.start
      })
    )
  })
})
