/**
 * The policy stack around every statement: retry -> breaker -> attempt
 * deadline -> acquire + execute, composed here from the parts in this folder,
 * so that a call that succeeds at once pays for as little as possible (the
 * budget is about 1 µs added per call).
 *
 * What the success path costs, and what it avoids:
 * - no fiber and no timer per call: the attempt deadline is enforced by one
 *   watchdog per client (`watchdog.ts`), plus the server-side
 *   statement_timeout and the driver's connect timeout; a statement that
 *   finds every slot taken parks (`slots.ts`) and the same watchdog wakes it
 *   (only acquiring a connection that outlives one statement pays for
 *   Effect.timeout);
 * - no schedule until an attempt fails (the retry is built lazily);
 * - the in-process breaker is read and written synchronously;
 * - counters are plain fields (DatabaseMetrics.Recorder);
 * - a rejection by the open breaker reuses the error built for the same
 *   `retryAfter` (`rejections.ts`), instead of building three error objects
 *   with stacks.
 *
 * @internal
 */
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import type { Breaker, DatabaseMetrics, Profile, RetryBudget } from "@sturdy/resilience"
import { Cause, Clock, Context, Duration, Effect, Exit, type Fiber, type Scope, Stream } from "effect"
import type { Borrower, Connection } from "effect/sql/SqlConnection"
import { isSqlError, type SqlError } from "effect/sql/SqlError"
import * as PgFailure from "../PgFailure.ts"
import type * as StatementStats from "../StatementStats.ts"
import { Call } from "./call.ts"
import {
  attemptTimeout,
  breakerOutcome,
  decide,
  type Idempotency,
  isRejection,
  type Policy,
  reasonOf
} from "./classify.ts"
import { WatchedConnection } from "./connection.ts"
import { Rejections } from "./rejections.ts"
import { logFailed, logRecovered, RetryPolicy } from "./retry.ts"
import { destroySocket, isStaleConnection, type Sessions, type StaleConnection, staleConnection } from "./sessions.ts"
import { Slots } from "./slots.ts"
import { sqlOf } from "./statementText.ts"
import { Watchdog } from "./watchdog.ts"

export { Call, InFlight } from "./call.ts"
export { internalsOf, Sessions } from "./sessions.ts"
export { WatchedConnection } from "./connection.ts"

// Read once: Node defines the `performance` global with a getter, which every call would run again.
const monotonic = globalThis.performance

