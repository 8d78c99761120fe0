import { assert, describe, layer } from "@effect/vitest"
import { PgFailure, ResilientPg } from "@sturdy/pg"
import { LogCapture, PgBouncer, PgServer } from "@sturdy/testing"
import { Effect, Exit, Layer, Logger, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { randomBytes } from "node:crypto"
import { appName, failureOf } from "./helpers.ts"

const poolModes = ["session", "transaction"] as const

/** The same URL with one part replaced. */
const withUrl = (url: Redacted.Redacted<string>, change: (url: URL) => void) => {
  const parsed = new URL(Redacted.value(url))
  change(parsed)
  return Redacted.make(parsed.toString())
}

const quiet = Layer.provide(Logger.layer([]))

describe("behind a real PgBouncer with its default configuration, with Sturdy's defaults", () => {
  layer(PgServer.layer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect.each(poolModes)(
      "%s pooling: statements, parameters, sql.withTransaction and ResilientPg.withTransaction work",
      (poolMode) =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const bouncer = yield* PgBouncer.make(server, { poolMode })
          const table = `pooler_${poolMode}_${randomBytes(4).toString("hex")}`
          yield* server.admin.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY, note text NOT NULL)`)
          yield* Effect.addFinalizer(() => Effect.ignore(server.execute(`DROP TABLE IF EXISTS ${table}`)))
          yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            assert.deepStrictEqual(yield* sql<{ one: number }>`SELECT 1 AS one`, [{ one: 1 }])
            assert.deepStrictEqual(yield* sql<{ sum: number }>`SELECT ${20}::int + ${22}::int AS sum`, [{ sum: 42 }])
            yield* sql.withTransaction(
              Effect.andThen(
                sql`INSERT INTO ${sql(table)} (id, note) VALUES (1, 'sql.withTransaction')`,
                sql`INSERT INTO ${sql(table)} (id, note) VALUES (2, 'same transaction')`
              )
            )
            const counted = yield* ResilientPg.withTransaction(
              Effect.gen(function* () {
                yield* sql`INSERT INTO ${sql(table)} (id, note) VALUES (3, 'ResilientPg.withTransaction')`
                return yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`
              }),
              { isolation: "serializable" }
            )
            assert.deepStrictEqual(counted, [{ n: 3 }])
            // Inside a transaction the server-side timeout is in force (SET LOCAL), behind the pooler too.
            const [{ timeout }] = yield* sql.withTransaction(
              sql<{ timeout: string }>`SELECT current_setting('statement_timeout') AS timeout`
            )
            assert.strictEqual(timeout, "10s")
          }).pipe(Effect.provide(ResilientPg.layer({ url: bouncer.url, applicationName: appName() }).pipe(quiet)))
          const rows = yield* server.admin<{ id: number }>`SELECT id FROM ${server.admin(table)} ORDER BY id`
          assert.deepStrictEqual(
            rows.map((row) => row.id),
            [1, 2, 3]
          )
        }).pipe(Effect.scoped)
    )

    it.effect(
      "transaction pooling under concurrency: 200 statements and 100 transactions on 4 connections all succeed (prepared statements turn off once, logged)",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const bouncer = yield* PgBouncer.make(server, { poolMode: "transaction" })
          const table = `pooler_concurrent_${randomBytes(4).toString("hex")}`
          yield* server.admin.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
          yield* Effect.addFinalizer(() => Effect.ignore(server.execute(`DROP TABLE IF EXISTS ${table}`)))
          const logs = yield* LogCapture.make
          const exits = yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const statements = Array.from({ length: 200 }, (_, i) => sql`SELECT ${i}::int AS i`)
            const transactions = Array.from({ length: 100 }, (_, i) =>
              ResilientPg.withTransaction(
                Effect.andThen(
                  sql`INSERT INTO ${sql(table)} (id) VALUES (${i})`,
                  sql`SELECT count(*) FROM ${sql(table)}`
                )
              )
            )
            return yield* Effect.forEach([...statements, ...transactions], Effect.exit, { concurrency: 12 })
          }).pipe(
            Effect.provide(
              ResilientPg.layer({
                url: bouncer.url,
                applicationName: appName(),
                maxConnections: 4,
                backoffBase: "20 millis",
                backoffJitter: "10 millis"
              }).pipe(Layer.provide(logs.layer))
            )
          )
          assert.deepStrictEqual(
            exits.filter(Exit.isFailure).map((exit) => String(exit.cause)),
            []
          )
          const [{ n }] = yield* server.admin<{ n: number }>`SELECT count(*)::int AS n FROM ${server.admin(table)}`
          assert.strictEqual(n, 100)
          const off = (yield* logs.entries).filter(
            (entry) => entry.annotations["sturdy.event"] === "prepared-statements-off"
          )
          assert.strictEqual(off.length, 1)
        }).pipe(Effect.scoped),
      60_000
    )

    it.effect.each(poolModes)(
      "%s pooling: pg_sleep(3) inside a transaction with a 1 s attempt timeout ends in 1 s +-20 %, 57014 (StatementTimeoutError)",
      (poolMode) =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const bouncer = yield* PgBouncer.make(server, { poolMode })
          yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const started = performance.now()
            const exit = yield* Effect.exit(sql.withTransaction(sql`SELECT pg_sleep(3)`))
            const elapsed = performance.now() - started
            const error = failureOf(exit) as { readonly reason: { readonly cause?: { readonly code?: string } } }
            assert.strictEqual(error.reason.cause?.code, "57014")
            assert.isAbove(elapsed, 800)
            assert.isBelow(elapsed, 1200)
          }).pipe(
            Effect.provide(
              ResilientPg.layer({ url: bouncer.url, applicationName: appName(), attemptTimeout: "1 second" }).pipe(
                quiet
              )
            )
          )
        }).pipe(Effect.scoped)
    )

    const refusals = [
      ...poolModes.map((mode) => ({ via: `PgBouncer ${mode}`, mode })),
      { via: "direct", mode: undefined }
    ] as const
    it.effect.each(refusals)(
      "$via: a wrong password and an unknown database fail once, typed, in under a second; the breaker stays closed",
      ({ mode }) =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const url = mode === undefined ? server.url : (yield* PgBouncer.make(server, { poolMode: mode })).url
          const cases = [
            {
              url: withUrl(url, (u) => {
                u.password = "not-the-password"
              }),
              refusal: "AuthenticationFailed"
            },
            {
              url: withUrl(url, (u) => {
                u.pathname = "/no_such_database"
              }),
              refusal: "UnknownDatabase"
            }
          ] as const
          for (const c of cases) {
            yield* Effect.gen(function* () {
              const sql = yield* SqlClient.SqlClient
              const service = yield* ResilientPg.ResilientPg
              const started = performance.now()
              const exit = yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`))
              const elapsed = performance.now() - started
              const error = failureOf(exit) as PgFailure.ConfigurationRefused
              assert.strictEqual(error._tag, "ConfigurationRefused")
              assert.strictEqual(error.refusal, c.refusal)
              assert.notInclude(error.message, "not-the-password")
              assert.isBelow(elapsed, 1000)
              const stats = yield* service.stats
              assert.strictEqual(stats.attempts, 1, "not retried")
              assert.strictEqual(stats.retries, 0)
              assert.strictEqual((yield* service.breakerState)._tag, "Closed")
              assert.isTrue(Exit.isFailure(exit))
            }).pipe(Effect.provide(ResilientPg.layer({ url: c.url, applicationName: appName() }).pipe(quiet)))
          }
        }).pipe(Effect.scoped)
    )
  })
})
