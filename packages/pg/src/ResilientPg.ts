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
 *   whose network stays silent is ended (and retired: a late cancel never
 *   reaches the session's next statement). The server-side
 *   `statement_timeout` is set to the same value with `SET LOCAL` after each
 *   transaction's `BEGIN`, which bounds statements inside transactions and
 *   which every pooler accepts. One watchdog per client enforces the
 *   deadlines: no timer or fiber per statement.
 * - Circuit breaker: opens after 5 failed attempts for 1 s, doubling to 60 s;
 *   the health monitor probes every 250 ms while it is open and closes it as
 *   soon as the server answers. A rejected attempt is retried on the call's
 *   backoff (`whenCircuitOpen`), and no new connection is opened while open.
 * - Behind a pooler in transaction mode, prepared statements turn themselves
 *   off the first time a session shows they do not survive.
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
import { Breaker, DatabaseMetrics, HealthMonitor, Profile, Retry } from "@sturdy/resilience"
import {
  Clock,
  Config,
  Context,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  Predicate,
  Redacted,
  Result,
  Schedule,
  Schema,
  Semaphore,
  Stream
} from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { Connection } from "effect/sql/SqlConnection"
import { SqlError, UnknownError } from "effect/sql/SqlError"
import * as Statement from "effect/sql/Statement"
import * as Router from "./internal/router.ts"
import * as Stack from "./internal/stack.ts"
import * as StatementStats from "./StatementStats.ts"
import * as PgFailure from "./PgFailure.ts"
import * as Target from "./Target.ts"
import * as Net from "node:net"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options extends PgClient.PgPoolConfig, Profile.Overrides {
  /** The profile whose defaults apply: `"development"` (default) or `"production"`. */
  readonly profile?: Profile.Name | undefined
  /**
   * Several hosts, walked in order (or shuffled, `loadBalanceHosts`) until one
   * satisfies `targetSessionAttrs`; the URL's host list (`h1:5432,h2:5433`, or
   * `?host=h1,h2&port=...`) does the same. Replaces `host` and `port`.
   */
  readonly hosts?: ReadonlyArray<{ readonly host: string; readonly port?: number | undefined }> | undefined
  /**
   * Which server to accept, with libpq's meaning: `"any"` (default),
   * `"read-write"`, `"read-only"`, `"primary"`, `"standby"`,
   * `"prefer-standby"`. The URL's `target_session_attrs` does the same.
   */
  readonly targetSessionAttrs?: Target.SessionAttrs | undefined
  /** `"disable"` (default): hosts in order; `"random"`: shuffled for each walk. The URL's `load_balance_hosts`. */
  readonly loadBalanceHosts?: "disable" | "random" | undefined
  /** Where `url` came from, for the error a bad URL gets: `"url"` (default), `"DATABASE_URL"` from `layerConfig`. */
  readonly urlSource?: string | undefined
  /**
   * The server-side `statement_timeout`. Defaults to the attempt timeout;
   * `"off"` leaves the server's setting alone.
   */
  readonly statementTimeout?: Duration.Input | "off" | undefined
  /**
   * How the server-side `statement_timeout` is applied:
   *
   * - `"transaction"` (default): `SET LOCAL statement_timeout` right after
   *   each transaction's `BEGIN`. Every pooler accepts it in every mode
   *   (PgBouncer session and transaction pooling, Supavisor, RDS Proxy), so
   *   statements inside transactions are bounded behind a pooler as they are
   *   direct. Statements outside transactions are bounded by the attempt
   *   deadline, which sends the server a cancel request (poolers relay it).
   *   Costs one round trip per transaction.
   * - `"startup"`: the start-up parameter, which bounds every statement of the
   *   session at no cost per transaction. PgBouncer's default configuration
   *   refuses it (`08P01 unsupported startup parameter`, a typed
   *   `ConfigurationRefused` from Sturdy), and with
   *   `ignore_startup_parameters = statement_timeout` it drops it silently: use
   *   it only for direct connections.
   */
  readonly statementTimeoutVia?: "transaction" | "startup" | undefined
  /**
   * What to do when the connection is lost after a statement was sent:
   * `"safe"` (default) retries only read-only statements and effects marked
   * `idempotent`, and fails others with `OutcomeUnknown`; `"always"` retries
   * every statement, as the seed did, at the risk of running a write twice.
   */
  readonly sentPhaseRetry?: "safe" | "always" | undefined
  /**
   * What a call does when the breaker rejects its attempt:
   * `"wait-and-retry"` (default) counts the rejection as a failed attempt and
   * retries on the profile's backoff, so calls ride out outages shorter than
   * their retry schedule (about 7 s in development, 31 s in production: a
   * restart, a failover) while the breaker keeps every attempt but its probes
   * off the server, and a call's time stays bounded by its schedule;
   * `"fail-fast"` ends the call with `CircuitOpen` at once, for callers that
   * would rather answer "try later" than wait.
   */
  readonly whenCircuitOpen?: "fail-fast" | "wait-and-retry" | undefined
  /**
   * What to do when the database is down at start-up: `"degraded"` (default)
   * builds the layer and keeps probing; `"fail"` fails it with
   * `StartupHealthCheckFailed`.
   */
  readonly healthOnStartup?: "degraded" | "fail" | undefined
  /** How many statement fingerprints the per-statement table keeps (least recently used beyond); 0 turns it off. Default 500. */
  readonly statementStatsSize?: number | undefined
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
  /** Per-statement statistics, by fingerprint, the most time-consuming first. */
  readonly statements: Effect.Effect<ReadonlyArray<StatementStats.Entry>>
  /** What `withTransaction` did since the layer was built (counters, read them, do not write them). */
  readonly transactions: TransactionCounters
}

/**
 * @since 0.1.0
 * @category models
 */
export interface TransactionCounters {
  /** Calls of `withTransaction`. */
  started: number
  /** Whole-transaction retries (40001, 40P01, a failure before COMMIT was sent, a COMMIT found aborted). */
  retries: number
  /** Retries caused by a serialization failure (40001) or a deadlock (40P01). */
  conflictRetries: number
  /** COMMITs whose answer was lost, and what asking the server found. */
  commitsInDoubt: number
  commitsFoundCommitted: number
  commitsFoundAborted: number
  commitsUnresolved: number
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
  Effect.mapError(self, unwrap) as Effect.Effect<A, E | PgFailure.PolicyFailure, R>

/**
 * @since 0.1.0
 * @category transactions
 */
export interface TransactionOptions {
  /** Defaults to the server's (`default_transaction_isolation`, read committed unless configured). */
  readonly isolation?: "read committed" | "repeatable read" | "serializable" | undefined
  /**
   * `"read only"` starts the transaction `READ ONLY` (the server refuses any
   * write), skips the transaction-id round trip, and treats a lost COMMIT
   * answer as success: nothing was written.
   */
  readonly access?: "read write" | "read only" | undefined
  /** Whole-transaction retries after the first attempt. Default 5. */
  readonly retriesAfterFirst?: number | undefined
  /** First delay between attempts, doubling; default 50 ms, so contention clears quickly. */
  readonly backoffBase?: Duration.Input | undefined
  /** Uniform jitter added to each delay, in [0, x); default 50 ms. */
  readonly backoffJitter?: Duration.Input | undefined
  /** Bound on the whole call, retries included. Default: twice the attempt timeout. */
  readonly deadline?: Duration.Input | undefined
  /** How long to keep asking the server about a COMMIT whose answer was lost. Default: the attempt timeout. */
  readonly resolveCommitWithin?: Duration.Input | undefined
}

/** A failure after which the whole transaction may run again. */
class RetryTransaction {
  readonly _tag = "RetryTransaction"
  readonly error: unknown
  readonly conflict: boolean
  /** The transient reason, for the retry's log line. */
  readonly reason: string
  constructor(error: unknown, conflict: boolean, reason: string) {
    this.error = error
    this.conflict = conflict
    this.reason = reason
  }
}

const positiveDuration = (fn: string, name: string, input: Duration.Input): Duration.Duration => {
  const duration = Duration.fromInputUnsafe(input)
  if (!Duration.isFinite(duration) || !(Duration.toMillis(duration) > 0)) {
    throw new RangeError(`${fn}: ${name} must be a positive finite duration, got ${Duration.format(duration)}`)
  }
  return duration
}

/**
 * Runs `self` in a transaction, and runs the whole transaction again (a fresh
 * connection, `self` from the start) when that is safe: on a serialization
 * failure (40001), a deadlock (40P01), any transient failure before COMMIT
 * was sent (the server rolls back a transaction whose session is lost), and
 * a COMMIT found aborted.
 *
 * **Details**
 *
 * In-doubt COMMIT: before sending COMMIT, Sturdy reads the transaction's id
 * (`pg_current_xact_id_if_assigned()`). If the connection is lost after
 * COMMIT was sent and before its answer, a fresh session (outside the pool
 * and the breaker) asks `pg_xact_status(id)`: `committed` means the call
 * succeeds with its result, without running again; `aborted` means it is run
 * again; `in progress` is asked again until `resolveCommitWithin`; no answer
 * in time fails with `CommitOutcomeUnknown` carrying the id. The cost is one
 * extra round trip per transaction (none with `access: "read only"`).
 *
 * **Gotchas**
 *
 * - `self` may run several times: keep side effects outside the database
 *   (an HTTP call, a message) out of it, or make them idempotent.
 * - Marked `idempotent`, a transaction whose COMMIT outcome stays unknown is
 *   run again instead of failing with `CommitOutcomeUnknown`.
 * - A failure to get a connection has already been retried by the client's
 *   own policy; it ends the call rather than start another round of retries.
 *
 * @since 0.1.0
 * @category transactions
 */
export const withTransaction = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  options: TransactionOptions = {}
): Effect.Effect<
  A,
  E | SqlError | PgFailure.PolicyFailure | PgFailure.TransactionTimeout,
  R | SqlClient.SqlClient | ResilientPg
> =>
  Effect.gen(function* () {
    const fn = "ResilientPg.withTransaction"
    const sql = yield* SqlClient.SqlClient
    const service = yield* ResilientPg
    const isolation = options.isolation
    if (isolation !== undefined && !["read committed", "repeatable read", "serializable"].includes(isolation)) {
      throw new RangeError(
        `${fn}: isolation must be "read committed", "repeatable read" or "serializable", got ${JSON.stringify(isolation)}`
      )
    }
    const access = options.access ?? "read write"
    if (access !== "read write" && access !== "read only") {
      throw new RangeError(`${fn}: access must be "read write" or "read only", got ${JSON.stringify(access)}`)
    }
    const retriesAfterFirst = options.retriesAfterFirst ?? 5
    if (!Number.isInteger(retriesAfterFirst) || retriesAfterFirst < 0) {
      throw new RangeError(`${fn}: retriesAfterFirst must be an integer >= 0, got ${retriesAfterFirst}`)
    }
    const attemptTimeout = service.profile.attemptTimeout
    const deadline = positiveDuration(fn, "deadline", options.deadline ?? Duration.times(attemptTimeout, 2))
    const resolveWithin = positiveDuration(fn, "resolveCommitWithin", options.resolveCommitWithin ?? attemptTimeout)
    const begin = `BEGIN${isolation === undefined ? "" : ` ISOLATION LEVEL ${isolation.toUpperCase()}`}${
      access === "read only" ? " READ ONLY" : ""
    }`
    const counters = service.transactions
    counters.started++

    const classify = (failure: unknown, attempt: CommitAttempt, idempotent: boolean): unknown => {
      // The driver's error, also when a library on top (drizzle) wrapped it.
      const error = PgFailure.findSqlError(failure)
      if (error === undefined) return failure
      const policy = PgFailure.fromSqlError(error)
      if (policy !== undefined) {
        return policy._tag === "CommitOutcomeUnknown" && idempotent
          ? new RetryTransaction(policy, false, "CommitOutcomeUnknown")
          : policy
      }
      const reason = PgFailure.classify(error, "transaction")
      if (reason === undefined) return failure
      // In a READ ONLY transaction, 25006 is the caller's write, not a failover: running it again cannot help.
      if (access === "read only" && reason._tag === "ReadOnlyTransaction") return failure
      const conflict = reason._tag === "SerializationFailure" || reason._tag === "Deadlock"
      // Before COMMIT was sent nothing can have committed; after it, the server either refused the COMMIT
      // (an answer: not applied) or was asked and said aborted.
      const safe = attempt.state !== "sent" || PgFailure.outcome(reason) === "not-applied"
      return safe ? new RetryTransaction(failure, conflict, reason._tag) : failure
    }

    const once = Effect.suspend(() => {
      const attempt: CommitAttempt = { access, resolveWithin, state: "not-sent", transactionId: undefined }
      return sql.withTransaction(self).pipe(
        Effect.provideService(SqlClient.BeginTransaction, begin),
        Effect.provideService(CurrentCommitAttempt, attempt),
        Effect.catch((error) =>
          Effect.withFiber((fiber) => Effect.fail(classify(error, attempt, fiber.getRef(Idempotency) === "idempotent")))
        )
      )
    })

    const policy = Retry.schedule(
      { retriesAfterFirst, base: options.backoffBase ?? "50 millis", jitter: options.backoffJitter ?? "50 millis" },
      (failure: unknown) => Predicate.isTagged(failure, "RetryTransaction")
    ).pipe(
      Schedule.tap((meta) =>
        Effect.sync(() => {
          counters.retries++
          if ((meta.input as RetryTransaction).conflict) counters.conflictRetries++
        }).pipe(
          Effect.andThen(Effect.logWarning("Retrying a transaction")),
          Effect.annotateLogs({
            "sturdy.event": "transaction-retry",
            "sturdy.reason": (meta.input as RetryTransaction).reason,
            "sturdy.attempt": meta.attempt + 1,
            "sturdy.delayMillis": Math.round(Duration.toMillis(meta.duration))
          })
        )
      )
    )

    return yield* Retry.retryOnFailure(once, policy).pipe(
      Effect.catch((failure) =>
        Effect.fail(
          Predicate.isTagged(failure, "RetryTransaction") ? unwrap((failure as RetryTransaction).error) : failure
        )
      ),
      Effect.timeoutOrElse({
        duration: deadline,
        orElse: () => Effect.fail(new PgFailure.TransactionTimeout({ timeout: deadline }))
      })
    ) as Effect.Effect<A, E | SqlError | PgFailure.PolicyFailure | PgFailure.TransactionTimeout, R>
  })

/** The policy failure an error carries at any depth (drizzle wraps the `SqlError`), else the error itself. */
const unwrap = (error: unknown): unknown => {
  const sqlError = PgFailure.findSqlError(error)
  return (sqlError !== undefined && PgFailure.fromSqlError(sqlError)) || error
}

/** PostgreSQL answers `COMMIT` of an aborted transaction with `ROLLBACK`; PgClient's own check. */
const plainCommit = (conn: Connection): Effect.Effect<void, SqlError> =>
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

/** One transaction attempt of `withTransaction`, as its COMMIT sees it. */
interface CommitAttempt {
  readonly access: "read write" | "read only"
  readonly resolveWithin: Duration.Duration
  state: "not-sent" | "sent" | "found-aborted"
  transactionId: string | undefined
}

/** Set by `withTransaction` around one attempt; read by the client's COMMIT. Absent for `sql.withTransaction`. */
const CurrentCommitAttempt = Context.Reference<CommitAttempt | undefined>("@sturdy/pg/ResilientPg/CommitAttempt", {
  defaultValue: () => undefined
})

const PgJson = Statement.custom<Statement.Custom<"PgJson", unknown>>("PgJson")

const channelNames = new TextEncoder()

/** `@effect/sql-pg`'s own check (not exported there), with its message: PostgreSQL truncates longer names. */
const channelNameError = (channel: string, operation: string): SqlError | undefined => {
  if (channelNames.encode(channel).byteLength <= 63) return undefined
  const message = "PostgreSQL channel names must not exceed 63 UTF-8 bytes"
  return new SqlError({ reason: new UnknownError({ cause: new Error(message), message, operation }) })
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
  const whenCircuitOpen = options.whenCircuitOpen ?? "wait-and-retry"
  if (whenCircuitOpen !== "fail-fast" && whenCircuitOpen !== "wait-and-retry") {
    throw new RangeError(
      `${fn}: whenCircuitOpen must be "fail-fast" or "wait-and-retry", got ${JSON.stringify(whenCircuitOpen)}`
    )
  }
  if (options.targetSessionAttrs !== undefined && !Target.sessionAttrs.includes(options.targetSessionAttrs)) {
    throw new RangeError(
      `${fn}: targetSessionAttrs must be one of ${Target.sessionAttrs.join(", ")}, got ${JSON.stringify(options.targetSessionAttrs)}`
    )
  }
  if (
    options.loadBalanceHosts !== undefined &&
    options.loadBalanceHosts !== "disable" &&
    options.loadBalanceHosts !== "random"
  ) {
    throw new RangeError(
      `${fn}: loadBalanceHosts must be "disable" or "random", got ${JSON.stringify(options.loadBalanceHosts)}`
    )
  }
  if (options.hosts !== undefined && options.hosts.length === 0) {
    throw new RangeError(`${fn}: hosts must list at least one host`)
  }
  const statementTimeoutVia = options.statementTimeoutVia ?? "transaction"
  if (statementTimeoutVia !== "transaction" && statementTimeoutVia !== "startup") {
    throw new RangeError(
      `${fn}: statementTimeoutVia must be "transaction" or "startup", got ${JSON.stringify(statementTimeoutVia)}`
    )
  }
  const statementStatsSize = options.statementStatsSize ?? 500
  if (!Number.isInteger(statementStatsSize) || statementStatsSize < 0) {
    throw new RangeError(`${fn}: statementStatsSize must be an integer >= 0, got ${statementStatsSize}`)
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
 * The target from the options: the URL's (libpq syntax, several hosts
 * allowed), or the host options given in code.
 */
const targetOf = (options: Options): Result.Result<Target.Target, Target.InvalidUrl> => {
  const fromUrl =
    options.url === undefined ? undefined : Target.parse(Redacted.value(options.url), options.urlSource ?? "url")
  if (fromUrl !== undefined && Result.isFailure(fromUrl)) return fromUrl
  const base = fromUrl?.success
  const hosts =
    options.hosts?.map((h) => ({ host: h.host, port: h.port ?? 5432 })) ??
    (options.host !== undefined || options.port !== undefined || base === undefined
      ? [
          {
            host: options.host ?? base?.hosts[0]?.host ?? "localhost",
            port: options.port ?? base?.hosts[0]?.port ?? 5432
          }
        ]
      : base.hosts)
  return Result.succeed({
    hosts,
    username: options.username ?? base?.username,
    password: base?.password,
    database: options.database ?? base?.database,
    targetSessionAttrs: options.targetSessionAttrs ?? base?.targetSessionAttrs ?? "any",
    loadBalanceHosts: options.loadBalanceHosts ?? base?.loadBalanceHosts ?? "disable",
    connectTimeout: base?.connectTimeout,
    parameters: base?.parameters ?? []
  })
}

/** The breaker's key: one circuit per database, never the credentials. */
const databaseKey = (target: Target.Target, options: Options): string =>
  `${target.hosts.map((h) => `${h.host}:${h.port}`).join(",")}/${target.database ?? options.username ?? "postgres"}`

/**
 * The health probe's session: kept between probes, replaced when it dies or
 * when a probe asks for a fresh one. `onLost` runs when a kept session dies.
 */
const makeProbeSessions = Effect.fnUntraced(function* (
  connect: Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope>,
  verify: (connection: PgConnection.PgConnection) => Effect.Effect<unknown, SqlError>,
  onLost: () => void
) {
  let current: { readonly connection: PgConnection.PgConnection; readonly scope: Scope.Closeable } | undefined
  const lock = yield* Semaphore.make(1)
  const drop = Effect.suspend(() => {
    const session = current
    current = undefined
    return session === undefined ? Effect.void : Scope.close(session.scope, Exit.void)
  })
  yield* Effect.addFinalizer(() => drop)
  const open = Effect.gen(function* () {
    const scope = yield* Scope.make()
    const connection = yield* connect.pipe(
      Scope.provide(scope),
      Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : Scope.close(scope, exit)))
    )
    const session = { connection, scope }
    Stack.internalsOf(connection)?.retireHooks?.add(() => {
      if (current === session) {
        current = undefined
        onLost()
      }
    })
    current = session
    return connection
  })
  const probe = (mode: "reuse" | "fresh"): Effect.Effect<unknown, SqlError> =>
    lock.withPermit(
      Effect.gen(function* () {
        if (mode === "fresh") yield* drop
        return yield* verify(current?.connection ?? (yield* open))
      }).pipe(Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : drop)))
    )
  return { probe }
})

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
): Effect.fn.Return<
  Built,
  SqlError | HealthMonitor.StartupHealthCheckFailed | Target.InvalidUrl,
  Scope.Scope | Reactivity.Reactivity
