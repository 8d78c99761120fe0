import { assert, describe, it, layer } from "@effect/vitest"
import { Alerts } from "@sturdy/admin"
import { ResilientPg } from "@sturdy/pg"
import { Eventually, LogCapture, PgServer } from "@sturdy/testing"
import { Clock, Effect, Layer, Redacted, Stream } from "effect"
import { FetchHttpClient } from "effect/http"
import { SqlClient } from "effect/sql"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"

const at = (millis: number) => new Date(millis).toISOString()

const alert = (kind: Alerts.Kind, millis: number): Alerts.Alert => ({
  kind,
  subject: kind.startsWith("breaker") ? "breaker" : "health",
  severity: kind === "breaker-opened" || kind === "database-unhealthy" ? "critical" : "info",
  database: "db:5432/app",
  message: kind,
  at: at(millis),
  firstAt: at(millis),
  occurrences: 1,
  details: {}
})

const summary = (alerts: ReadonlyArray<Alerts.Alert>) => alerts.map((a) => `${a.kind}x${a.occurrences}@${a.at}`)

describe("Alerts.Debouncer", () => {
  it("sends the first alert at once and merges repeats into one alert at the end of the window", () => {
    const debouncer = new Alerts.Debouncer(1000)
    assert.deepStrictEqual(summary(debouncer.offer(alert("breaker-opened", 0), 0)), [`breaker-openedx1@${at(0)}`])
    assert.deepStrictEqual(debouncer.offer(alert("breaker-opened", 300), 300), [])
    assert.deepStrictEqual(debouncer.offer(alert("breaker-opened", 600), 600), [])
    assert.strictEqual(debouncer.nextDue(), 1000)
    assert.deepStrictEqual(debouncer.due(999), [])
    const [merged] = debouncer.due(1000)
    assert.deepStrictEqual([merged!.occurrences, merged!.firstAt, merged!.at], [2, at(300), at(600)])
    assert.include(merged!.message, "2 times since")
    // The merged alert starts a new window; a quiet window then ends it.
    assert.deepStrictEqual(debouncer.offer(alert("breaker-opened", 1500), 1500), [])
    assert.deepStrictEqual(summary(debouncer.due(2000)), [`breaker-openedx1@${at(1500)}`])
    assert.strictEqual(debouncer.nextDue(), undefined)
    assert.deepStrictEqual(debouncer.due(3000), [])
    assert.strictEqual(debouncer.offer(alert("breaker-opened", 3100), 3100).length, 1)
  })

  it("a change of condition flushes what was merged first and restarts the windows, so the last alert is the state", () => {
    const debouncer = new Alerts.Debouncer(60_000)
    debouncer.offer(alert("breaker-opened", 0), 0)
    debouncer.offer(alert("breaker-opened", 10), 10)
    debouncer.offer(alert("breaker-opened", 20), 20)
    assert.deepStrictEqual(summary(debouncer.offer(alert("breaker-closed", 30), 30)), [
      `breaker-openedx2@${at(20)}`,
      `breaker-closedx1@${at(30)}`
    ])
    // Opening again right after the closing is news: sent at once, not merged into the earlier window.
    assert.deepStrictEqual(summary(debouncer.offer(alert("breaker-opened", 40), 40)), [`breaker-openedx1@${at(40)}`])
    assert.strictEqual(debouncer.nextDue(), undefined)
  })

  it("conditions of different subjects do not interfere", () => {
    const debouncer = new Alerts.Debouncer(1000)
    debouncer.offer(alert("breaker-opened", 0), 0)
    debouncer.offer(alert("breaker-opened", 1), 1)
    assert.deepStrictEqual(summary(debouncer.offer(alert("database-unhealthy", 2), 2)), [
      `database-unhealthyx1@${at(2)}`
    ])
    assert.deepStrictEqual(summary(debouncer.due(1000)), [`breaker-openedx1@${at(1)}`])
  })
})

describe("Alerts.log", () => {
  it.effect("writes one structured line per alert, marked as an alert, at warning level when critical", () =>
    Effect.gen(function* () {
      const logs = yield* LogCapture.make
      yield* Effect.provide(
        Effect.andThen(
          Alerts.log.send({ ...alert("breaker-opened", 0), message: "breaker opened", occurrences: 3 }),
          Alerts.log.send({ ...alert("breaker-closed", 0), message: "breaker closed" })
        ),
        logs.layer
      )
      const lines = (yield* logs.entries).map((entry) => [entry.level, entry.message, entry.annotations])
      assert.deepStrictEqual(lines, [
        [
          "WARN",
          "Alert: breaker opened",
          {
            "sturdy.event": "alert",
            "sturdy.alert": "breaker-opened",
            "sturdy.database": "db:5432/app",
            "sturdy.occurrences": 3
          }
        ],
        [
          "INFO",
          "Alert: breaker closed",
          {
            "sturdy.event": "alert",
            "sturdy.alert": "breaker-closed",
            "sturdy.database": "db:5432/app",
            "sturdy.occurrences": 1
          }
        ]
      ])
    })
  )
})

