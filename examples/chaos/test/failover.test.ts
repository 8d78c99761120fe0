/**
 * Failover on a real primary + synchronous streaming standby (PgCluster), with
 * the library's defaults and libpq's multi-host URLs.
 */
import { assert, describe, it } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { ResilientPg, Target } from "@sturdy/pg"
import { PgCluster } from "@sturdy/testing"
import { Effect, Exit, Layer, Logger, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { SqlClient } from "effect/sql"
import { execFileSync } from "node:child_process"
import * as Net from "node:net"
import * as Failover from "../src/Failover.ts"
import * as Runner from "../src/Runner.ts"

const quiet = Layer.provide(Logger.layer([]))

/** `postgres://user:password@<hosts>/database?<query>` for the cluster. */
const urlFor = (cluster: PgCluster.PgClusterService, hosts: string, query: string) => {
  const url = new URL(Redacted.value(cluster.nodes[0].url))
  return `postgres://${url.username}:${url.password}@${hosts}${url.pathname}${query === "" ? "" : `?${query}`}`
}

/** The port of the server a session lands on, asked through Sturdy. */
const landsOn = (url: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const [{ port }] = yield* sql<{ port: number }>`SELECT inet_server_port() AS port`
    return port
  }).pipe(
    ResilientPg.unwrapFailures,
    Effect.provide(
      ResilientPg.layer({
        url: Redacted.make(url),
        backoffBase: "10 millis",
        backoffJitter: "5 millis",
        retriesAfterFirst: 1
      }).pipe(quiet)
    ),
    Effect.exit,
    Effect.map((exit) => (Exit.isSuccess(exit) ? exit.value : "none"))
  )

/** libpq's own answer (psql 15, Debian's client), or "none" when it connects nowhere. */
const libpqLandsOn = (url: string): number | "none" => {
  try {
    return Number(
      execFileSync("psql", [url, "-Atc", "SELECT inet_server_port()"], { encoding: "utf8", timeout: 10_000 }).trim()
    )
  } catch {
    return "none"
  }
}

const hasPsql = (() => {
  try {
    execFileSync("psql", ["--version"])
    return true
  } catch {
    return false
  }
})()

