/**
 * A user's first program on Sturdy, compiled against the packed packages installed with npm
 * (scripts/consumer-test.sh copies this directory out of the workspace). It starts an embedded
 * PostgreSQL, builds `ResilientPg.layer` on it, runs `SELECT 1` and a transaction, serves the admin
 * routes and the dashboard (its assets ship inside @sturdy/admin), and prints OK.
 */
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Admin } from "@sturdy/admin"
import { ResilientPg } from "@sturdy/pg"
import * as Profile from "@sturdy/resilience/Profile"
import { PgServer } from "@sturdy/testing"
import { Effect, Layer, Redacted } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { SqlClient } from "effect/sql"
import { randomBytes } from "node:crypto"
import { createServer } from "node:http"

const expect = (what: string, actual: unknown, expected: unknown) =>
  JSON.stringify(actual) === JSON.stringify(expected)
    ? Effect.void
    : Effect.die(new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`))

const token = randomBytes(24).toString("base64url")

const queries = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* expect("SELECT 1", yield* sql<{ one: number }>`SELECT 1 AS one`, [{ one: 1 }])

  yield* sql`CREATE TABLE notes (id int PRIMARY KEY, title text NOT NULL)`
  yield* ResilientPg.withTransaction(
    Effect.gen(function* () {
      yield* sql`INSERT INTO notes (id, title) VALUES (1, 'first')`
      yield* sql`INSERT INTO notes (id, title) VALUES (2, 'second')`
    })
  )
  // A transaction that fails is rolled back: its insert is not there afterwards.
  const rolledBack = yield* ResilientPg.withTransaction(
    Effect.gen(function* () {
      yield* sql`INSERT INTO notes (id, title) VALUES (3, 'rolled back')`
      return yield* Effect.fail("abandoned" as const)
    })
  ).pipe(Effect.flip)
  yield* expect("the failed transaction's error", rolledBack, "abandoned")
  yield* expect("notes after both transactions", yield* sql`SELECT id, title FROM notes ORDER BY id`, [
    { id: 1, title: "first" },
    { id: 2, title: "second" }
  ])
})

const adminRoutes = Effect.gen(function* () {
  const base = HttpServer.formatAddress((yield* HttpServer.HttpServer).address)
  const get = (path: string) =>
    Effect.promise(async () => {
      const response = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } })
      return { status: response.status, body: await response.text() }
    })
  yield* expect("GET /health/ready", (yield* get("/health/ready")).status, 200)
  const page = yield* get("/admin/database")
  yield* expect("GET /admin/database", [page.status, page.body.includes("app.js")], [200, true])
  for (const asset of ["/admin/database/app.js", "/admin/database/app.css"]) {
    const response = yield* get(asset)
    yield* expect(`GET ${asset}`, [response.status, response.body.length > 0], [200, true])
  }
})

const main = Effect.gen(function* () {
  const server = yield* PgServer.makeEmbedded
  const database = ResilientPg.layer({ url: server.url, profile: Profile.development.name })
  const http = HttpRouter.serve(Admin.layer({ token: Redacted.make(token) }), {
    disableLogger: true,
    disableListenLog: true
  }).pipe(Layer.provideMerge(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" })))

  yield* Effect.andThen(queries, adminRoutes).pipe(Effect.provide(Layer.provideMerge(http, database)))
  yield* Effect.sync(() => process.stdout.write("OK\n"))
})

NodeRuntime.runMain(Effect.scoped(main))