/** What the stack needs of a pool: `PgPool`, or a fake one in benchmarks. */
export interface PoolLike {
  readonly use: <A, E, R>(
    f: (connection: PgConnection.PgConnection) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | SqlError, R>
}

export interface Options {
  readonly pool: PoolLike
  readonly maxConnections: number
  /** Statements that may share one connection: 1, or the multiplexing concurrency. */
  readonly statementsPerConnection: number
  readonly profile: Profile.Profile
  readonly sentPhaseRetry: "safe" | "always"
  readonly whenCircuitOpen: "fail-fast" | "wait-and-retry"
  /** Every call that succeeds deposits, every retry of a transient failure withdraws; `undefined`: not budgeted. */
  readonly retryBudget: RetryBudget.RetryBudget | undefined
  readonly breaker: Breaker.Service
  readonly key: string
  readonly recorder: DatabaseMetrics.Recorder
  readonly statements: StatementStats.Table
  /** What the client's sessions share (prepared statements, retirement, what follows `BEGIN`). */
  readonly sessions: Sessions
  /** Reads the caller's idempotency marking (a `Context.Reference`) from its fiber. */
  readonly idempotency: (fiber: Fiber.Fiber<unknown, unknown>) => Idempotency
}

export interface Stack {
  readonly borrower: Borrower
  /** Acquiring a connection that outlives one statement (transactions, streams, listeners). */
  readonly acquire: <A>(
    acquire: Effect.Effect<A, SqlError, Scope.Scope>,
    operation: string
  ) => Effect.Effect<A, SqlError, Scope.Scope>
  /** The rejection a new connection gets while the circuit is open; `undefined` when it may connect. */
  readonly connectionGate: () => Breaker.Rejection | undefined
  readonly inUse: () => number
  readonly waiting: () => number
}

export const make = Effect.fnUntraced(function* (options: Options): Effect.fn.Return<Stack, never, Scope.Scope> {
  const { breaker, key, profile, recorder, pool, retryBudget } = options
  const local = breaker.local
  const clock = yield* Clock.Clock
  // With effect's own clock, deadlines are kept on the monotonic clock that times the calls, so a first attempt's
  // deadline comes from its call's start without a clock read of its own (a clock read costs 70-90 ns here); a
  // test's clock keeps them.
  const live = clock === Context.get(Context.empty(), Clock.Clock)
  const deadlines = live ? { currentTimeMillisUnsafe: () => monotonic.now() } : clock
  const context = yield* Effect.context<never>()
  const runFork = Effect.runForkWith(context)

  // --- Classification ---------------------------------------------------------------------------------------------

  const classifying: Policy = { sentPhaseRetry: options.sentPhaseRetry, attemptTimeout: profile.attemptTimeout }
  const timeoutOf = (call: Call) => attemptTimeout(call, profile.attemptTimeout)
  const slots = new Slots(options.maxConnections * options.statementsPerConnection, timeoutOf)
  /** What the breaker is told of a failure; the recorder keeps the run of consecutive failures it makes. */
  const toBreaker = (failure: unknown): Breaker.Outcome => {
    const outcome = breakerOutcome(failure)
    if (outcome === "Success") recorder.consecutiveFailures = 0
    else if (outcome === "Failure") recorder.consecutiveFailures++
    return outcome
  }

  // --- The watchdog: one fiber per client enforces every attempt's deadline --------------------------------------

  const watchdog = new Watchdog({
    clock: deadlines,
    timeoutMillis: Duration.toMillis(profile.attemptTimeout),
    cancelsStatement: options.statementsPerConnection === 1,
    recorder,
    interrupt: (connection) => {
      runFork(connection.interrupt)
    },
    destroy: destroySocket,
    timeoutOf
  })
  yield* Effect.forkScoped(watchdog.loop)

  // --- One attempt ------------------------------------------------------------------------------------------------

  const rejections = new Rejections(key, recorder)

  const startAttempt = (call: Call) => {
    recorder.attempts++
    if (++call.attempts > 1) recorder.retries++
    call.sent = false
    call.timedOut = false
    call.cancelSent = false
    call.connection = undefined
    call.routed = false
  }

  /** Multiplexed: statements share sessions, and a failed call's session is noted here (`WatchedConnection.shared`). */
  const shared = options.statementsPerConnection > 1
  /**
   * What a failed attempt's lent session must be told before the failure is
   * classified (a shared session only: an exclusive one was told by its
   * connection); `undefined` when there is nothing to run.
   */
  const noteShared = (call: Call, cause: Cause.Cause<unknown>): Effect.Effect<void> | undefined => {
    const lent = call.connection
    if (!shared || lent === undefined || !call.routed) return undefined
    call.list?.remove(call)
    const found = Cause.findErrorOption(cause)
    if (found._tag === "None" || !isSqlError(found.value)) return undefined
    const noted = options.sessions.failed(found.value, lent)
    return noted === Effect.void ? undefined : noted
  }

  /** `returned`: the attempt's session (if it had one) is back in the pool (see `Slots.release`). */
  const settle = (call: Call, returned: boolean) => {
    watchdog.forget(call)
    if (call.sent) slots.inUse--
    else slots.waiting--
    call.connection = undefined
    call.resume = undefined
    slots.release(call, returned)
  }

  /**
   * Acquire + execute, bounded by the attempt deadline that the watchdog
   * enforces; `now`: the attempt's start on the watchdog's clock, if known.
   */
  const run = <A, E, R>(call: Call, f: (connection: Connection) => Effect.Effect<A, E, R>, now?: number) => {
    slots.waiting++
    watchdog.watch(call, now)
    const sessions = options.sessions
    const lend = (connection: PgConnection.PgConnection) => {
      slots.waiting--
      slots.inUse++
      call.sent = true
      call.connection = connection
      const effect = f(new WatchedConnection(connection, call, sessions, shared))
      // `@effect/sql` builds the statement on the lent connection at once, and the connection settles the call
      // when it succeeds; anything else is settled when its effect succeeds.
      return call.routed || call.succeeded === undefined
        ? effect
        : Effect.map(effect, (value) => {
            call.settleSucceeded()
            return value
          })
    }
    // After the server behind the connections changed, a connection from before is retired and another lent.
    const use: Effect.Effect<A, E | SqlError, R> =
      sessions.epoch === 0
        ? pool.use(lend)
        : (Effect.catchIf(
            pool.use(
              (connection): Effect.Effect<A, E | StaleConnection, R> =>
                sessions.stale(connection)
                  ? Effect.andThen(sessions.retire(connection), Effect.fail(staleConnection))
                  : lend(connection)
            ),
            isStaleConnection,
            () => Effect.suspend(() => use)
          ) as Effect.Effect<A, E | SqlError, R>)
    const wait = slots.take(call)
    if (wait === undefined) return use
    return Effect.andThen(
      wait,
      Effect.suspend((): Effect.Effect<A, E | SqlError | Breaker.Rejection, R> => afterWaiting(call) ?? use)
    )
  }

  /**
   * A call that waited for a slot asks the breaker again before it connects:
   * the circuit may have opened while it waited, and 40 parked calls must not
   * each try a dead server the moment a slot frees.
   */
  const afterWaiting = (call: Call): Effect.Effect<never, Breaker.Rejection> | undefined => {
    const rejected = local?.recheck(key, call.generation)
    return rejected === undefined ? undefined : Effect.fail(rejections.of(rejected).error)
  }

  /** One attempt through the in-process breaker, its outcome recorded synchronously. */
  const attemptLocal = <A, E, R>(
    call: Call,
    f: (connection: Connection) => Effect.Effect<A, E, R>,
    localBreaker: Breaker.Local
  ): Effect.Effect<A, unknown, R> => {
    const admission = localBreaker.admit(key)
    if (admission._tag === "Rejected") return Effect.fail(rejections.of(admission).error)
    return attemptAdmitted(call, f, localBreaker, admission.generation)
  }

  const attemptAdmitted = <A, E, R>(
    call: Call,
    f: (connection: Connection) => Effect.Effect<A, E, R>,
    localBreaker: Breaker.Local,
    generation: number
  ): Effect.Effect<A, unknown, R> => {
    startAttempt(call)
    call.generation = generation
    return Effect.matchCauseEffect(run(call, f), {
      onSuccess: (value) => {
        attemptSucceeded(call, localBreaker, generation)
        return Effect.succeed(value)
      },
      onFailure: (cause) => attemptFailed(call, localBreaker, generation, cause)
    })
  }

  const attemptSucceeded = (call: Call, localBreaker: Breaker.Local, generation: number) => {
    settle(call, true)
    recorder.consecutiveFailures = 0
    localBreaker.record(key, generation, "Success")
  }

  /** A failed attempt through the in-process breaker: classified, recorded, and failed with what the retry reads. */
  const attemptFailed = (
    call: Call,
    localBreaker: Breaker.Local,
    generation: number,
    cause: Cause.Cause<unknown>
  ): Effect.Effect<never, unknown> => {
    const noted = noteShared(call, cause)
    settle(call, true)
    const found = Cause.findErrorOption(cause)
    if (found._tag === "None") {
      // Interrupted, or a defect: no typed failure to classify.
      localBreaker.record(key, generation, "Ignored")
      return Effect.failCause(cause)
    }
    const classified = Effect.withFiber((fiber) => {
      const failure = decide(found.value, call, options.idempotency(fiber), classifying)
      localBreaker.record(key, generation, toBreaker(failure))
      return Effect.fail(failure)
    })
    return noted === undefined ? classified : Effect.andThen(noted, classified)
  }

  /** One attempt through a breaker whose state lives in a store (effect's CircuitBreaker). */
  const attemptStore = <A, E, R>(
    call: Call,
    f: (connection: Connection) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, unknown, R> =>
    Effect.catch(
      breaker.execute(
        key,
        Effect.suspend(() => {
          startAttempt(call)
          return Effect.matchCauseEffect(run(call, f), {
            onSuccess: (value) => {
              settle(call, true)
              return Effect.succeed(value)
            },
            onFailure: (cause) => {
              const noted = noteShared(call, cause)
              settle(call, true)
              const found = Cause.findErrorOption(cause)
              if (found._tag === "None") return Effect.failCause(cause)
              const classified = Effect.withFiber((fiber) =>
                Effect.fail(decide(found.value, call, options.idempotency(fiber), classifying))
              )
              return noted === undefined ? classified : Effect.andThen(noted, classified)
            }
          })
        }),
        (exit) =>
          Exit.isSuccess(exit)
            ? "Success"
            : toBreaker(Cause.findErrorOption(exit.cause).pipe((o) => (o._tag === "Some" ? o.value : undefined)))
      ),
      (error) => Effect.fail(isRejection(error) ? (recorder.rejections++, error) : error)
    )

  const attempt = <A, E, R>(call: Call, f: (connection: Connection) => Effect.Effect<A, E, R>) =>
    local !== undefined ? attemptLocal(call, f, local) : attemptStore(call, f)

  // --- The retry, built only after a failure --------------------------------------------------------------------

  const retrying = new RetryPolicy(profile, options.whenCircuitOpen, retryBudget)
  // Calls waiting after a rejection retry as soon as the breaker closes.
  yield* Effect.forkScoped(
    Stream.runForEach(breaker.transitions, (transition) =>
      transition.to === "Closed" ? Effect.sync(() => retrying.closed()) : Effect.void
    ),
    { startImmediately: true }
  )
  const { rejectionEndsTheCall, retryable } = retrying

  const surface = (operation: string, call: Call, failure: PgFailure.PolicyFailure) => {
    if (failure._tag === "OutcomeUnknown") recorder.outcomeUnknown++
    if (failure._tag === "CircuitOpen" || failure._tag === "CircuitHalfOpen") {
      // A rejection is the breaker doing its job, possibly thousands of times a second: no error line, no new error.
      return Effect.fail(rejections.sqlError(failure, operation))
    }
    return Effect.andThen(
      logFailed(operation, failure, call.attempts),
      Effect.fail(PgFailure.toSqlError(failure, operation))
    )
  }

  const fail = <E>(
    operation: string,
    call: Call,
    counted: boolean,
    error: unknown
  ): Effect.Effect<never, E | SqlError> => {
    if (counted) {
      recorder.failed++
      const millis = monotonic.now() - call.started
      recorder.latency.record(millis)
      options.statements.record(call.sql ?? sqlOf(call.builder), millis, reasonOf(error))
    }
    return PgFailure.isPolicyFailure(error) ? surface(operation, call, error) : Effect.fail(error as E)
  }

  const succeed = <A>(operation: string, call: Call, counted: boolean, value: A): Effect.Effect<A> => {
    retryBudget?.deposit()
    if (counted) {
      const millis = monotonic.now() - call.started
      recorder.latency.record(millis)
      options.statements.record(call.sql, millis, undefined)
    }
    return call.attempts > 1 ? Effect.as(logRecovered(operation, call.attempts), value) : Effect.succeed(value)
  }

  /** After the first attempt failed: the retry, if the failure is worth one. */
  const retry = <A, E, R>(
    operation: string,
    call: Call,
    counted: boolean,
    next: Effect.Effect<A, unknown, R>,
    first: unknown
  ): Effect.Effect<A, E | SqlError, R> => {
    if (!retryable(first)) return fail<E>(operation, call, counted, first)
    let replayed = false
    const replay = Effect.suspend(() => {
      if (replayed) return next
      replayed = true
      return Effect.fail(first)
    })
    return Effect.matchEffect(Effect.retry(replay, retrying.schedule), {
      onSuccess: (value) => succeed(operation, call, counted, value),
      onFailure: (error) => fail<E>(operation, call, counted, error)
    })
  }

  /**
   * The first attempt's success, which the connection that ran the statement
   * reports (`Call.succeeded`): the call settled, the breaker and the budget
   * told, the latency recorded, all synchronously, in the map that takes the
   * rows.
   */
  const firstSucceeded = (call: Call) => {
    settle(call, false)
    recorder.consecutiveFailures = 0
    local!.record(key, call.generation, "Success")
    retryBudget?.deposit()
    const millis = monotonic.now() - call.started
    recorder.latency.record(millis)
    options.statements.record(call.sql, millis, undefined)
  }

  /** The first attempt failed (or was interrupted): classified, and retried if it is worth it. */
  const firstFailed = <A, E, R>(
    call: Call,
    f: (connection: Connection) => Effect.Effect<A, E, R>,
    cause: Cause.Cause<unknown>
  ): Effect.Effect<A, E | SqlError, R> => {
    // Settled already: the statement succeeded, and what failed came after it (an interruption on the way out).
    if (call.succeeded === undefined) return Effect.failCause(cause) as Effect.Effect<never, E>
    call.succeeded = undefined
    return Effect.catch(attemptFailed(call, local!, call.generation, cause), (failure) =>
      retryStatement(call, f, failure)
    )
  }

  /** A statement's retry after its first attempt failed with `failure`: each further attempt through `attempt`. */
  const retryStatement = <A, E, R>(
    call: Call,
    f: (connection: Connection) => Effect.Effect<A, E, R>,
    failure: unknown
  ): Effect.Effect<A, E | SqlError, R> =>
    retry<A, E, R>(
      "execute",
      call,
      true,
      Effect.suspend(() => attempt(call, f)),
      failure
    )

  /**
   * A statement outside a transaction. `@effect/sql` calls the borrower each
   * time the statement runs, and runs what it returns once, at once: the call
   * starts here, with no `Effect.suspend` of its own.
   */
  const borrower: Borrower = <A, E, R>(f: (connection: Connection) => Effect.Effect<A, E, R>) => {
    recorder.statements++
    let first: Effect.Effect<A, unknown, R>
    const admission = local?.admit(key)
    if (admission?._tag === "Rejected" && rejectionEndsTheCall) {
      // The breaker's whole point is to answer at once: no retry to build, no error to make, no clock to read
      // (a rejection takes well under the histogram's smallest bucket).
      recorder.failed++
      recorder.latency.record(0)
      const rejection = rejections.of(admission)
      if (options.statements.maxEntries > 0) options.statements.record(sqlOf(f), undefined, rejection.error._tag)
      return rejection.statementFailure
    }
    const call = new Call(monotonic.now())
    call.builder = f
    if (local !== undefined && admission !== undefined) {
      if (admission._tag === "Admitted") {
        // The common case: the first attempt's success settles the call in the connection (`firstSucceeded`), so
        // the stack adds one failure handler, which a success skips.
        // A new call's first attempt: what `startAttempt` resets is at its initial value already.
        recorder.attempts++
        call.attempts = 1
        call.generation = admission.generation
        call.succeeded = firstSucceeded
        return Effect.catchCause(run(call, f, live ? call.started : undefined), (cause) => firstFailed(call, f, cause))
      }
      first = Effect.fail(rejections.of(admission).error)
    } else {
      first = attemptStore(call, f)
    }
    return Effect.matchEffect(first, {
      onSuccess: (value) => succeed("execute", call, true, value),
      onFailure: (failure) => retryStatement(call, f, failure)
    })
  }

  const acquire = <A>(
    get: Effect.Effect<A, SqlError, Scope.Scope>,
    operation: string
  ): Effect.Effect<A, SqlError, Scope.Scope> =>
    Effect.suspend(() => {
      const call = new Call(monotonic.now())
      const next = Effect.suspend(() => acquireAttempt(call, get))
      return Effect.matchEffect(next, {
        onSuccess: (value) => succeed(operation, call, false, value),
        onFailure: (first) => retry<A, SqlError, Scope.Scope>(operation, call, false, next, first)
      })
    })

  /** Acquiring is not hot: admission through the breaker's effect API, Effect.timeout around the wait. */
  const acquireAttempt = <A>(call: Call, get: Effect.Effect<A, SqlError, Scope.Scope>) =>
    Effect.catch(
      breaker.execute(
        key,
        Effect.suspend(() => {
          startAttempt(call)
          slots.waiting++
          // The slot and the connection stay with the caller's scope; a failed or interrupted attempt gives the
          // slot back at once, so retries in the same scope do not pile slots up. The wait itself stays
          // interruptible, so the timeout below can end it.
          const wait = slots.take(call)
          const afterWait = Effect.suspend((): Effect.Effect<A, SqlError | Breaker.Rejection, Scope.Scope> => {
            // As for statements (`afterWaiting`): the circuit may have opened while this waited for a slot.
            const rejected = local?.recheck(key, -1)
            return rejected === undefined ? get : Effect.fail(rejections.of(rejected).error)
          })
          const slotAndConnection = Effect.onExit(
            wait === undefined ? get : Effect.andThen(wait, afterWait),
            (exit) => {
              slots.waiting--
              call.parked = false
              if (Exit.isFailure(exit)) return Effect.sync(() => slots.release(call, true))
              slots.inUse++
              return Effect.addFinalizer(() =>
                Effect.sync(() => {
                  slots.inUse--
                  slots.release(call)
                })
              )
            }
          )
          return Effect.timeoutOrElse(slotAndConnection, {
            duration: profile.attemptTimeout,
            orElse: () =>
              Effect.suspend(() => {
                recorder.timeouts++
                return Effect.fail(timeoutOf(call))
              })
          }).pipe(
            Effect.catch((error) =>
              Effect.withFiber((fiber) => Effect.fail(decide(error, call, options.idempotency(fiber), classifying)))
            )
          )
        }),
        (exit) =>
          Exit.isSuccess(exit)
            ? "Success"
            : toBreaker(Cause.findErrorOption(exit.cause).pipe((o) => (o._tag === "Some" ? o.value : undefined)))
      ),
      (error) => Effect.fail(isRejection(error) ? (recorder.rejections++, error) : error)
    )

  /**
   * Whether a new connection may be opened now: the rejection while the circuit
   * is open, so that no attempt admitted before it opened (a call the pool
   * itself retries, a call that waited for a slot) reaches a server the breaker
   * has given up on. Half-open lets the probe through.
   */
  const connectionGate = (): Breaker.Rejection | undefined => {
    const rejected = local?.recheck(key, -1)
    return rejected !== undefined && !rejected.probing && rejected.retryAfterMillis > 0
      ? rejections.of(rejected).error
      : undefined
  }

  return { borrower, acquire, connectionGate, inUse: () => slots.inUse, waiting: () => slots.waiting }
})