/** A webhook receiver that answers each POST only after `holdMillis`. */
const receiver = (holdMillis: number) =>
  Effect.acquireRelease(
    Effect.callback<{ url: string; received: Array<{ at: number; alert: Alerts.Alert }>; server: Server }>((resume) => {
      const received: Array<{ at: number; alert: Alerts.Alert }> = []
      const server = createServer((request, response) => {
        let body = ""
        request.on("data", (chunk) => (body += chunk))
        request.on("end", () => {
          received.push({ at: Date.now(), alert: JSON.parse(body) })
          setTimeout(() => response.writeHead(204).end(), holdMillis)
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as AddressInfo
        resume(Effect.succeed({ url: `http://127.0.0.1:${port}/hook`, received, server }))
      })
    }),
    (hook) => Effect.callback<void>((resume) => void hook.server.close(() => resume(Effect.void)))
  )

describe("Alerts through a webhook, against a real server", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("one breaker-opened alert per debounce window while queries keep running, nothing lost", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const hook = yield* receiver(1500)
        const debounceMillis = 3000
        const database = ResilientPg.layer({
          url: server.url,
          applicationName: "sturdy-alerts-test",
          backoffBase: "20 millis",
          backoffJitter: "10 millis",
          breakerFailures: 2,
          breakerOpenDuration: "200 millis",
          healthCheckInterval: "300 millis",
          healthCheckTimeout: "1 second",
          // Queries fail at once while the breaker is open, so they keep coming during the window.
          whenCircuitOpen: "fail-fast"
        })
        const alerts = Layer.unwrap(
          Effect.map(Alerts.webhook({ url: hook.url, timeout: "5 seconds" }), (sink) =>
            Alerts.layer({ sinks: [sink], debounce: `${debounceMillis} millis` })
          )
        ).pipe(Layer.provide(FetchHttpClient.layer))

        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const pg = yield* ResilientPg.ResilientPg
          const openings: Array<number> = []
          yield* Effect.forkScoped(
            Stream.runForEach(pg.transitions, (t) =>
              t.to === "Open" ? Effect.sync(() => openings.push(Date.now())) : Effect.void
            ),
            { startImmediately: true }
          )
          yield* server.stop
          const latencies: Array<number> = []
          yield* Effect.gen(function* () {
            // Queries keep going for most of one debounce window while the receiver holds every POST for 1.5 s.
            const start = yield* Clock.currentTimeMillis
            while ((yield* Clock.currentTimeMillis) - start < debounceMillis - 500) {
              const before = yield* Clock.currentTimeMillis
              yield* Effect.exit(sql`SELECT 1`)
              latencies.push((yield* Clock.currentTimeMillis) - before)
              yield* Effect.sleep("10 millis")
            }
          }).pipe(Effect.ensuring(Effect.orDie(server.start)))

          const opened = hook.received.filter((r) => r.alert.kind === "breaker-opened")
          assert.isAtLeast(openings.length, 3, "the breaker must have opened several times during the outage")
          assert.strictEqual(opened.length, 1, JSON.stringify(hook.received.map((r) => r.alert)))
          assert.strictEqual(opened[0]!.alert.occurrences, 1)
          assert.isBelow(Math.max(...latencies), 1000, "a query waited on the webhook")
          assert.isAtLeast(latencies.length, 20)

          // After the restart the breaker closes: the merged openings arrive first, then the closing.
          yield* Eventually.holds(
            Effect.andThen(
              Effect.exit(sql`SELECT 1`),
              Effect.sync(() => hook.received.some((r) => r.alert.kind === "breaker-closed"))
            ),
            { what: "the breaker-closed alert", timeout: "15 seconds", interval: "50 millis" }
          )
          const kinds = hook.received.map((r) => r.alert.kind).filter((k) => k.startsWith("breaker"))
          assert.strictEqual(kinds[kinds.length - 1], "breaker-closed", JSON.stringify(kinds))
          const reported = hook.received
            .filter((r) => r.alert.kind === "breaker-opened")
            .reduce((sum, r) => sum + r.alert.occurrences, 0)
          assert.strictEqual(reported, openings.length, "every opening is counted in exactly one alert")
          assert.isTrue(hook.received.some((r) => r.alert.kind === "database-unhealthy"))

          const payloads = JSON.stringify(hook.received)
          assert.include(payloads, `"database":"${server.host}:${server.port}/${server.database}"`)
          assert.notInclude(payloads, Redacted.value(server.password))
          assert.notInclude(payloads, Redacted.value(server.url))
        }).pipe(Effect.provide(alerts.pipe(Layer.provideMerge(database))), Effect.scoped)
      }).pipe(Effect.scoped)
    )

    it.effect("a bad webhook URL or option is refused with a clear error", () =>
      Effect.gen(function* () {
        const bad = yield* Effect.flip(Alerts.webhook({ url: "ftp://example.com" }))
        assert.strictEqual(bad.message, "Alerts.webhook: url must be an http:// or https:// URL")
        const retries = yield* Effect.flip(Alerts.webhook({ url: "http://127.0.0.1:1/", retries: -1 }))
        assert.strictEqual(retries.message, "Alerts.webhook: retries must be an integer >= 0, got -1")
      }).pipe(Effect.provide(FetchHttpClient.layer))
    )
  })
})
