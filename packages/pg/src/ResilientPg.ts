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
 * retry (Schedule) -> attempt timeout -> acquire connection + execute
 * ```
 *
 * - Retry: the profile's backoff (1 s × 2^n plus jitter in [0, 1 s); 3
 *   retries in development, 5 in production), only for transient failures
 *   (`PgFailure.classify`). A failure after the statement was sent is retried
 *   only when the statement is read-only or marked `idempotent`; otherwise it
 *   ends as `OutcomeUnknown`, never as a silent duplicate write.
 * - Attempt timeout (10 s / 30 s): covers waiting for a pooled connection too,
 *   so an exhausted pool is a typed `AttemptTimeout`, not a hang. When it
 *   fires during the statement, the query is interrupted and the driver sends
 *   PostgreSQL a cancel request. The server-side `statement_timeout` is set to
 *   the same value at connection start-up, which bounds statements inside
 *   transactions too.
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
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import * as PgPool from "@effect/sql-pg/PgPool"
import { Profile, Retry, Transient } from "@sturdy/resilience"
import { Config, Context, Duration, Effect, Layer, Option, Predicate, Redacted, Schedule, Schema, Stream } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { Borrower, Connection } from "effect/sql/SqlConnection"
import { ConnectionError, isSqlError, SqlError, UnknownError } from "effect/sql/SqlError"
import * as Statement from "effect/sql/Statement"
import { isReadOnly } from "./internal/readOnly.ts"
import * as PgFailure from "./PgFailure.ts"

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
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly profile: Profile.Profile
  readonly stats: Effect.Effect<Stats>
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

/** What one statement's attempts share: the SQL it ran and whether it got a connection. */
class Call {
  sql: string | undefined = undefined
  sent = false
  attempts = 0
}

/** `@effect/sql`'s `Connection` over a native session, noting the SQL it runs in a `Call`. */
class SqlConnection implements Connection {
  readonly connection: PgConnection.PgConnection
  readonly call: Call | undefined
  constructor(connection: PgConnection.PgConnection, call: Call | undefined) {
    this.connection = connection
    this.call = call
  }
  /**
   * Set once a statement on this connection failed because the connection
   * itself did. Only tracked for connections that outlive one statement
   * (transactions): the server has already rolled such a transaction back,
   * and a ROLLBACK on the dead connection would turn the caller's typed error
   * into a defect.
   */
  broken = false
  private readonly noteBroken = (error: SqlError) => {
    if (error.reason._tag === "ConnectionError") this.broken = true
  }
  private watch<A>(effect: Effect.Effect<A, SqlError>): Effect.Effect<A, SqlError> {
    return this.call === undefined
      ? Effect.tapError(effect, (error) => Effect.sync(() => this.noteBroken(error)))
      : effect
  }
  private run(sql: string, params: ReadonlyArray<unknown>, prepare = true) {
    if (this.call !== undefined) this.call.sql = sql
    return this.watch(Effect.map(this.connection.query(sql, params, prepare), (result) => result.rows))
  }
  execute(
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: (<A extends object>(row: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  ) {
    return transformRows ? Effect.map(this.run(sql, params), transformRows) : this.run(sql, params)
  }
  executeRaw(sql: string, params: ReadonlyArray<unknown>) {
    if (this.call !== undefined) this.call.sql = sql
    return this.watch(this.connection.query(sql, params))
  }
  executeValues(sql: string, params: ReadonlyArray<unknown>) {
    if (this.call !== undefined) this.call.sql = sql
    return this.watch(this.connection.queryValues(sql, params))
  }
  executeValuesUnprepared(sql: string, params: ReadonlyArray<unknown>) {
    if (this.call !== undefined) this.call.sql = sql
    return this.watch(this.connection.queryValues(sql, params, false))
  }
  executeUnprepared(
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: (<A extends object>(row: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  ) {
    const rows = this.run(sql, params, false)
    return transformRows ? Effect.map(rows, transformRows) : rows
  }
  executeStream(
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: (<A extends object>(row: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  ) {
    const stream = this.connection.stream(sql, params)
    return transformRows ? Stream.mapArray(stream, (rows) => transformRows(rows) as typeof rows) : stream
  }
}

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

const isTransientError = (u: unknown): u is PgFailure.TransientError => Predicate.isTagged(u, "TransientError")

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
 * Builds the resilient client and its service; the pool closes with the scope.
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
): Effect.fn.Return<
  { readonly client: PgClient.PgClient; readonly service: Service },
  SqlError,
  Scope.Scope | Reactivity.Reactivity
> {
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
  const pool = yield* PgPool.make({
    ...options,
    startupParameters:
      statementTimeout === undefined
        ? options.startupParameters
        : { statement_timeout: String(statementTimeout), ...options.startupParameters }
  })

  const stats = { statements: 0, attempts: 0, retries: 0, timeouts: 0, failed: 0, outcomeUnknown: 0 }
  const attemptTimeout = profile.attemptTimeout
  const timedOut = (call: Call) =>
    Effect.suspend(() => {
      stats.timeouts++
      return Effect.fail(
        new Transient.AttemptTimeout({ phase: call.sent ? "sent" : "connect", timeout: attemptTimeout })
      )
    })

  /** What a failed attempt means for the retry: a transient failure, an unknown outcome, or the original error. */
  const decide = <E>(
    error: E | Transient.AttemptTimeout,
    call: Call,
    idempotency: typeof Idempotency.Service
  ): E | PgFailure.PolicyFailure => {
    const reason = Predicate.isTagged(error, "AttemptTimeout")
      ? (error as Transient.AttemptTimeout)
      : isSqlError(error)
        ? PgFailure.classify(error)
        : undefined
    if (reason === undefined) return error as E
    if (
      PgFailure.outcome(reason) === "not-applied" ||
      sentPhaseRetry === "always" ||
      idempotency === "idempotent" ||
      (idempotency === "auto" && call.sql !== undefined && isReadOnly(call.sql))
    ) {
      return new PgFailure.TransientError({ reason })
    }
    return new PgFailure.OutcomeUnknown({ reason })
  }

  const policy = Retry.schedule(Profile.backoffOptions(profile), isTransientError).pipe(
    Schedule.tap((meta) =>
      Effect.logWarning("Retrying a failed database call").pipe(
        Effect.annotateLogs({
          "sturdy.event": "retry",
          "sturdy.reason": (meta.input as PgFailure.TransientError).reason._tag,
          "sturdy.phase": (meta.input as PgFailure.TransientError).reason.phase,
          "sturdy.attempt": meta.attempt + 1,
          "sturdy.attempts": profile.retriesAfterFirst + 1,
          "sturdy.delayMillis": Math.round(Duration.toMillis(meta.duration))
        })
      )
    )
  )

  const recovered = (operation: string, call: Call) =>
    Effect.logInfo("A database call recovered").pipe(
      Effect.annotateLogs({
        "sturdy.event": "recovered",
        "sturdy.operation": operation,
        "sturdy.attempts": call.attempts
      })
    )

  const surface = (operation: string, call: Call, failure: PgFailure.PolicyFailure) => {
    if (failure._tag === "OutcomeUnknown") stats.outcomeUnknown++
    return Effect.logError("A database call failed").pipe(
      Effect.annotateLogs({
        "sturdy.event": "failed",
        "sturdy.operation": operation,
        "sturdy.error": failure._tag,
        "sturdy.reason": failure.reason._tag,
        "sturdy.attempts": call.attempts
      }),
      Effect.andThen(Effect.fail(PgFailure.toSqlError(failure, operation)))
    )
  }

  /** Runs attempts under the retry; the success path pays for one `Effect.catch`. */
  const withPolicies = <A, E, R>(
    call: Call,
    operation: string,
    attempt: Effect.Effect<A, E | Transient.AttemptTimeout, R>
  ): Effect.Effect<A, Exclude<E, Transient.AttemptTimeout> | SqlError, R> => {
    const classified: Effect.Effect<A, E | PgFailure.PolicyFailure, R> = Effect.catch(attempt, (error) =>
      Effect.withFiber((fiber) => Effect.fail(decide<E>(error, call, fiber.getRef(Idempotency))))
    )
    return Retry.retryOnFailure(classified, policy).pipe(
      Effect.tap(() => (call.attempts > 1 ? recovered(operation, call) : Effect.void)),
      Effect.catch((error): Effect.Effect<never, Exclude<E, Transient.AttemptTimeout> | SqlError> => {
        stats.failed++
        return PgFailure.isPolicyFailure(error)
          ? surface(operation, call, error)
          : Effect.fail(error as Exclude<E, Transient.AttemptTimeout>)
      })
    )
  }

  const borrower: Borrower = (f) =>
    Effect.suspend(() => {
      stats.statements++
      const call = new Call()
      const attempt = Effect.suspend(() => {
        stats.attempts++
        if (++call.attempts > 1) stats.retries++
        call.sent = false
        return pool.use((connection) => {
          call.sent = true
          return f(new SqlConnection(connection, call))
        })
      }).pipe(Effect.timeoutOrElse({ duration: attemptTimeout, orElse: () => timedOut(call) }))
      return withPolicies(call, "execute", attempt)
    })

  /** Acquiring a connection that outlives one statement: nothing is sent, so every transient failure is retried. */
  const acquirer = <A>(
    acquire: Effect.Effect<A, SqlError, Scope.Scope>,
    operation: string
  ): Effect.Effect<A, SqlError, Scope.Scope> =>
    Effect.suspend(() => {
      const call = new Call()
      const attempt = Effect.suspend(() => {
        stats.attempts++
        if (++call.attempts > 1) stats.retries++
        return acquire
      }).pipe(Effect.timeoutOrElse({ duration: attemptTimeout, orElse: () => timedOut(call) }))
      return withPolicies(call, operation, attempt)
    })

  const toSqlConnection = (connection: PgConnection.PgConnection): Connection =>
    new SqlConnection(connection, undefined)
  const acquire = acquirer(Effect.map(pool.get, toSqlConnection), "acquire")
  const reserve = acquirer(pool.reserve, "reserve")

  const compiler = PgClient.makeCompiler(options.transformQueryNames, options.transformJson)
  const client = yield* SqlClient.make({
    acquirer: acquire,
    borrower,
    transactionAcquirer: Effect.map(reserve, toSqlConnection),
    driver: "pg",
    prepareTransactionControls: true,
    commit,
    isTransaction: (connection) => !(connection as SqlConnection).broken,
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

  return {
    client: pgClient,
    service: {
      profile,
      stats: Effect.sync((): Stats => ({ ...stats }))
    }
  }
})

/**
 * The resilient client as a layer: `SqlClient`, `PgClient` and `ResilientPg`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient | ResilientPg, SqlError> =>
  Layer.effectContext(
    Effect.map(make(options), ({ client, service }) =>
      Context.make(PgClient.PgClient, client).pipe(
        Context.add(SqlClient.SqlClient, client),
        Context.add(ResilientPg, service)
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
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  url: databaseUrl,
  profile: Profile.config,
  maxConnections: Config.option(Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), "STURDY_POOL_SIZE")),
  sentPhaseRetry: Config.option(Config.Literals(["safe", "always"], "STURDY_SENT_PHASE_RETRY"))
}).pipe(
  Config.map(
    ({ url, profile, maxConnections, sentPhaseRetry }): Options => ({
      url,
      profile: profile.name,
      retriesAfterFirst: profile.retriesAfterFirst,
      backoffBase: profile.backoffBase,
      backoffJitter: profile.backoffJitter,
      attemptTimeout: profile.attemptTimeout,
      healthCheckInterval: profile.healthCheckInterval,
      maxConnections: Option.getOrUndefined(maxConnections),
      sentPhaseRetry: Option.getOrUndefined(sentPhaseRetry)
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
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient | ResilientPg, SqlError | Config.ConfigError> =>
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
