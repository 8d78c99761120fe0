import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, layer } from "@effect/vitest"
import { PgBouncer, PgServer } from "@sturdy/testing"
import { Cause, Effect, Exit, Fiber, Option, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as SqlClient from "effect/sql/SqlClient"
import { isSqlError } from "effect/sql/SqlError"
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"

const poolModes = ["session", "transaction"] as const satisfies ReadonlyArray<PgBouncer.PoolMode>

/** Runs `use` with a plain `@effect/sql-pg` client (no start-up parameters) built from the bouncer's url. */
const throughBouncer = <A, E>(
  bouncer: PgBouncer.PgBouncerService,
  use: Effect.Effect<A, E, SqlClient.SqlClient>,
  options: Partial<PgClient.PgPoolConfig> = {}
) => Effect.provide(use, PgClient.layer({ url: bouncer.url, connectTimeout: "5 seconds", ...options }))

/** What a caller sees of a failed call: the `SqlError`'s reason, its operation, and the cause's code and message. */
const observed = (exit: Exit.Exit<unknown, unknown>) => {
  const error = Exit.isFailure(exit) ? exit.cause.reasons.find(Cause.isFailReason)?.error : undefined
  if (!isSqlError(error)) {
    return assert.fail(`expected a SqlError, got ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "success"}`)
  }
  const cause = error.reason.cause as { readonly code?: unknown; readonly message?: unknown } | undefined
  return {
    reason: error.reason._tag,
    message: error.reason.message,
    operation: error.reason.operation,
    code: cause?.code,
    causeMessage: cause?.message
  }
}

const bouncerDirectories = Effect.promise(async () =>
  (await Fs.readdir(Os.tmpdir())).filter((name) => name.startsWith("sturdy-pgbouncer-")).sort()
)

describe("PgBouncer", () => {
  layer(PgServer.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect.each(poolModes)(
      "%s pooling: a plain PgClient.layer runs SELECT 1, a parameterized statement and transactions",
      (poolMode) =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const bouncer = yield* PgBouncer.make(server, { poolMode })
          assert.strictEqual(bouncer.poolMode, poolMode)
          const url = new URL(Redacted.value(bouncer.url))
          assert.deepStrictEqual(
            [url.hostname, url.port, decodeURIComponent(url.username), url.pathname],
            ["127.0.0.1", String(bouncer.port), server.user, `/${server.database}`]
          )
          assert.notStrictEqual(bouncer.port, server.port)
          assert.notInclude(String(bouncer.url), Redacted.value(server.password))

          const table = `bouncer_${poolMode}_${randomBytes(4).toString("hex")}`
          yield* server.admin.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
          yield* Effect.addFinalizer(() => Effect.ignore(server.execute(`DROP TABLE IF EXISTS ${table}`)))

          const seen = yield* throughBouncer(
            bouncer,
            Effect.gen(function* () {
              const sql = yield* SqlClient.SqlClient
              const one = yield* sql<{ readonly one: number }>`SELECT 1 AS one`
              const parameterized = yield* sql<{ readonly answer: number; readonly name: string }>`
                SELECT ${41}::int + 1 AS answer, ${"bouncer"}::text AS name`
              const inside = yield* sql.withTransaction(
                Effect.gen(function* () {
                  yield* sql`INSERT INTO ${sql(table)} (id) VALUES (${1}), (${2})`
                  return yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`
                })
              )
              const rolledBack = yield* Effect.exit(
                sql.withTransaction(
                  Effect.andThen(sql`INSERT INTO ${sql(table)} (id) VALUES (${3})`, Effect.fail("abort" as const))
                )
              )
              return { one, parameterized, inside, rolledBack }
            })
          )
          assert.deepStrictEqual(seen.one, [{ one: 1 }])
          assert.deepStrictEqual(seen.parameterized, [{ answer: 42, name: "bouncer" }])
          assert.deepStrictEqual(seen.inside, [{ n: 2 }])
          assert.deepStrictEqual(seen.rolledBack, Exit.fail("abort"))
          const rows = yield* server.admin<{ readonly id: number }>`SELECT id FROM ${server.admin(table)} ORDER BY id`
          assert.deepStrictEqual(
            rows.map((row) => row.id),
            [1, 2]
          )
          // The statements went through PgBouncer, which logged the client's login.
          const log = yield* bouncer.log
          assert.isTrue(
            log.some((line) => line.includes(`login attempt: db=${server.database} user=${server.user}`)),
            log.join("\n")
          )
        }).pipe(Effect.scoped)
    )

    it.effect.each(poolModes)(
      "%s pooling: stop frees the port, start listens on it again, and a new connection works after restart",
      (poolMode) =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const bouncer = yield* PgBouncer.make(server, { poolMode })
          const selectOne = throughBouncer(
            bouncer,
            Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ readonly one: number }>`SELECT 1 AS one`)
          )
          assert.deepStrictEqual(yield* selectOne, [{ one: 1 }])

          yield* bouncer.stop
          assert.deepStrictEqual(observed(yield* Effect.exit(selectOne)), {
            reason: "ConnectionError",
            message: "PgConnection: Failed to connect",
            operation: "connect",
            code: "ECONNREFUSED",
            causeMessage: `connect ECONNREFUSED 127.0.0.1:${bouncer.port}`
          })
          yield* bouncer.start
          assert.deepStrictEqual(yield* selectOne, [{ one: 1 }])

          yield* bouncer.restart
          assert.deepStrictEqual(yield* selectOne, [{ one: 1 }])
          const log = yield* bouncer.log
          assert.strictEqual(log.filter((line) => line.includes("process up:")).length, 3)
          assert.strictEqual(log.filter((line) => line.includes("got SIGTERM")).length, 2)
          assert.strictEqual(log.filter((line) => line.includes(`listening on 127.0.0.1:${bouncer.port}`)).length, 3)
        }).pipe(Effect.scoped)
    )

    it.effect.each(poolModes)(
      "%s pooling: the default configuration refuses the statement_timeout start-up parameter with 08P01",
      (poolMode) =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const withTimeout = (bouncer: PgBouncer.PgBouncerService) =>
            throughBouncer(
              bouncer,
              Effect.flatMap(
                SqlClient.SqlClient,
                (sql) => sql<{ readonly statement_timeout: string }>`SHOW statement_timeout`
              ),
              { startupParameters: { statement_timeout: "1000" } }
            )

          const untuned = yield* PgBouncer.make(server, { poolMode })
          assert.deepStrictEqual(observed(yield* Effect.exit(withTimeout(untuned))), {
            reason: "ConnectionError",
            message: "PgConnection: Failed to connect",
            operation: "connect",
            code: "08P01",
            causeMessage: "unsupported startup parameter: statement_timeout"
          })

          // With the parameter ignored, PgBouncer accepts the client and drops the parameter.
          const tolerant = yield* PgBouncer.make(server, {
            poolMode,
            settings: { ignore_startup_parameters: "statement_timeout" }
          })
          assert.deepStrictEqual(yield* withTimeout(tolerant), [{ statement_timeout: "0" }])
        }).pipe(Effect.scoped)
    )

    it.effect("pause holds a new query until resume", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const bouncer = yield* PgBouncer.make(server, { poolMode: "transaction" })
        yield* throughBouncer(
          bouncer,
          Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            yield* sql`SELECT 1`
            yield* bouncer.pause
            const query = yield* Effect.forkChild(sql<{ readonly one: number }>`SELECT 1 AS one`)
            // A window in which an unpaused bouncer answers in milliseconds; the query must still be waiting.
            const early = yield* Effect.timeoutOption(Fiber.await(query), "500 millis")
            assert.isTrue(Option.isNone(early), "the query finished while the bouncer was paused")
            yield* bouncer.resume
            assert.deepStrictEqual(yield* Fiber.join(query), [{ one: 1 }])
          }),
          { maxConnections: 1 }
        )
      }).pipe(Effect.scoped)
    )

    it.effect("configuration errors are typed, name the problem and never quote the password", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const failure = (options: PgBouncer.Options) =>
          Effect.scoped(PgBouncer.make(server, options)).pipe(
            Effect.flip,
            Effect.map((error) => ({ tag: error._tag, operation: error.operation, message: error.message }))
          )

        assert.deepStrictEqual(yield* failure({ settings: { listen_port: 5432 } }), {
          tag: "PgBouncerError",
          operation: "configure",
          message: "PgBouncer.make: listen_port is set by PgBouncer.make and cannot be overridden"
        })
        const badValue = yield* failure({ settings: { max_client_conn: "many" } })
        assert.strictEqual(badValue.operation, "start")
        assert.include(badValue.message, 'invalid value "many" for parameter max_client_conn')
        assert.notInclude(badValue.message, Redacted.value(server.password))
      })
    )

    it.effect("closing the scope ends the process and removes its directory", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const before = yield* bouncerDirectories
        const port = yield* Effect.scoped(
          Effect.gen(function* () {
            const bouncer = yield* PgBouncer.make(server)
            assert.strictEqual(bouncer.poolMode, "session")
            assert.strictEqual((yield* bouncerDirectories).length, before.length + 1)
            return bouncer.port
          })
        )
        assert.deepStrictEqual(yield* bouncerDirectories, before)
        const exit = yield* Effect.exit(
          Effect.scoped(
            Effect.flatMap(
              PgClient.make({
                host: "127.0.0.1",
                port,
                username: server.user,
                password: server.password,
                database: server.database
              }),
              (sql) => sql`SELECT 1`
            )
          ).pipe(Effect.provide(Reactivity.layer))
        )
        assert.strictEqual(observed(exit).code, "ECONNREFUSED")
      })
    )
  })
})