> {
  const profile = validateOptions(options)
  // The driver would report a bad URL with the parser's error, whose `input` is the whole URL, password included.
  const parsedTarget = targetOf(options)
  if (Result.isFailure(parsedTarget)) return yield* Effect.fail(parsedTarget.failure)
  const target = parsedTarget.success
  const sentPhaseRetry = options.sentPhaseRetry ?? "safe"
  const statementTimeout = statementTimeoutMillis(options, profile)
  const statementTimeoutVia = options.statementTimeoutVia ?? "transaction"
  const key = databaseKey(target, options)
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
      "sturdy.statementTimeout":
        statementTimeout === undefined ? "off" : `${statementTimeout} ms (${statementTimeoutVia})`,
      "sturdy.healthCheckInterval": Duration.format(profile.healthCheckInterval),
      "sturdy.breaker": `opens after ${profile.breakerFailures} failed attempts`,
      "sturdy.sentPhaseRetry": sentPhaseRetry
    })
  )

  // Every session is opened with the same settings (the pool's, the health probe's, commit resolution's), so a
  // setting a pooler refuses fails the probe too instead of letting it report healthy. The driver reads one host:
  // each host of the target gets the same URL (credentials, database, driver parameters) with that host alone.
  const startupParameters =
    statementTimeout === undefined || statementTimeoutVia !== "startup"
      ? options.startupParameters
      : { statement_timeout: String(statementTimeout), ...options.startupParameters }
  const sessionConfigFor = (host: Target.Host): PgConnection.Config => ({
    ...options,
    ...(options.url !== undefined && { url: Target.singleHostUrl(target, host) }),
    host: host.host,
    port: host.port,
    connectTimeout: options.connectTimeout ?? target.connectTimeout,
    startupParameters
  })
  // Counting the pool's sockets is the only way to know how many connections it holds; opening them here also lets
  // the breaker refuse every one while it is open (the pool itself retries a failed connection for its waiters), and
  // sends every new one to the host the router chose.
  const countSockets = options.stream === undefined && options.path === undefined
  let openSockets = 0
  let socketsOpened = 0
  let connectionGate = (): Breaker.CircuitOpen | undefined => undefined
  let onServerChanged = () => {}
  const runFork = Effect.runForkWith(yield* Effect.context<never>())
  const sessions = new Stack.Sessions({
    retire: (connection) => pool.invalidate(connection),
    afterBegin:
      statementTimeout === undefined || statementTimeoutVia !== "transaction"
        ? undefined
        : `SET LOCAL statement_timeout = ${statementTimeout}`,
    evictOnReadOnly: !["read-only", "standby", "prefer-standby"].includes(target.targetSessionAttrs),
    onUnprepared: () =>
      runFork(
        Effect.logWarning(
          "Prepared statements do not survive between statements here (a pooler in transaction mode): statements run unnamed from now on"
        ).pipe(Effect.annotateLogs({ "sturdy.event": "prepared-statements-off" }))
      ),
    onServerChanged: () => onServerChanged()
  })
  const router = Router.make({
    target,
    connect: (host) =>
      PgConnection.make({
        ...sessionConfigFor(host),
        applicationName: `${options.applicationName ?? "@effect/sql-pg"} health`,
        connectTimeout: profile.healthCheckTimeout
      }),
    moved: (from, to) => {
      sessions.moved()
      runFork(
        Effect.logWarning(`The target moved: new connections go to ${to.host}:${to.port}`).pipe(
          Effect.annotateLogs({
            "sturdy.event": "failover",
            "sturdy.from": `${from.host}:${from.port}`,
            "sturdy.to": `${to.host}:${to.port}`
          })
        )
      )
    }
  })
  const first = target.hosts[0]!
  const pool = yield* PgPool.make({
    ...sessionConfigFor(first),
    // A connection that never completes its start-up is an attempt that never ends: bound it by the attempt timeout.
    connectTimeout: options.connectTimeout ?? target.connectTimeout ?? profile.attemptTimeout,
    ...(countSockets && {
      stream: () => {
        const refused = connectionGate()
        if (refused !== undefined) throw refused
        const host = router.current()
        if (host === undefined) throw Router.noMatchingHost(target)
        const socket = Net.connect({
          host: host.host,
          port: host.port,
          noDelay: true,
          ...(options.keepAlive !== undefined && {
            keepAlive: true,
            keepAliveInitialDelay: Duration.toMillis(Duration.fromInputUnsafe(options.keepAlive))
          })
        })
        sessions.mark(socket)
        openSockets++
        socketsOpened++
        socket.once("close", () => openSockets--)
        return socket
      }
    })
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
      openDuration: Profile.openDuration(profile)
    }))
  yield* Effect.forkScoped(Stream.runForEach(breaker.transitions, transitionLog), { startImmediately: true })

  const recorder = new DatabaseMetrics.Recorder()
  const statements = new StatementStats.Table(options.statementStatsSize ?? 500)
  const stack = yield* Stack.make({
    pool,
    maxConnections,
    statementsPerConnection: options.multiplex === true ? (options.multiplexConcurrency ?? 32) : 1,
    profile,
    sentPhaseRetry,
    whenCircuitOpen: options.whenCircuitOpen ?? "wait-and-retry",
    breaker,
    key,
    recorder,
    statements,
    sessions,
    idempotency: (fiber) => fiber.getRef(Idempotency)
  })
  connectionGate = stack.connectionGate
  const toSqlConnection = (connection: PgConnection.PgConnection): Connection =>
    new Stack.SqlConnection(connection, undefined, sessions)
  // As for statements (stack.ts): once the server behind the connections changed, one from before is retired.
  const fresh = (
    checkout: Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope>
  ): Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope> =>
    Effect.flatMap(checkout, (connection) =>
      sessions.epoch > 0 && sessions.stale(connection)
        ? Effect.andThen(
            pool.invalidate(connection),
            Effect.suspend(() => fresh(checkout))
          )
        : Effect.succeed(connection)
    )
  const acquire = stack.acquire(Effect.map(fresh(pool.get), toSqlConnection), "acquire")
  const reserve = stack.acquire(fresh(pool.reserve), "reserve")
  const borrower = stack.borrower

  const transactions: TransactionCounters = {
    started: 0,
    retries: 0,
    conflictRetries: 0,
    commitsInDoubt: 0,
    commitsFoundCommitted: 0,
    commitsFoundAborted: 0,
    commitsUnresolved: 0
  }

  /** Asks a fresh session, outside the pool and the breaker, what became of a transaction. */
  const transactionStatus = (transactionId: string, connectTimeout: Duration.Duration) =>
    Effect.scoped(
      Effect.flatMap(
        PgConnection.make({
          ...sessionConfigFor(router.current() ?? first),
          applicationName: `${options.applicationName ?? "@effect/sql-pg"} commit-resolution`,
          connectTimeout
        }),
        (session) => session.query("SELECT pg_xact_status($1::xid8)::text AS status", [transactionId], false)
      )
    ).pipe(Effect.map((result) => (result.rows[0]?.status ?? null) as string | null))

  /**
   * The COMMIT was sent and its answer lost: poll `pg_xact_status` until the
   * server says committed (success) or aborted (safe to run again), or the
   * time runs out (CommitOutcomeUnknown).
   */
  const resolveCommit = (attempt: CommitAttempt, transactionId: string, lost: SqlError) =>
    Effect.gen(function* () {
      transactions.commitsInDoubt++
      yield* Effect.logWarning(
        "The answer to a COMMIT was lost: asking the server what became of the transaction"
      ).pipe(Effect.annotateLogs({ "sturdy.event": "commit-in-doubt", "sturdy.transactionId": transactionId }))
      const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(attempt.resolveWithin)
      let detail = "no answer yet"
      while (true) {
        const remaining = deadline - (yield* Clock.currentTimeMillis)
        if (remaining <= 0) break
        const status = yield* Effect.result(
          transactionStatus(transactionId, Duration.millis(Math.min(remaining, 2000)))
        )
        if (status._tag === "Success" && status.success === "committed") {
          transactions.commitsFoundCommitted++
          yield* Effect.logInfo("The in-doubt COMMIT had committed").pipe(
            Effect.annotateLogs({ "sturdy.event": "commit-resolved", "sturdy.outcome": "committed" })
          )
          return
        }
        if (status._tag === "Success" && status.success === "aborted") {
          transactions.commitsFoundAborted++
          attempt.state = "found-aborted"
          yield* Effect.logInfo("The in-doubt COMMIT had not committed: the transaction can run again").pipe(
            Effect.annotateLogs({ "sturdy.event": "commit-resolved", "sturdy.outcome": "aborted" })
          )
          return yield* Effect.fail(lost)
        }
        detail =
          status._tag === "Success"
            ? `pg_xact_status: ${status.success ?? "unknown (too old)"}`
            : `the server could not be asked: ${status.failure.message}`
        if (status._tag === "Success" && status.success === null) break
        yield* Effect.sleep("50 millis")
      }
      transactions.commitsUnresolved++
      const unknown = new PgFailure.CommitOutcomeUnknown({ transactionId, detail })
      return yield* Effect.fail(PgFailure.toSqlError(unknown, "commit"))
    })

  /** COMMIT, resolving a lost answer when `withTransaction` asked for it. */
  const commit = (conn: Connection): Effect.Effect<void, SqlError> =>
    Effect.withFiber((fiber) => {
      const attempt = fiber.getRef(CurrentCommitAttempt)
      if (attempt === undefined) return plainCommit(conn)
      if (attempt.access === "read only") {
        // Nothing was written: if the answer is lost, the result read before it stands.
        attempt.state = "sent"
        return Effect.catchIf(plainCommit(conn), PgFailure.sessionLost, () => Effect.void)
      }
      return Effect.flatMap(
        conn.executeRaw("SELECT pg_current_xact_id_if_assigned()::text AS xid", []) as Effect.Effect<
          PgConnection.Result,
          SqlError
        >,
        (result) => {
          const transactionId = (result.rows[0]?.xid ?? null) as string | null
          attempt.transactionId = transactionId ?? undefined
          attempt.state = "sent"
          return Effect.catchIf(plainCommit(conn), PgFailure.sessionLost, (lost) =>
            // A transaction that wrote nothing has no outcome to lose.
            transactionId === null ? Effect.void : resolveCommit(attempt, transactionId, lost)
          )
        }
      )
    })

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
    // As PgClient's: the channel checked locally, and the notification sent on a connection of its own, outside
    // any transaction the caller is in (so a rollback does not take it back).
    notify: (channel: string, payload: string) => {
      const invalid = channelNameError(channel, "notify")
      return invalid !== undefined
        ? Effect.fail(invalid)
        : Effect.asVoid(
            Effect.scoped(
              Effect.flatMap(acquire, (conn) => conn.executeRaw("SELECT pg_notify($1, $2)", [channel, payload]))
            )
          )
    }
  })

  // The probe has a session of its own, opened exactly as the pool opens its own: never through the breaker,
  // never behind a saturated pool. While the circuit is closed it runs `SELECT 1` on that session, and the
  // session's loss (a server that stops ends it at once) starts the next probe immediately. While the circuit is
  // open, every probe opens a fresh session, as the pool would have to, and its success closes the circuit.
  let onSessionLost = () => {}
  const probeSessions = yield* makeProbeSessions(
    router.routed
      ? router.discover
      : PgConnection.make({
          ...sessionConfigFor(first),
          applicationName: `${options.applicationName ?? "@effect/sql-pg"} health`,
          connectTimeout: profile.healthCheckTimeout
        }),
    router.verify,
    () => onSessionLost()
  )
  const circuitClosed = Effect.map(breaker.state(key), (state) => state._tag === "Closed")
  const health = yield* HealthMonitor.make({
    probe: Effect.flatMap(
      circuitClosed,
      (closed): Effect.Effect<unknown, SqlError> => probeSessions.probe(closed ? "reuse" : "fresh")
    ),
    interval: profile.healthCheckInterval,
    probeFastWhile: Effect.map(circuitClosed, (closed) => !closed),
    timeout: profile.healthCheckTimeout,
    onStartup: options.healthOnStartup ?? "degraded",
    describe: (error: SqlError) => {
      const refused = PgFailure.refusal(error)
      if (refused !== undefined) return `ConfigurationRefused: ${refused.message}`
      const reason = PgFailure.classify(error)
      return reason === undefined ? `${error.reason._tag}: ${error.message}` : `${reason._tag}: ${reason.message}`
    }
  })
  onSessionLost = () => Effect.runSync(health.checkSoon)
  onServerChanged = onSessionLost
  yield* Effect.forkScoped(
    Stream.runForEach(breaker.transitions, (transition) => (transition.to === "Open" ? health.checkSoon : Effect.void)),
    { startImmediately: true }
  )
  const local = breaker.local
  if (local !== undefined) {
    yield* Effect.forkScoped(
      Stream.runForEach(health.changes, (result) =>
        result.status === "healthy" ? Effect.sync(() => local.probeSucceeded(key)) : Effect.void
      ),
      { startImmediately: true }
    )
  }

  const pool_ = (): DatabaseMetrics.PoolStats => ({
    max: maxConnections,
    open: countSockets ? openSockets : undefined,
    inUse: stack.inUse(),
    idle: countSockets ? Math.max(0, openSockets - stack.inUse()) : undefined,
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
          connectionsOpened: countSockets ? socketsOpened : undefined
        })
      ),
      breakerState: breaker.state(key),
      transitions: breaker.transitions,
      pool: Effect.sync(pool_),
      statements: Effect.sync(() => statements.snapshot()),
      transactions
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
export const layer = (
  options: Options
): Layer.Layer<Provided, SqlError | HealthMonitor.StartupHealthCheckFailed | Target.InvalidUrl> =>
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
      Schema.makeFilter((url: string) => {
        const parsed = Target.parse(url, "DATABASE_URL")
        return Result.isSuccess(parsed) || parsed.failure.problem
      })
    )
  ),
  "DATABASE_URL"
)

