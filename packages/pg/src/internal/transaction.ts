/**
 * Whole-transaction retry (`ResilientPg.withTransaction`) and the COMMIT that
 * resolves a lost answer with `pg_xact_status`.
 *
 * @internal
 */
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { Retry } from "@sturdy/resilience"
import { Clock, Context, Data, Duration, Effect, Predicate, Schedule } from "effect"
import * as SqlClient from "effect/sql/SqlClient"
import type { Connection } from "effect/sql/SqlConnection"
import type { SqlError } from "effect/sql/SqlError"
import * as PgFailure from "../PgFailure.ts"
import { ResilientPg, type TransactionCounters, type TransactionOptions } from "../ResilientPg.ts"
import { Idempotency } from "./idempotency.ts"
import { positiveDuration } from "./options.ts"
import { commit as plainCommit } from "./pgClient.ts"

/** A failure after which the whole transaction may run again; never leaves `withTransaction`. */
class RetryTransaction extends Data.TaggedError("RetryTransaction")<{
  readonly error: unknown
  /** A serialization failure or a deadlock, rather than a lost session. */
  readonly conflict: boolean
  /** The transient reason, for the retry's log line. */
  readonly reason: string
}> {}

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

/** The policy failure an error carries at any depth (drizzle wraps the `SqlError`), else the error itself. */
export const unwrap = (error: unknown): unknown => {
  const sqlError = PgFailure.findSqlError(error)
  return (sqlError !== undefined && PgFailure.fromSqlError(sqlError)) || error
}

const isolations = ["read committed", "repeatable read", "serializable"]

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
    if (isolation !== undefined && !isolations.includes(isolation)) {
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
          ? new RetryTransaction({ error: policy, conflict: false, reason: "CommitOutcomeUnknown" })
          : policy
      }
      const reason = PgFailure.classify(error, "transaction")
      if (reason === undefined) return failure
      // In a READ ONLY transaction, 25006 is the caller's write, not a failover: running it again cannot help.
      if (access === "read only" && reason._tag === "ReadOnlyTransaction") return failure
      const conflict = reason._tag === "SerializationError" || reason._tag === "DeadlockError"
      // Before COMMIT was sent nothing can have committed; after it, the server either refused the COMMIT
      // (an answer: not applied) or was asked and said aborted.
      const safe = attempt.state !== "sent" || PgFailure.outcome(reason) === "not-applied"
      return safe ? new RetryTransaction({ error: failure, conflict, reason: reason._tag }) : failure
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

    const isRetry = (failure: unknown): failure is RetryTransaction => Predicate.isTagged(failure, "RetryTransaction")
    const policy = Retry.schedule(
      {
        retriesAfterFirst,
        backoffBase: options.backoffBase ?? "50 millis",
        backoffJitter: options.backoffJitter ?? "50 millis"
      },
      isRetry
    ).pipe(
      Schedule.tap((meta) => {
        const retry = meta.input as RetryTransaction
        return Effect.sync(() => {
          counters.retries++
          if (retry.conflict) counters.conflictRetries++
        }).pipe(
          Effect.andThen(Effect.logWarning("Retrying a transaction")),
          Effect.annotateLogs({
            "sturdy.event": "transaction-retry",
            "sturdy.reason": retry.reason,
            "sturdy.attempt": meta.attempt + 1,
            "sturdy.delayMillis": Math.round(Duration.toMillis(meta.duration))
          })
        )
      })
    )

    return yield* Retry.retryOnFailure(once, policy).pipe(
      Effect.catch((failure) => Effect.fail(isRetry(failure) ? unwrap(failure.error) : failure)),
      Effect.timeoutOrElse({
        duration: deadline,
        orElse: () => Effect.fail(new PgFailure.TransactionTimeout({ timeout: deadline }))
      })
    ) as Effect.Effect<A, E | SqlError | PgFailure.PolicyFailure | PgFailure.TransactionTimeout, R>
  })

/**
 * The client's COMMIT: PgClient's own, plus, inside `withTransaction`, the
 * transaction id read before it and the lost answer resolved by asking a
 * fresh session (`transactionStatus`, outside the pool and the breaker).
 */
export const makeCommit = (
  counters: TransactionCounters,
  transactionStatus: (
    transactionId: string,
    connectTimeout: Duration.Duration
  ) => Effect.Effect<string | null, SqlError>
): ((conn: Connection) => Effect.Effect<void, SqlError>) => {
  /**
   * The COMMIT was sent and its answer lost: poll `pg_xact_status` until the
   * server says committed (success) or aborted (safe to run again), or the
   * time runs out (CommitOutcomeUnknown).
   */
  const resolveCommit = (attempt: CommitAttempt, transactionId: string, lost: SqlError) =>
    Effect.gen(function* () {
      counters.commitsInDoubt++
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
          counters.commitsFoundCommitted++
          yield* Effect.logInfo("The in-doubt COMMIT had committed").pipe(
            Effect.annotateLogs({ "sturdy.event": "commit-resolved", "sturdy.outcome": "committed" })
          )
          return
        }
        if (status._tag === "Success" && status.success === "aborted") {
          counters.commitsFoundAborted++
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
      counters.commitsUnresolved++
      const unknown = new PgFailure.CommitOutcomeUnknown({ transactionId, detail })
      return yield* Effect.fail(PgFailure.toSqlError(unknown, "commit"))
    })

  return (conn) =>
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
}
