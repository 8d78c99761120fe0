/**
 * A PostgreSQL client for Effect that survives restarts, failovers and lost
 * connections: `@effect/sql-pg` with retry, an attempt timeout and
 * phase-aware classification around every statement.
 *
 * **Details**
 *
 * The layer provides `SqlClient` and `PgClient` (both, so code that asks for
 * either goes through the policies), plus the `ResilientPg` service with the
 * resolved profile and counters. Every statement outside a transaction runs,
 * outermost first:
 *
 * ```
 * retry (Schedule) -> circuit breaker -> attempt timeout -> acquire connection + execute
 * ```
 *
 * - Retry: the profile's backoff (1 s × 2^n plus jitter in [0, 1 s); 3
 *   retries in development, 5 in production), only for transient failures
 *   (`PgFailure.classify`). A failure after the statement was sent is retried
 *   only when the statement is read-only or marked `idempotent`; otherwise it
 *   ends as `OutcomeUnknown`, never as a silent duplicate write.
 * - Attempt timeout (10 s / 30 s): covers waiting for a pooled connection too
 *   (statements beyond the pool's capacity wait in Sturdy's queue), so an
 *   exhausted pool is a typed `AttemptTimeout`, not a hang. When it passes
 *   during the statement, PostgreSQL gets a cancel request, and a session
 *   whose network stays silent is ended. The server-side `statement_timeout`
 *   is set to the same value at connection start-up, which bounds statements
 *   inside transactions too. One watchdog per client enforces the deadlines:
 *   no timer or fiber per statement.
 * - Transactions: statements inside `sql.withTransaction` run on the
 *   transaction's connection and are never retried one by one; acquiring that
 *   connection goes through retry and timeout.
 *
 * **Errors**
 *
 * Statements are typed `Effect<A, SqlError>` by `SqlClient`, and stay so: a
 * policy failure reaches the caller as a `SqlError` whose `reason.cause` is
 * the typed `TransientError` or `OutcomeUnknown`. `unwrapFailures` moves them
 * into the error channel, where `Effect.catchTag` sees them.
 *
 * **Example** (Swapping `PgClient.layer` for `ResilientPg.layer`)
 *
 * ```ts
 * import { ResilientPg } from "@sturdy/pg"
 * import { Effect, Redacted } from "effect"
 * import { SqlClient } from "effect/sql"
 *
 * const program = Effect.gen(function*() {
 *   const sql = yield* SqlClient.SqlClient
 *   return yield* sql`SELECT 1 AS one`
 * }).pipe(
 *   ResilientPg.unwrapFailures,
 *   Effect.catchTag("OutcomeUnknown", (e) => Effect.die(e))
 * )
 *
 * program.pipe(Effect.provide(ResilientPg.layer({ url: Redacted.make(process.env.DATABASE_URL!) })))
 * ```
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as PgConnection from "@effect/sql-pg/PgConnection"
import * as PgPool from "@effect/sql-pg/PgPool"
import { Breaker, DatabaseMetrics, HealthMonitor, Profile } from "@sturdy/resilience"
import { Config, Context, Duration, Effect, Layer, Option, Redacted, Schema, Stream } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { Connection } from "effect/sql/SqlConnection"
import { ConnectionError, isSqlError, SqlError, UnknownError } from "effect/sql/SqlError"
import * as Statement from "effect/sql/Statement"
import * as Stack from "./internal/stack.ts"
import * as PgFailure from "./PgFailure.ts"
import * as Net from "node:net"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options extends PgClient.PgPoolConfig, Profile.Overrides {
  /** The profile whose defaults apply: `"development"` (default) or `"production"`. */
  readonly profile?: Profile.Name | undefined
  /**
   * The server-side `statement_timeout` sent at connection start-up. Defaults
   * to the attempt timeout; `"off"` leaves the server's setting alone.
   */
  readonly statementTimeout?: Duration.Input | "off" | undefined
  /**
   * What to do when the connection is lost after a statement was sent:
   * `"safe"` (default) retries only read-only statements and effects marked
   * `idempotent`, and fails others with `OutcomeUnknown`; `"always"` retries
   * every statement, as the seed did, at the risk of running a write twice.
   */
  readonly sentPhaseRetry?: "safe" | "always" | undefined
  /**
   * What a retry does when the breaker rejects its attempt: `"fail-fast"`
   * (default) ends the call with `CircuitOpen` at once; `"wait-and-retry"`
   * counts the rejection as a failed attempt and waits at least the
   * rejection's `retryAfter` before the next one, within the profile's
   * retries, so calls ride out outages shorter than their retry budget while
   * the breaker keeps every attempt but its probe off the server.
   */
  readonly whenCircuitOpen?: "fail-fast" | "wait-and-retry" | undefined
  /**
   * What to do when the database is down at start-up: `"degraded"` (default)
   * builds the layer and keeps probing; `"fail"` fails it with
   * `StartupHealthCheckFailed`.
   */
  readonly healthOnStartup?: "degraded" | "fail" | undefined
}

