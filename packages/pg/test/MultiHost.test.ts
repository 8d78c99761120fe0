import { assert, describe, layer } from "@effect/vitest"
import { PgFailure, ResilientPg, Target } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { Effect, Exit, Layer, Logger, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as Net from "node:net"
import { appName, failureOf, fast } from "./helpers.ts"

/** A loopback port nobody listens on: connecting to it is refused. */
const deadPort = Effect.promise(
  () =>
    new Promise<number>((resolve) => {
      const server = Net.createServer()
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as Net.AddressInfo).port
        server.close(() => resolve(port))
      })
    })
)

/** The server's URL with its host list (and query) replaced. */
const withHosts = (server: PgServer.PgServerService, hosts: string, query = "") => {
  const url = new URL(Redacted.value(server.url))
  return Redacted.make(
    `postgres://${url.username}:${url.password}@${hosts}${url.pathname}${query === "" ? "" : `?${query}`}`
  )
}

const quiet = Layer.provide(Logger.layer([]))

describe("several hosts in one URL, libpq's syntax", () => {
  layer(PgServer.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("the first host refuses: connections walk to the second; the breaker's key names both", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const dead = yield* deadPort
        const url = withHosts(server, `127.0.0.1:${dead},127.0.0.1:${server.port}`)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const service = yield* ResilientPg.ResilientPg
          assert.deepStrictEqual(yield* sql<{ one: number }>`SELECT 1 AS one`, [{ one: 1 }])
          assert.strictEqual(service.database, `127.0.0.1:${dead},127.0.0.1:${server.port}/${server.database}`)
          assert.strictEqual((yield* service.stats).connectionsOpened, 1)
        }).pipe(Effect.provide(ResilientPg.layer({ url, applicationName: appName() }).pipe(quiet)))
      })
    )

    it.effect("the host= and port= parameters and target_session_attrs=read-write reach the primary", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const dead = yield* deadPort
        const url = withHosts(
          server,
          "",
          `host=127.0.0.1,127.0.0.1&port=${dead},${server.port}&target_session_attrs=read-write`
        )
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const [{ recovery }] = yield* sql<{ recovery: boolean }>`SELECT pg_is_in_recovery() AS recovery`
          assert.isFalse(recovery)
        }).pipe(Effect.provide(ResilientPg.layer({ url, applicationName: appName() }).pipe(quiet)))
      })
    )

    it.effect(
      "target_session_attrs=standby with only a primary: statements fail typed, NoMatchingHost, without reaching it",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const url = withHosts(server, `127.0.0.1:${server.port}`, "target_session_attrs=standby")
          const applicationName = appName()
          yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const exit = yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`))
            const error = failureOf(exit) as
              | PgFailure.TransientError
              | { readonly _tag: "CircuitOpen" | "CircuitHalfOpen" }
            assert.include(["TransientError", "CircuitOpen", "CircuitHalfOpen"], error._tag)
            if (error._tag === "TransientError") assert.strictEqual(error.reason._tag, "NoMatchingHost")
            // The pool opened no session on the primary for the client.
            assert.strictEqual(yield* server.connectionCount(applicationName), 0)
          }).pipe(
            Effect.provide(ResilientPg.layer({ url, applicationName, ...fast, retriesAfterFirst: 1 }).pipe(quiet))
          )
        })
    )

    it.effect("typed options in code do the same: hosts, targetSessionAttrs", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const dead = yield* deadPort
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          assert.deepStrictEqual(yield* sql<{ one: number }>`SELECT 1 AS one`, [{ one: 1 }])
        }).pipe(
          Effect.provide(
            ResilientPg.layer({
              hosts: [
                { host: "127.0.0.1", port: dead },
                { host: "127.0.0.1", port: server.port }
              ],
              targetSessionAttrs: "primary",
              database: server.database,
              username: server.user,
              password: server.password,
              applicationName: appName()
            }).pipe(quiet)
          )
        )
      })
    )

    it.effect(
      "a URL that cannot be read fails the layer with InvalidUrl naming url, never crashing, never echoing it",
      () =>
        Effect.gen(function* () {
          for (const url of [
            "postgres://%%%",
            "postgres://u:secret-pw@h:99999/db",
            "postgres://u:secret-pw@h/db?target_session_attrs=x"
          ]) {
            const exit = yield* Effect.exit(
              Effect.provide(Effect.void, ResilientPg.layer({ url: Redacted.make(url) }).pipe(quiet))
            )
            const error = failureOf(exit) as Target.InvalidUrl
            assert.strictEqual(error._tag, "InvalidUrl")
            assert.strictEqual(error.source, "url")
            assert.notInclude(error.message, "secret-pw")
            assert.isTrue(Exit.isFailure(exit))
          }
        })
    )
  })
})
