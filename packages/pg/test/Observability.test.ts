import { assert, describe, layer } from "@effect/vitest"

import { ResilientPg } from "@sturdy/pg"
import { DatabaseMetrics } from "@sturdy/resilience"
import { LogCapture, PgServer } from "@sturdy/testing"
import { Effect, Fiber, Layer, Metric, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { randomUUID } from "node:crypto"
import { fast, resilient } from "./helpers.ts"

/** A function that fails with 25006 (a transient, not-applied failure) on every other call: the retry then succeeds. */
const createFlaky = (server: PgServer.PgServerService) =>
  Effect.gen(function* () {
    const name = `flaky_${randomUUID().replaceAll("-", "")}`
    yield* server.admin.unsafe(`CREATE SEQUENCE ${name}_seq`)
    yield* server.admin.unsafe(
      `CREATE FUNCTION ${name}() RETURNS int LANGUAGE plpgsql AS $$
       BEGIN
         IF nextval('${name}_seq') % 2 = 1 THEN RAISE EXCEPTION 'failing over' USING ERRCODE = '25006'; END IF;
         RETURN 1;
       END $$`
    )
    return name
  })

const seriesValue = (
  snapshots: ReadonlyArray<Metric.Metric.Snapshot>,
  id: string,
  attributes?: Record<string, string>
) => {
  const found = snapshots.find(
    (s) =>
      s.id === id &&
      Object.entries(attributes ?? {}).every(
        ([k, v]) => (s.attributes as Record<string, unknown> | undefined)?.[k] === v
      )
  )
  assert.isDefined(found, `metric ${id} ${JSON.stringify(attributes ?? {})}`)
  return found!.state as unknown as Record<string, unknown>
}

describe("metrics and lifecycle logs", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("after N successes, M retried-then-successful calls and K failures, the snapshot says exactly that", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const flaky = yield* createFlaky(server)
        const registry: Metric.MetricRegistry = new Map()
        const [N, M, K] = [7, 3, 4]
        const { layer } = resilient(server, fast)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const metrics = yield* DatabaseMetrics.DatabaseMetrics
          for (let i = 0; i < N; i++) yield* sql`SELECT 1`
          for (let i = 0; i < M; i++) yield* sql`SELECT ${sql.literal(flaky)}() AS one`
          for (let i = 0; i < K; i++) yield* Effect.exit(sql`SELEC 1`)
          const snapshot = yield* metrics.snapshot
          assert.strictEqual(snapshot.totalQueries, N + M + K)
          assert.strictEqual(snapshot.failedQueries, K)
          assert.strictEqual(snapshot.successRate, ((N + M) / (N + M + K)) * 100)
          assert.strictEqual(snapshot.attempts, N + 2 * M + K)
          assert.strictEqual(snapshot.retries, M)
          assert.strictEqual(snapshot.rejections, 0)
          assert.strictEqual(snapshot.circuitState, "Closed")
          assert.strictEqual(snapshot.failureCount, 0)
          assert.strictEqual(snapshot.lastHealthCheck?.status, "healthy")
          assert.isAbove(snapshot.avgResponseTime, 0)
          assert.isTrue(0 < snapshot.p50 && snapshot.p50 <= snapshot.p95 && snapshot.p95 <= snapshot.p99)
          assert.deepStrictEqual(
            { max: snapshot.pool.max, inUse: snapshot.pool.inUse, waiting: snapshot.pool.waiting },
            { max: 10, inUse: 0, waiting: 0 }
          )
          assert.strictEqual(snapshot.pool.open, 1)
          assert.strictEqual(snapshot.pool.idle, snapshot.pool.open)

          // The same numbers through effect's metrics, as an exporter reads them.
          const series = yield* Metric.snapshot
          assert.strictEqual(seriesValue(series, "sturdy_statements_total").count, N + M + K)
          assert.strictEqual(seriesValue(series, "sturdy_statements_failed_total").count, K)
          assert.strictEqual(seriesValue(series, "sturdy_attempts_total").count, N + 2 * M + K)
          assert.strictEqual(seriesValue(series, "sturdy_retries_total").count, M)
          assert.strictEqual(seriesValue(series, "sturdy_breaker_state", { state: "Closed" }).value, 1)
          assert.strictEqual(seriesValue(series, "sturdy_breaker_state", { state: "Open" }).value, 0)
          assert.strictEqual(seriesValue(series, "sturdy_health_status").value, 1)
          assert.strictEqual(seriesValue(series, "sturdy_statement_duration_ms").count, N + M + K)
          assert.strictEqual(seriesValue(series, "sturdy_pool_in_use").value, 0)
          // The only labelled series, each with its fixed labels: the state gauge names states as the snapshot does,
          // the transition counters as the breaker's transitions do.
          assert.deepStrictEqual(
            series
              .filter((s) => s.attributes !== undefined)
              .map((s) => `${s.id}${JSON.stringify(s.attributes)}`)
              .sort(),
            [
              'sturdy_breaker_state{"state":"Closed"}',
              'sturdy_breaker_state{"state":"HalfOpen"}',
              'sturdy_breaker_state{"state":"Open"}',
              'sturdy_breaker_transitions_total{"from":"Closed","to":"Open"}',
              'sturdy_breaker_transitions_total{"from":"HalfOpen","to":"Closed"}',
              'sturdy_breaker_transitions_total{"from":"HalfOpen","to":"Open"}',
              'sturdy_breaker_transitions_total{"from":"Open","to":"HalfOpen"}'
            ]
          )
        }).pipe(Effect.provide(layer), Effect.provideService(Metric.MetricRegistry, registry))
        // The layer's scope closed: its series are gone from the registry.
        assert.strictEqual(registry.size, 0)
      })
    )

    it.effect(
      "multiplexed: a failure on a shared session is noted after the statement (25006 retires the session)",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const flaky = yield* createFlaky(server)
          const M = 3
          const { layer } = resilient(server, { ...fast, multiplex: true, maxConnections: 1 })
          yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const service = yield* ResilientPg.ResilientPg
            yield* sql`SELECT 1`
            const opened = (yield* service.stats).connectionsOpened!
            for (let i = 0; i < M; i++) {
              const rows = yield* sql<{ one: number }>`SELECT ${sql.literal(flaky)}() AS one`
              assert.deepStrictEqual(rows, [{ one: 1 }])
            }
            // Each 25006 (read-only: the server behind the session changed) retired the shared session, and the
            // retry ran on a new one; without the stack noting the failure, the first session would serve them all.
            assert.strictEqual((yield* service.stats).connectionsOpened! - opened, M)
            const snapshot = yield* (yield* DatabaseMetrics.DatabaseMetrics).snapshot
            assert.strictEqual(snapshot.retries, M)
            assert.deepStrictEqual(
              { inUse: snapshot.pool.inUse, waiting: snapshot.pool.waiting },
              { inUse: 0, waiting: 0 }
            )
          }).pipe(Effect.provide(layer))
        })
    )

    it.effect("every lifecycle event is logged, structured, and the password appears in none (TestClock)", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const flaky = yield* createFlaky(server)
        const logs = yield* LogCapture.make
        const { layer } = resilient(server, {
          breakerFailures: 2,
          retriesAfterFirst: 1,
          healthCheckInterval: "30 seconds"
        })
        const event = (name: string, extra: (entry: LogCapture.Entry) => boolean = () => true) =>
          logs.waitFor((entry) => entry.annotations["sturdy.event"] === name && extra(entry))
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          // A call that fails once and recovers.
          const recovering = yield* Effect.forkChild(sql`SELECT ${sql.literal(flaky)}()`)
          yield* event("retry")
          yield* TestClock.adjust("2 seconds")
          yield* Fiber.join(recovering)
          // An outage: the call fails after its retry, and its two failed attempts open the breaker.
          yield* server.stop
          const failing = yield* Effect.forkChild(Effect.exit(sql`SELECT 1`))
          yield* event("retry")
          yield* TestClock.adjust("2 seconds")
          yield* Fiber.join(failing)
          yield* event("breaker", (entry) => entry.annotations["sturdy.to"] === "Open")
          // The health check notices.
          yield* TestClock.adjust("30 seconds")
          yield* event("health", (entry) => entry.annotations["sturdy.health"] === "unhealthy")
          // The server is back: health recovers, and after the open period a probe closes the breaker.
          yield* server.start
          yield* TestClock.adjust("30 seconds")
          yield* event("health", (entry) => entry.annotations["sturdy.health"] === "healthy")
          yield* sql`SELECT 1`
          yield* event("breaker", (entry) => entry.annotations["sturdy.to"] === "Closed")
        }).pipe(
          // The client's background fibers (breaker transitions, health) log through what its layer was built with.
          Effect.provide(Layer.provideMerge(layer, Layer.merge(logs.layer, TestClock.layer()))),
          Effect.ensuring(Effect.orDie(server.start))
        )
        const entries = yield* logs.entries
        const seen = new Set(entries.map((entry) => `${entry.annotations["sturdy.event"]}:${entry.level}`))
        for (const expected of [
          "configuration:INFO",
          "pool:INFO",
          "health:INFO", // initial check, and healthy again
          "retry:WARN",
          "recovered:INFO",
          "failed:ERROR",
          "breaker:ERROR", // opened
          "breaker:WARN", // half-open
          "breaker:INFO", // closed
          "health:ERROR" // unhealthy
        ])
          assert.isTrue(seen.has(expected), `missing ${expected}; saw ${[...seen].join(", ")}`)
        const configuration = entries.find((entry) => entry.annotations["sturdy.event"] === "configuration")!
        assert.strictEqual(configuration.annotations["sturdy.profile"], "development")
        assert.strictEqual(configuration.annotations["sturdy.database"], `127.0.0.1:${server.port}/postgres`)
        const failed = entries.find((entry) => entry.annotations["sturdy.event"] === "failed")!
        assert.strictEqual(failed.annotations["sturdy.operation"], "execute")
        assert.strictEqual(failed.annotations["sturdy.reason"], "ConnectionRefused")
        const text = yield* logs.text
        assert.notInclude(text, Redacted.value(server.password))
      })
    )
  })
})