/**
 * How many statements and attempts went through the policies since the layer
 * was built.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Statements run through the policies (outside transactions). */
  readonly statements: number
  /** Attempts: statements plus retries, plus connection acquisitions for transactions and streams. */
  readonly attempts: number
  readonly retries: number
  /** Attempts that hit the attempt timeout. */
  readonly timeouts: number
  /** Calls that failed, whatever the reason. */
  readonly failed: number
  /** Calls that failed with `OutcomeUnknown`. */
  readonly outcomeUnknown: number
  /** Attempts the open circuit rejected. */
  readonly rejections: number
  /** TCP connections the pool opened, counted at the socket; `undefined` when they cannot be counted (see `DatabaseMetrics.PoolStats`). */
  readonly connectionsOpened: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly profile: Profile.Profile
  /** The breaker's key for this database: `host:port/database`. */
  readonly key: string
  readonly stats: Effect.Effect<Stats>
  readonly breakerState: Effect.Effect<Breaker.State>
  readonly transitions: Stream.Stream<Breaker.Transition>
  readonly pool: Effect.Effect<DatabaseMetrics.PoolStats>
}

/**
 * @since 0.1.0
 * @category services
 */
export class ResilientPg extends Context.Service<ResilientPg, Service>()("@sturdy/pg/ResilientPg") {}

/**
 * Whether work may be retried after its statement was sent: `"auto"` (the
 * default) decides per statement by the read-only rule.
 *
 * @since 0.1.0
 * @category idempotency
 */
export const Idempotency = Context.Reference<"auto" | "idempotent" | "not-idempotent">(
  "@sturdy/pg/ResilientPg/Idempotency",
  { defaultValue: () => "auto" }
)

/**
 * Marks every statement of an effect as safe to run twice (an upsert, a
 * delete by key, an insert guarded by `ON CONFLICT DO NOTHING`), so a
 * sent-phase failure is retried instead of ending as `OutcomeUnknown`.
 *
 * @since 0.1.0
 * @category idempotency
 */
export const idempotent = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.provideService(self, Idempotency, "idempotent")

/**
 * Marks every statement of an effect as not safe to run twice, even one that
 * looks read-only: for a `SELECT` that calls a function that writes.
 *
 * @since 0.1.0
 * @category idempotency
 */
export const notIdempotent = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.provideService(self, Idempotency, "not-idempotent")

/**
 * Moves the typed policy failures that statements carry inside `SqlError`
 * into the error channel, so `Effect.catchTag("OutcomeUnknown", ...)` and
 * `Effect.catchReason("TransientError", "ConnectionRefused", ...)` work.
 *
 * @since 0.1.0
 * @category errors
 */
export const unwrapFailures = <A, E, R>(
  self: Effect.Effect<A, E, R>
): Effect.Effect<A, E | PgFailure.PolicyFailure, R> =>
  Effect.mapError(self, (error) => (isSqlError(error) && PgFailure.fromSqlError(error)) || error)

/** PostgreSQL answers `COMMIT` of an aborted transaction with `ROLLBACK`; PgClient's own check. */
const commit = (conn: Connection): Effect.Effect<void, SqlError> =>
  Effect.flatMap(conn.executeRaw("COMMIT", []) as Effect.Effect<PgConnection.Result, SqlError>, (result) =>
    result.command === "ROLLBACK"
      ? Effect.fail(
          new SqlError({
            reason: new UnknownError({
              cause: new Error("COMMIT rolled back an aborted transaction"),
              message: "PgClient: COMMIT rolled back an aborted transaction",
              operation: "commit"
            })
          })
        )
      : Effect.void
  )

const PgJson = Statement.custom<Statement.Custom<"PgJson", unknown>>("PgJson")

