/**
 * Faults provoked inside PostgreSQL itself, each a scoped effect that puts
 * the fault in place and takes it away when its scope closes.
 *
 * **Details**
 *
 * | fault | what clients see |
 * |---|---|
 * | `PgServer.terminateBackends(app)` | the application's sessions end: 57P01, usually as a closed connection |
 * | `PgServer.smartShutdown` | new connections refused with 57P03 while one session is held |
 * | `PgServer.stop` / `start` | refused connections (`ECONNREFUSED`), then recovery |
 * | `connectionLimit(server, role, n)` | new connections beyond `n` for the role refused with 53300 |
 * | `disallowConnections(server, database)` | new connections to the database refused with 55000 |
 * | `readOnly(server, database, app)` | a failover stand-in: writes fail with 25006 |
 *
 * Run faults against a `database(server)` of their own, so they cannot
 * disturb the admin connection (which uses the server's default database) or
 * other tests.
 *
 * **Example** (A failover in the middle of a test)
 *
 * ```ts
 * import { PgServer, ServerFaults } from "@sturdy/testing"
 * import { Effect } from "effect"
 *
 * Effect.gen(function*() {
 *   const server = yield* PgServer.PgServer
 *   const db = yield* ServerFaults.database(server)
 *   // ... start the workload against db.url ...
 *   yield* Effect.scoped(Effect.andThen(ServerFaults.readOnly(server, db.name, "my-app"), Effect.sleep("2 seconds")))
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Redacted, type Scope } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { randomBytes } from "node:crypto"
import type { PgServerService } from "./PgServer.ts"

const identifier = (prefix: string) => `${prefix}_${randomBytes(6).toString("hex")}`

const urlFor = (server: PgServerService, user: string, password: Redacted.Redacted<string>, database: string) =>
  Redacted.make(
    `postgres://${encodeURIComponent(user)}:${encodeURIComponent(Redacted.value(password))}@${server.host}:${server.port}/${encodeURIComponent(database)}`
  )

/**
 * A fresh database owned by a fresh login role, dropped (with the role) when
 * the scope closes. Its `url` connects as that role, which is not a
 * superuser, so connection limits apply to it.
 *
 * @since 0.1.0
 * @category databases
 */
export const database = (
  server: PgServerService
): Effect.Effect<
  { readonly name: string; readonly role: string; readonly url: Redacted.Redacted<string> },
  SqlError,
  Scope.Scope
> =>
  Effect.gen(function* () {
    const name = identifier("sturdy_db")
    const role = identifier("sturdy_role")
    const password = Redacted.make(randomBytes(12).toString("hex"))
    yield* Effect.acquireRelease(
      Effect.andThen(
        server.admin.unsafe(`CREATE ROLE ${role} LOGIN PASSWORD '${Redacted.value(password)}'`),
        server.admin.unsafe(`CREATE DATABASE ${name} OWNER ${role}`)
      ),
      () =>
        Effect.ignore(
          Effect.andThen(
            server.execute(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
            server.execute(`DROP ROLE IF EXISTS ${role}`)
          )
        )
    )
    return { name, role, url: urlFor(server, role, password, name) }
  })

/**
 * Limits a role to `limit` connections until the scope closes: beyond it, new
 * connections are refused with SQLSTATE 53300. Existing sessions stay.
 *
 * @since 0.1.0
 * @category faults
 */
export const connectionLimit = (
  server: PgServerService,
  role: string,
  limit: number
): Effect.Effect<void, SqlError, Scope.Scope> => {
  if (!Number.isInteger(limit) || limit < 0) {
    throw new RangeError(`ServerFaults.connectionLimit: limit must be an integer >= 0, got ${limit}`)
  }
  return Effect.asVoid(
    Effect.acquireRelease(server.admin.unsafe(`ALTER ROLE ${role} CONNECTION LIMIT ${limit}`), () =>
      Effect.ignore(server.execute(`ALTER ROLE ${role} CONNECTION LIMIT -1`))
    )
  )
}

/**
 * Refuses new connections to a database (`ALLOW_CONNECTIONS false`, SQLSTATE
 * 55000 for clients) until the scope closes. Existing sessions stay.
 *
 * @since 0.1.0
 * @category faults
 */
export const disallowConnections = (
  server: PgServerService,
  database: string
): Effect.Effect<void, SqlError, Scope.Scope> =>
  Effect.asVoid(
    Effect.acquireRelease(server.admin.unsafe(`ALTER DATABASE ${database} ALLOW_CONNECTIONS false`), () =>
      Effect.ignore(server.execute(`ALTER DATABASE ${database} ALLOW_CONNECTIONS true`))
    )
  )

/**
 * A failover stand-in: the database turns read-only
 * (`default_transaction_read_only`), and the application's sessions are
 * terminated so the new ones it opens are read-only; writes then fail with
 * SQLSTATE 25006, as on a standby. When the scope closes it turns writable and
 * the sessions are terminated again.
 *
 * @since 0.1.0
 * @category faults
 */
export const readOnly = (
  server: PgServerService,
  database: string,
  applicationName: string
): Effect.Effect<void, SqlError, Scope.Scope> =>
  Effect.asVoid(
    Effect.acquireRelease(
      Effect.andThen(
        server.admin.unsafe(`ALTER DATABASE ${database} SET default_transaction_read_only = on`),
        server.terminateBackends(applicationName)
      ),
      () =>
        Effect.ignore(
          Effect.andThen(
            server.execute(`ALTER DATABASE ${database} RESET default_transaction_read_only`),
            server.execute(
              `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '${applicationName.replaceAll("'", "''")}'`
            )
          )
        )
    )
  )