const settings = (url: Config.Config<Redacted.Redacted<string>>): Config.Config<Options> =>
  Config.all({
    url,
    profile: Profile.config,
    maxConnections: Config.option(
      Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), "STURDY_POOL_SIZE")
    ),
    sentPhaseRetry: Config.option(Config.Literals(["safe", "always"], "STURDY_SENT_PHASE_RETRY")),
    healthOnStartup: Config.option(Config.Literals(["degraded", "fail"], "STURDY_HEALTH_ON_STARTUP")),
    whenCircuitOpen: Config.option(Config.Literals(["fail-fast", "wait-and-retry"], "STURDY_WHEN_CIRCUIT_OPEN"))
  }).pipe(
    Config.map(
      ({ url, profile, maxConnections, sentPhaseRetry, healthOnStartup, whenCircuitOpen }): Options => ({
        url,
        urlSource: "DATABASE_URL",
        profile: profile.name,
        retriesAfterFirst: profile.retriesAfterFirst,
        backoffBase: profile.backoffBase,
        backoffJitter: profile.backoffJitter,
        attemptTimeout: profile.attemptTimeout,
        healthCheckInterval: profile.healthCheckInterval,
        healthCheckTimeout: profile.healthCheckTimeout,
        breakerFailures: profile.breakerFailures,
        breakerOpenDuration: profile.breakerOpenDuration,
        breakerOpenDurationMax: profile.breakerOpenDurationMax,
        maxConnections: Option.getOrUndefined(maxConnections),
        sentPhaseRetry: Option.getOrUndefined(sentPhaseRetry),
        healthOnStartup: Option.getOrUndefined(healthOnStartup),
        whenCircuitOpen: Option.getOrUndefined(whenCircuitOpen)
      })
    )
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
 * | `STURDY_WHEN_CIRCUIT_OPEN` | `wait-and-retry` or `fail-fast` | `wait-and-retry` |
 * | `STURDY_HEALTH_ON_STARTUP` | `degraded` or `fail` | `degraded` |
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = settings(databaseUrl)

/**
 * The resilient client configured from the environment (see `config`).
 * `options` given in code win over the environment; with `options.url`,
 * `DATABASE_URL` is not read.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options?: Options
): Layer.Layer<Provided, SqlError | HealthMonitor.StartupHealthCheckFailed | Target.InvalidUrl | Config.ConfigError> =>
  Layer.unwrap(
    Effect.map(options?.url === undefined ? config : settings(Config.succeed(options.url)), (fromEnv) =>
      layer(
        dropUndefined({
          ...fromEnv,
          // An open duration given alone in code pins it, as it does for `layer`: the profile's ceiling must not follow.
          ...(options?.breakerOpenDuration !== undefined && { breakerOpenDurationMax: undefined }),
          ...dropUndefined(options ?? {})
        })
      )
    )
  )

const dropUndefined = <A extends object>(options: A): A =>
  Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as A

/**
 * The connection URL with its password replaced, for logs.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeUrl = (url: Redacted.Redacted<string>): string => {
  const parsed = Target.parse(Redacted.value(url), "url")
  if (Result.isFailure(parsed)) return "<invalid url>"
  const target = parsed.success
  const hosts = target.hosts.map((h) => `${h.host.includes(":") ? `[${h.host}]` : h.host}:${h.port}`).join(",")
  return `postgres://${target.username === undefined ? "" : `${target.username}@`}${hosts}/${target.database ?? ""}`
}
