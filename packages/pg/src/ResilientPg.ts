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
import { Breaker, DatabaseMetrics, HealthMonitor, Profile, RetryBudget } from "@sturdy/resilience"
import { Clock, Config, Context, type Duration, Effect, Layer, Option, Redacted, Result, Stream } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { Connection } from "effect/sql/SqlConnection"
import type { SqlError } from "effect/sql/SqlError"
import * as EnvConfig from "./internal/config.ts"
import { Idempotency as IdempotencyRef } from "./internal/idempotency.ts"
import * as Health from "./internal/health.ts"
import * as Logs from "./internal/logs.ts"
import * as Options_ from "./internal/options.ts"
import * as PgClientParts from "./internal/pgClient.ts"
import * as Router from "./internal/router.ts"
import { Sockets } from "./internal/sockets.ts"
import * as Stack from "./internal/stack.ts"
import * as Transaction from "./internal/transaction.ts"
import * as StatementStats from "./StatementStats.ts"
import * as PgFailure from "./PgFailure.ts"
import * as Target from "./Target.ts"

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
   * every statement, at the risk of running a write twice.
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
   * The client's retry budget: every call that succeeds deposits `ratio` of
   * a token (default 0.1), the bucket also refills at `minRetriesPerSecond`
   * (default 1) up to ten seconds' worth (at least 100 tokens), and every
   * retry of a transient failure takes one. A retry the budget refuses ends
   * the call with `RetryBudgetExhausted`, so in a long outage attempts stay
   * within about 1.0 x first attempts. A retry after a rejection by the open
   * circuit is free (the breaker already keeps it off the server). `false`
   * turns the budget off.
   */
  readonly retryBudget?: RetryBudget.Options | false | undefined
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
  /** The database, as logs, alerts and the breaker name it: `host:port/database` (several hosts comma-separated), never its credentials. */
  readonly database: string
  readonly stats: Effect.Effect<Stats>
  readonly breakerState: Effect.Effect<Breaker.State>
  readonly transitions: Stream.Stream<Breaker.Transition>
  readonly pool: Effect.Effect<DatabaseMetrics.PoolStats>
  /** Per-statement statistics, by fingerprint, the most time-consuming first. */
  readonly statementStats: Effect.Effect<ReadonlyArray<StatementStats.Entry>>
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
export const Idempotency: Context.Reference<"auto" | "idempotent" | "not-idempotent"> = IdempotencyRef

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
  Effect.mapError(self, Transaction.unwrap) as Effect.Effect<A, E | PgFailure.PolicyFailure, R>

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
export const withTransaction: <A, E, R>(
  self: Effect.Effect<A, E, R>,
  options?: TransactionOptions
) => Effect.Effect<
  A,
  E | SqlError | PgFailure.PolicyFailure | PgFailure.TransactionTimeout,
  R | SqlClient.SqlClient | ResilientPg
> = Transaction.withTransaction