const isPostgresUrl = (url: string): boolean => {
  try {
    const protocol = new URL(url).protocol
    return protocol === "postgres:" || protocol === "postgresql:"
  } catch {
    return false
  }
}

const validateOptions = (options: Options): Profile.Profile => {
  const fn = "ResilientPg.make"
  const profileName = options.profile ?? "development"
  if (profileName !== "development" && profileName !== "production") {
    throw new RangeError(`${fn}: profile must be "development" or "production", got ${JSON.stringify(profileName)}`)
  }
  const sentPhaseRetry = options.sentPhaseRetry ?? "safe"
  if (sentPhaseRetry !== "safe" && sentPhaseRetry !== "always") {
    throw new RangeError(`${fn}: sentPhaseRetry must be "safe" or "always", got ${JSON.stringify(sentPhaseRetry)}`)
  }
  const whenCircuitOpen = options.whenCircuitOpen ?? "fail-fast"
  if (whenCircuitOpen !== "fail-fast" && whenCircuitOpen !== "wait-and-retry") {
    throw new RangeError(
      `${fn}: whenCircuitOpen must be "fail-fast" or "wait-and-retry", got ${JSON.stringify(whenCircuitOpen)}`
    )
  }
  return Profile.override(Profile.byName(profileName), options, fn)
}

const statementTimeoutMillis = (options: Options, profile: Profile.Profile): number | undefined => {
  if (options.statementTimeout === "off") return undefined
  const duration = Duration.fromInputUnsafe(options.statementTimeout ?? profile.attemptTimeout)
  const millis = Math.ceil(Duration.toMillis(duration))
  if (!Duration.isFinite(duration) || !(millis > 0)) {
    throw new RangeError(
      `ResilientPg.make: statementTimeout must be a positive finite duration or "off", got ${Duration.format(duration)}`
    )
  }
  return millis
}

/**
 * Where the pool's TCP connections go, when the client can open them itself
 * to count them (plain host and port, no custom stream, no unix socket, no
 * keepalive settings to reproduce).
 */
const tcpTarget = (options: Options): { readonly host: string; readonly port: number } | undefined => {
  if (options.stream !== undefined || options.path !== undefined || options.keepAlive !== undefined) return undefined
  let host = options.host
  let port = options.port
  if (options.url !== undefined) {
    const url = new URL(Redacted.value(options.url))
    if (url.searchParams.has("host") || url.searchParams.has("port") || url.hostname.includes(",")) return undefined
    host ??= decodeURIComponent(url.hostname.replace(/^\[(.*)\]$/, "$1")) || undefined
    port ??= url.port === "" ? undefined : Number(url.port)
  }
  host ??= "localhost"
  if (host.startsWith("/")) return undefined
  return { host, port: port ?? 5432 }
}

/** The breaker's key: one circuit per database, never the credentials. */
const databaseKey = (options: Options): string => {
  let host = options.host
  let port = options.port
  let database = options.database
  if (options.url !== undefined) {
    const url = new URL(Redacted.value(options.url))
    host ??= url.hostname || url.searchParams.get("host") || undefined
    port ??= url.port === "" ? undefined : Number(url.port)
    database ??= decodeURIComponent(url.pathname.slice(1)) || undefined
  }
  return `${host ?? "localhost"}:${port ?? 5432}/${database ?? options.username ?? "postgres"}`
}

const transitionLog = (transition: Breaker.Transition) => {
  const annotations = {
    "sturdy.event": "breaker",
    "sturdy.from": transition.from,
    "sturdy.to": transition.to,
    ...(transition.to === "Open"
      ? {
          "sturdy.retryAfterMillis": Duration.toMillis(transition.retryAfter),
          "sturdy.consecutiveOpenings": transition.consecutiveOpenings
        }
      : {})
  }
  const log =
    transition.to === "Open"
      ? Effect.logError(
          transition.from === "Closed"
            ? `Circuit breaker opened: calls fail fast for ${Duration.format(transition.retryAfter)}`
            : `Circuit breaker reopened: the probe failed; calls fail fast for ${Duration.format(transition.retryAfter)}`
        )
      : transition.to === "HalfOpen"
        ? Effect.logWarning("Circuit breaker half-open: one probe goes through")
        : Effect.logInfo("Circuit breaker closed: the probe succeeded")
  return Effect.annotateLogs(log, annotations)
}