describe("failover on a real primary + synchronous standby", () => {
  it.live(
    "unplanned failover, 20 writes/s, defaults and a multi-host URL: the first acknowledged write after the promotion within 1 s, 0 lost, 0 duplicated, every failure typed",
    () =>
      Effect.gen(function* () {
        const cluster = yield* PgCluster.make()
        yield* cluster.waitForStreaming
        const result = yield* Failover.run(cluster)
        process.stdout.write(`\n${Failover.describe(result)}\n`)
        const sturdy = result.sturdy
        assert.isDefined(sturdy.firstAckAfterPromoteMillis, Failover.describe(result))
        assert.isBelow(sturdy.firstAckAfterPromoteMillis!, 1000, Failover.describe(result))
        assert.strictEqual(sturdy.lost, 0)
        assert.strictEqual(sturdy.duplicated, 0)
        assert.strictEqual(result.plain.lost, 0)
        for (const reason of [...Object.keys(sturdy.failuresByReason), ...Object.keys(sturdy.readFailuresByReason)]) {
          assert.match(reason, /^(TransientError|OutcomeUnknown|CircuitOpen)/, Failover.describe(result))
        }
        // Reads are retried through the failover, and none ends OutcomeUnknown: they are safe to run again.
        assert.isAbove(sturdy.reads, 100)
        assert.isFalse(Object.keys(sturdy.readFailuresByReason).some((reason) => reason.startsWith("OutcomeUnknown")))
      }).pipe(Effect.scoped),
    90_000
  )

  it.live(
    "planned switchover (fast stop, then promote), 20 writes/s: the first acknowledged write after the promotion within 1 s, 0 lost, 0 duplicated",
    () =>
      Effect.gen(function* () {
        const cluster = yield* PgCluster.make()
        yield* cluster.waitForStreaming
        const result = yield* Failover.run(cluster, { stop: "fast" })
        process.stdout.write(`\nswitchover: ${Failover.describe(result)}\n`)
        assert.isBelow(
          result.sturdy.firstAckAfterPromoteMillis ?? Number.POSITIVE_INFINITY,
          1000,
          Failover.describe(result)
        )
        assert.strictEqual(result.sturdy.lost, 0)
        assert.strictEqual(result.sturdy.duplicated, 0)
        for (const reason of Object.keys(result.sturdy.failuresByReason)) {
          assert.match(reason, /^(TransientError|OutcomeUnknown|CircuitOpen)/, Failover.describe(result))
        }
      }).pipe(Effect.scoped),
    90_000
  )

  it.live(
    "every target_session_attrs value, both host orders, lands where libpq lands",
    () =>
      Effect.gen(function* () {
        const cluster = yield* PgCluster.make({ synchronous: false })
        yield* cluster.waitForStreaming
        const [primary, standby] = cluster.nodes
        // libpq's documented answers for a primary and a standby, whichever is listed first.
        const expected: Record<Target.SessionAttrs, (first: number, second: number) => number> = {
          any: (first) => first,
          "read-write": () => primary.port,
          "read-only": () => standby.port,
          primary: () => primary.port,
          standby: () => standby.port,
          "prefer-standby": () => standby.port
        }
        for (const order of [
          [primary.port, standby.port],
          [standby.port, primary.port]
        ] as const) {
          for (const attrs of Target.sessionAttrs) {
            const url = urlFor(cluster, `127.0.0.1:${order[0]},127.0.0.1:${order[1]}`, `target_session_attrs=${attrs}`)
            const sturdy = yield* landsOn(url)
            assert.strictEqual(sturdy, expected[attrs](order[0], order[1]), `${attrs}, ${order.join(",")}`)
            if (hasPsql) assert.strictEqual(sturdy, libpqLandsOn(url), `${attrs}, ${order.join(",")}: libpq differs`)
          }
        }
        // With only the standby listed, read-write finds nothing, as libpq does.
        const onlyStandby = urlFor(cluster, `127.0.0.1:${standby.port}`, "target_session_attrs=read-write")
        assert.strictEqual(yield* landsOn(onlyStandby), "none")
        if (hasPsql) assert.strictEqual(libpqLandsOn(onlyStandby), "none")
      }).pipe(Effect.scoped),
    90_000
  )

  it.live(
    "stale endpoint: an address repointed from the standby to the primary; no write started 1 s after the repoint ends in 25006",
    () =>
      Effect.gen(function* () {
        const cluster = yield* PgCluster.make({ synchronous: false })
        yield* cluster.waitForStreaming
        const [primary, standby] = cluster.nodes
        // The endpoint: a TCP forwarder whose upstream can be switched, as DNS or a virtual IP is.
        let upstream = standby.port
        const endpoint = yield* Effect.acquireRelease(
          Effect.promise(
            () =>
              new Promise<Net.Server>((resolve) => {
                const server = Net.createServer((client) => {
                  const socket = Net.connect({ host: "127.0.0.1", port: upstream })
                  client.pipe(socket).pipe(client)
                  client.on("error", () => socket.destroy())
                  socket.on("error", () => client.destroy())
                })
                server.listen(0, "127.0.0.1", () => resolve(server))
              })
          ),
          (server) => Effect.sync(() => server.close())
        )
        const port = (endpoint.address() as Net.AddressInfo).port
        const admin = yield* PgClient.make({ url: primary.url, maxConnections: 1 }).pipe(
          Effect.provide(Reactivity.layer)
        )
        yield* admin`CREATE TABLE IF NOT EXISTS stale_endpoint (id uuid PRIMARY KEY)`
        const records: Array<Runner.CallRecord & { readonly reason: string }> = []
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const write = (id: string) =>
            Effect.gen(function* () {
              const startedAt = performance.now()
              const exit = yield* Effect.exit(
                ResilientPg.unwrapFailures(sql`INSERT INTO stale_endpoint (id) VALUES (${id}::uuid)`)
              )
              const reason = Exit.isSuccess(exit) ? "ok" : Runner.endingOf(exit)
              const code = Exit.isFailure(exit) ? JSON.stringify(exit.cause).includes("25006") : false
              records.push({
                workload: "inserts",
                id,
                startedAt,
                millis: performance.now() - startedAt,
                ended: reason,
                reason: code ? "25006" : reason
              })
            })
          // Warm the pool on the standby: every write fails there.
          yield* Effect.forEach(Array.from({ length: 10 }), () => Effect.forkChild(write(crypto.randomUUID())), {
            discard: true
          })
          yield* Effect.sleep("1 second")
          upstream = primary.port
          const repointedAt = performance.now()
          for (let i = 0; i < 60; i++) {
            yield* Effect.forkChild(write(crypto.randomUUID()))
            yield* Effect.sleep("50 millis")
          }
          yield* Effect.sleep("12 seconds")
          const late = records.filter((r) => r.startedAt > repointedAt + 1000)
          process.stdout.write(
            `stale endpoint: ${late.length} writes started 1 s or more after the repoint, ${late.filter((r) => r.ended === "ok").length} acknowledged, ${late.filter((r) => r.reason === "25006").length} ended in 25006\n`
          )
          assert.isAbove(late.length, 30)
          assert.strictEqual(late.filter((r) => r.reason === "25006").length, 0)
          assert.strictEqual(late.filter((r) => r.ended !== "ok").length, 0)
        }).pipe(
          Effect.provide(
            ResilientPg.layer({
              url: Redacted.make(urlFor(cluster, `127.0.0.1:${port}`, "")),
              applicationName: "sturdy-stale-endpoint",
              maxConnections: 4
            }).pipe(quiet)
          ),
          // The writes' own failure lines (the warm-up fails on the standby by design).
          Effect.provide(Logger.layer([]))
        )
      }).pipe(Effect.scoped),
    90_000
  )
})