/**
 * Builds the resilient client and its services; the pool, the health monitor
 * and the metrics registrations end with the scope.
 *
 * **Details**
 *
 * A `Breaker` in context (for example `SharedBreaker.layer`, whose state is
 * shared across processes through Redis with no round trip per call) is used
 * when present; otherwise an in-process breaker with the profile's policy is
 * built.
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
  const profile = Options_.validateOptions(options)
  const retryBudget = Options_.retryBudgetOf(options)
  // The driver would report a bad URL with the parser's error, whose `input` is the whole URL, password included.
  const parsedTarget = Options_.targetOf(options)
  if (Result.isFailure(parsedTarget)) return yield* Effect.fail(parsedTarget.failure)
  const target = parsedTarget.success
  const sentPhaseRetry = options.sentPhaseRetry ?? "safe"
  const statementTimeout = Options_.statementTimeoutMillis(options, profile)
  const statementTimeoutVia = options.statementTimeoutVia ?? "transaction"
  const key = Options_.databaseKey(target)
  const maxConnections = options.maxConnections ?? 10

  yield* Logs.configuration({
    key,
    profile,
    statementTimeout: statementTimeout === undefined ? "off" : `${statementTimeout} ms (${statementTimeoutVia})`,
    sentPhaseRetry
  })

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
  const countSockets = options.stream === undefined && options.path === undefined
  let onServerChanged = () => {}
  const runFork = Effect.runForkWith(yield* Effect.context<never>())
  const sessions = new Stack.Sessions({
    retire: (connection) => pool.invalidate(connection),
    afterBegin:
      statementTimeout === undefined || statementTimeoutVia !== "transaction"
        ? undefined
        : `SET LOCAL statement_timeout = ${statementTimeout}`,
    evictOnReadOnly: !["read-only", "standby", "prefer-standby"].includes(target.targetSessionAttrs),
    onUnprepared: () => runFork(Logs.preparedStatementsOff),
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
      runFork(Logs.failover(from, to))
    }
  })
  const sockets = new Sockets({ target, router, sessions, keepAlive: options.keepAlive })
  const first = target.hosts[0]!
  const pool = yield* PgPool.make({
    ...sessionConfigFor(first),
    // A connection that never completes its start-up is an attempt that never ends: bound it by the attempt timeout.
    connectTimeout: options.connectTimeout ?? target.connectTimeout ?? profile.attemptTimeout,
    ...(countSockets && { stream: sockets.connect })
  })
  yield* Logs.poolReady(maxConnections, options.multiplex === true)

  const breaker =
    Option.getOrUndefined(yield* Effect.serviceOption(Breaker.Breaker)) ??
    (yield* Breaker.make({
      tripPolicy: Breaker.consecutive(profile.breakerFailures),
      openDuration: Profile.openDuration(profile)
    }))
  yield* Effect.forkScoped(
    Stream.runForEach(breaker.transitions, (transition) => Logs.transition(transition, key)),
    { startImmediately: true }
  )

  const recorder = new DatabaseMetrics.Recorder()
  // A fleet's budgets (`SharedBreaker.layer`) when in context, else the client's own.
  const budgets = Option.getOrUndefined(yield* Effect.serviceOption(RetryBudget.Budgets))
  const budget =
    retryBudget === undefined
      ? undefined
      : budgets === undefined
        ? new RetryBudget.RetryBudget(retryBudget, yield* Clock.currentTimeMillis)
        : yield* budgets.make(key, retryBudget, yield* Clock.currentTimeMillis)
  recorder.retryBudget = budget
  const statements = new StatementStats.Table(options.statementStatsSize ?? 500)
  const stack = yield* Stack.make({
    pool,
    maxConnections,
    statementsPerConnection: options.multiplex === true ? (options.multiplexConcurrency ?? 32) : 1,
    profile,
    sentPhaseRetry,
    whenCircuitOpen: options.whenCircuitOpen ?? "wait-and-retry",
    retryBudget: budget,
    breaker,
    key,
    recorder,
    statements,
    sessions,
    idempotency: (fiber) => fiber.getRef(Idempotency)
  })
  sockets.gate = stack.connectionGate
  const toSqlConnection = (connection: PgConnection.PgConnection): Connection =>
    new Stack.WatchedConnection(connection, undefined, sessions)
  // As for statements (Sessions, internal/sessions.ts): once the server behind the connections changed, one from before is retired.
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

  const pgClient = yield* PgClientParts.make({
    config: options,
    acquirer: acquire,
    borrower,
    transactionAcquirer: Effect.map(reserve, toSqlConnection),
    listenAcquirer: reserve,
    commit: Transaction.makeCommit(transactions, transactionStatus),
    isTransaction: (connection) => !(connection as Stack.WatchedConnection).broken,
    server: { address: first.host, port: first.port, namespace: target.database ?? target.username ?? "postgres" }
  })

  const health = yield* Health.make({
    connect: router.routed
      ? router.discover
      : PgConnection.make({
          ...sessionConfigFor(first),
          applicationName: `${options.applicationName ?? "@effect/sql-pg"} health`,
          connectTimeout: profile.healthCheckTimeout
        }),
    verify: router.verify,
    breaker,
    key,
    profile,
    onStartup: options.healthOnStartup ?? "degraded"
  })
  onServerChanged = () => Effect.runSync(health.checkSoon)

  const pool_ = (): DatabaseMetrics.PoolStats => ({
    max: maxConnections,
    open: countSockets ? sockets.open : undefined,
    inUse: stack.inUse(),
    idle: countSockets ? Math.max(0, sockets.open - stack.inUse()) : undefined,
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
      database: key,
      stats: Effect.sync(
        (): Stats => ({
          statements: recorder.statements,
          attempts: recorder.attempts,
          retries: recorder.retries,
          timeouts: recorder.timeouts,
          failed: recorder.failed,
          outcomeUnknown: recorder.outcomeUnknown,
          rejections: recorder.rejections,
          connectionsOpened: countSockets ? sockets.opened : undefined
        })
      ),
      breakerState: breaker.state(key),
      transitions: breaker.transitions,
      pool: Effect.sync(pool_),
      statementStats: Effect.sync(() => statements.snapshot()),
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

/**
 * The environment variables `config` reads, as data: the names it reads are
 * these (a test checks it), and the README's configuration table is made
 * from them. The profile's own are included.
 *
 * @since 0.1.0
 * @category config
 */
export const variables: ReadonlyArray<{
  readonly name: string
  readonly default: string | undefined
  readonly description: string
}> = EnvConfig.variables

/**
 * The options `layerConfig` reads from the environment (see `variables`).
 * Every invalid value fails with a `ConfigError` naming its variable, without
 * echoing the value.
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = EnvConfig.settings(EnvConfig.databaseUrl)

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
    Effect.map(options?.url === undefined ? config : EnvConfig.settings(Config.succeed(options.url)), (fromEnv) =>
      layer(
        EnvConfig.dropUndefined({
          ...fromEnv,
          // An open duration given alone in code pins it, as it does for `layer`: the profile's ceiling must not follow.
          ...(options?.breakerOpenDuration !== undefined && { breakerOpenDurationMax: undefined }),
          ...EnvConfig.dropUndefined(options ?? {})
        })
      )
    )
  )

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