/**
 * Builds the resilient client and its services; the pool, the health monitor
 * and the metrics registrations end with the scope.
 *
 * **Details**
 *
 * A `Breaker` in context (for example `Breaker.layerStore`, to share state
 * across processes) is used when present; otherwise an in-process breaker
 * with the profile's policy is built.
 *
 * **Gotchas**
 *
 * Invalid options throw a `RangeError` naming the option and the value, as
 * effect's own constructors do: they are programming errors. Values read from
 * the environment go through `layerConfig`, which fails with a `ConfigError`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (
  options: Options
): Effect.fn.Return<Built, SqlError | HealthMonitor.StartupHealthCheckFailed, Scope.Scope | Reactivity.Reactivity> {
  const profile = validateOptions(options)
  if (options.url !== undefined && !isPostgresUrl(Redacted.value(options.url))) {
    // The driver would report this with the parser's error, whose `input` is the whole URL, password included.
    return yield* Effect.fail(
      new SqlError({
        reason: new ConnectionError({
          cause: new Error("url is not a valid postgres:// or postgresql:// URL"),
          message: "ResilientPg: url is not a valid postgres:// or postgresql:// URL",
          operation: "connect"
        })
      })
    )
  }
  const sentPhaseRetry = options.sentPhaseRetry ?? "safe"
  const statementTimeout = statementTimeoutMillis(options, profile)
  const key = databaseKey(options)
  const maxConnections = options.maxConnections ?? 10

  yield* Effect.logInfo("Initializing the resilient PostgreSQL client").pipe(
    Effect.annotateLogs({
      "sturdy.event": "configuration",
      "sturdy.database": key,
      "sturdy.profile": profile.name,
      "sturdy.environment": process.env.NODE_ENV ?? "(NODE_ENV unset)",
      "sturdy.retriesAfterFirst": profile.retriesAfterFirst,
      "sturdy.backoff": `${Duration.format(profile.backoffBase)} x 2^n + [0, ${Duration.format(profile.backoffJitter)})`,
      "sturdy.attemptTimeout": Duration.format(profile.attemptTimeout),
      "sturdy.statementTimeout": statementTimeout === undefined ? "off" : `${statementTimeout} ms`,
      "sturdy.healthCheckInterval": Duration.format(profile.healthCheckInterval),
      "sturdy.breaker": `opens after ${profile.breakerFailures} failed attempts`,
      "sturdy.sentPhaseRetry": sentPhaseRetry
    })
  )

  // Counting the pool's sockets is the only way to know how many connections it holds.
  const target = tcpTarget(options)
  let openSockets = 0
  let socketsOpened = 0
  const pool = yield* PgPool.make({
    ...options,
    // A connection that never completes its start-up is an attempt that never ends: bound it by the attempt timeout.
    connectTimeout: options.connectTimeout ?? profile.attemptTimeout,
    ...(target !== undefined && {
      stream: () => {
        const socket = Net.connect({ host: target.host, port: target.port, noDelay: true })
        openSockets++
        socketsOpened++
        socket.once("close", () => openSockets--)
        return socket
      }
    }),
    startupParameters:
      statementTimeout === undefined
        ? options.startupParameters
        : { statement_timeout: String(statementTimeout), ...options.startupParameters }
  })
  yield* Effect.logInfo("Connection pool ready").pipe(
    Effect.annotateLogs({
      "sturdy.event": "pool",
      "sturdy.maxConnections": maxConnections,
      "sturdy.multiplex": options.multiplex === true
    })
  )

  const breaker =
    Option.getOrUndefined(yield* Effect.serviceOption(Breaker.Breaker)) ??
    (yield* Breaker.make({
      tripPolicy: Breaker.consecutive(profile.breakerFailures),
      openDuration: profile.breakerOpenDuration
    }))
  yield* Effect.forkScoped(Stream.runForEach(breaker.transitions, transitionLog), { startImmediately: true })

  const recorder = new DatabaseMetrics.Recorder()
  const stack = yield* Stack.make({
    pool,
    maxConnections,
    statementsPerConnection: options.multiplex === true ? (options.multiplexConcurrency ?? 32) : 1,
    profile,
    sentPhaseRetry,
    whenCircuitOpen: options.whenCircuitOpen ?? "fail-fast",
    breaker,
    key,
    recorder,
    idempotency: (fiber) => fiber.getRef(Idempotency)
  })
  const toSqlConnection = (connection: PgConnection.PgConnection): Connection =>
    new Stack.SqlConnection(connection, undefined)
  const acquire = stack.acquire(Effect.map(pool.get, toSqlConnection), "acquire")
  const reserve = stack.acquire(pool.reserve, "reserve")
  const borrower = stack.borrower

  const compiler = PgClient.makeCompiler(options.transformQueryNames, options.transformJson)
  const client = yield* SqlClient.make({
    acquirer: acquire,
    borrower,
    transactionAcquirer: Effect.map(reserve, toSqlConnection),
    driver: "pg",
    prepareTransactionControls: true,
    commit,
    isTransaction: (connection) => !(connection as Stack.SqlConnection).broken,
    releaseSavepoint: (name) => `RELEASE SAVEPOINT ${name}`,
    compiler,
    spanAttributes: [
      ...(options.spanAttributes ? Object.entries(options.spanAttributes) : []),
      ["db.system.name", "postgresql"],
      ["db.namespace", options.database ?? options.username ?? "postgres"],
      ["server.address", options.host ?? "localhost"],
      ["server.port", options.port ?? 5432]
    ],
    transformRows: options.transformResultNames
      ? Statement.defaultTransforms(options.transformResultNames, options.transformJson).array
      : undefined
  })

  const pgClient: PgClient.PgClient = Object.assign(client, {
    [PgClient.TypeId]: PgClient.TypeId,
    config: options,
    json: (value: unknown) => Statement.fragment([PgJson(value)]),
    listen: (channel: string) => Effect.flatMap(reserve, (connection) => connection.listen(channel)),
    notify: (channel: string, payload: string) => Effect.asVoid(client`SELECT pg_notify(${channel}, ${payload})`.raw)
  })

  // The probe has a connection of its own: never through the breaker, never behind a saturated pool.
  const health = yield* HealthMonitor.make({
    probe: Effect.scoped(
      Effect.flatMap(
        PgConnection.make({
          ...options,
          applicationName: `${options.applicationName ?? "@effect/sql-pg"} health`,
          connectTimeout: profile.healthCheckTimeout
        }),
        (connection) => connection.query("SELECT 1")
      )
    ),
    interval: profile.healthCheckInterval,
    timeout: profile.healthCheckTimeout,
    onStartup: options.healthOnStartup ?? "degraded",
    describe: (error) => {
      const reason = PgFailure.classify(error)
      return reason === undefined ? `${error.reason._tag}: ${error.message}` : `${reason._tag}: ${reason.message}`
    }
  })

  const pool_ = (): DatabaseMetrics.PoolStats => ({
    max: maxConnections,
    open: target === undefined ? undefined : openSockets,
    inUse: stack.inUse(),
    idle: target === undefined ? undefined : Math.max(0, openSockets - stack.inUse()),
    waiting: stack.waiting()
  })
  const metrics = yield* DatabaseMetrics.make({
    recorder,
    breakerState: breaker.state(key),
    transitions: breaker.transitions,
    lastHealthCheck: health.lastHealthCheck,
    healthChanges: health.changes,
    pool: pool_
  })

  return {
    client: pgClient,
    health,
    metrics,
    service: {
      profile,
      key,
      stats: Effect.sync(
        (): Stats => ({
          statements: recorder.statements,
          attempts: recorder.attempts,
          retries: recorder.retries,
          timeouts: recorder.timeouts,
          failed: recorder.failed,
          outcomeUnknown: recorder.outcomeUnknown,
          rejections: recorder.rejections,
          connectionsOpened: target === undefined ? undefined : socketsOpened
        })
      ),
      breakerState: breaker.state(key),
      transitions: breaker.transitions,
      pool: Effect.sync(pool_)
    }
  }
})

/**
 * What `make` builds.
 *
 * @since 0.1.0
 * @category models
 */
export interface Built {
  readonly client: PgClient.PgClient
  readonly service: Service
  readonly health: HealthMonitor.Service
  readonly metrics: DatabaseMetrics.Service
}

/**
 * Everything the resilient client layer provides.
 *
 * @since 0.1.0
 * @category layers
 */
export type Provided =
  | PgClient.PgClient
  | SqlClient.SqlClient
  | ResilientPg
  | HealthMonitor.HealthMonitor
  | DatabaseMetrics.DatabaseMetrics

/**
 * The resilient client as a layer: `SqlClient`, `PgClient`, `ResilientPg`,
 * `HealthMonitor` and `DatabaseMetrics`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Provided, SqlError | HealthMonitor.StartupHealthCheckFailed> =>
  Layer.effectContext(
    Effect.map(make(options), (built) =>
      Context.make(PgClient.PgClient, built.client).pipe(
        Context.add(SqlClient.SqlClient, built.client),
        Context.add(ResilientPg, built.service),
        Context.add(HealthMonitor.HealthMonitor, built.health),
        Context.add(DatabaseMetrics.DatabaseMetrics, built.metrics)
      )
    )
  ).pipe(Layer.provide(Reactivity.layer))

const databaseUrl = Config.schema(
  Schema.Redacted(
    Schema.String.check(
      Schema.makeFilter((url: string) => isPostgresUrl(url) || "Expected a postgres:// or postgresql:// URL")
    )
  ),
  "DATABASE_URL"
)

/**
 * The options `layerConfig` reads from the environment.
 *
 * | variable | meaning | default |
 * |---|---|---|
 * | `DATABASE_URL` | `postgres://user:password@host:port/database` | required |
 * | `STURDY_PROFILE`, `NODE_ENV` | the profile, see `Profile` | development |
 * | `STURDY_RETRIES`, `STURDY_BACKOFF_BASE`, `STURDY_BACKOFF_JITTER`, `STURDY_ATTEMPT_TIMEOUT`, `STURDY_HEALTH_CHECK_INTERVAL` | profile overrides | the profile's |
 * | `STURDY_POOL_SIZE` | the pool's maximum connections, integer >= 1 | 10 |
 * | `STURDY_SENT_PHASE_RETRY` | `safe` or `always` | `safe` |
 * | `STURDY_WHEN_CIRCUIT_OPEN` | `fail-fast` or `wait-and-retry` | `fail-fast` |
 * | `STURDY_HEALTH_ON_STARTUP` | `degraded` or `fail` | `degraded` |
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  url: databaseUrl,
  profile: Profile.config,
  maxConnections: Config.option(Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), "STURDY_POOL_SIZE")),
  sentPhaseRetry: Config.option(Config.Literals(["safe", "always"], "STURDY_SENT_PHASE_RETRY")),
  healthOnStartup: Config.option(Config.Literals(["degraded", "fail"], "STURDY_HEALTH_ON_STARTUP")),
  whenCircuitOpen: Config.option(Config.Literals(["fail-fast", "wait-and-retry"], "STURDY_WHEN_CIRCUIT_OPEN"))
}).pipe(
  Config.map(
    ({ url, profile, maxConnections, sentPhaseRetry, healthOnStartup, whenCircuitOpen }): Options => ({
      url,
      profile: profile.name,
      retriesAfterFirst: profile.retriesAfterFirst,
      backoffBase: profile.backoffBase,
      backoffJitter: profile.backoffJitter,
      attemptTimeout: profile.attemptTimeout,
      healthCheckInterval: profile.healthCheckInterval,
      healthCheckTimeout: profile.healthCheckTimeout,
      breakerFailures: profile.breakerFailures,
      breakerOpenDuration: profile.breakerOpenDuration,
      maxConnections: Option.getOrUndefined(maxConnections),
      sentPhaseRetry: Option.getOrUndefined(sentPhaseRetry),
      healthOnStartup: Option.getOrUndefined(healthOnStartup),
      whenCircuitOpen: Option.getOrUndefined(whenCircuitOpen)
    })
  )
)

/**
 * The resilient client configured from the environment (see `config`).
 * `options` given in code win over the environment.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options?: Options
): Layer.Layer<Provided, SqlError | HealthMonitor.StartupHealthCheckFailed | Config.ConfigError> =>
  Layer.unwrap(Effect.map(config, (fromEnv) => layer(dropUndefined({ ...fromEnv, ...dropUndefined(options ?? {}) }))))

const dropUndefined = <A extends object>(options: A): A =>
  Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as A

/**
 * The connection URL with its password replaced, for logs.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeUrl = (url: Redacted.Redacted<string>): string => {
  try {
    const parsed = new URL(Redacted.value(url))
    return `${parsed.protocol}//${parsed.username ? `${parsed.username}@` : ""}${parsed.host}${parsed.pathname}`
  } catch {
    return "<invalid url>"
  }
}
