/**
 * The retry, built once per client and used only after an attempt failed: the
 * backoff schedule with a warning per retry, the wait of a rejected call
 * (which ends early when the breaker closes), and the lines a call logs when
 * it ends after retries.
 *
 * @internal
 */
import { type Breaker, type Profile, Retry, type RetryBudget } from "@sturdy/resilience"
import { Duration, Effect, Schedule } from "effect"
import * as PgFailure from "../PgFailure.ts"
import { isRejection, shouldRetry } from "./classify.ts"

/** The client's retry: which failures get one, on what schedule, and the calls waiting for the circuit to close. */
export class RetryPolicy {
  /** A rejected first attempt has no retry to wait for: fail-fast, or no retries at all. */
  readonly rejectionEndsTheCall: boolean
  /** Whether a failure is worth another attempt. */
  readonly retryable: (failure: unknown) => boolean
  /** Fails with `RetryBudgetExhausted` when the budget refuses a retry. */
  readonly schedule: Schedule.Schedule<Duration.Duration, unknown, PgFailure.RetryBudgetExhausted>
  /** Calls waiting after a rejection, woken when the breaker closes. */
  private readonly closedWaiters = new Set<() => void>()
  private readonly untilClosed: Effect.Effect<void>
  constructor(
    profile: Profile.Profile,
    whenCircuitOpen: "fail-fast" | "wait-and-retry",
    /** Asked for a token before each retry of a transient failure; `undefined`: retries are not budgeted. */
    budget?: RetryBudget.RetryBudget
  ) {
    this.rejectionEndsTheCall = whenCircuitOpen === "fail-fast" || profile.retriesAfterFirst === 0
    this.retryable = (failure) => shouldRetry(failure, whenCircuitOpen)
    const closedWaiters = this.closedWaiters
    this.untilClosed = Effect.callback<void>((resume) => {
      const wake = () => resume(Effect.void)
      closedWaiters.add(wake)
      return Effect.sync(() => {
        closedWaiters.delete(wake)
      })
    })
    this.schedule = Retry.schedule(profile, this.retryable).pipe(
      // Asked only once the schedule has a retry left for a retryable failure. A retry after a rejection is free:
      // the rejected attempt cost the server nothing, and the breaker admits the next one.
      Schedule.while((meta) =>
        budget === undefined || isRejection(meta.input) || budget.tryAcquire(meta.now)
          ? true
          : Effect.fail(new PgFailure.RetryBudgetExhausted({ reason: (meta.input as PgFailure.TransientError).reason }))
      ),
      Schedule.tap((meta) =>
        Effect.logWarning("Retrying a failed database call").pipe(
          Effect.annotateLogs({
            "sturdy.event": "retry",
            "sturdy.reason": isRejection(meta.input)
              ? meta.input._tag
              : (meta.input as PgFailure.TransientError).reason._tag,
            "sturdy.phase": isRejection(meta.input)
              ? "connect"
              : PgFailure.phaseOf((meta.input as PgFailure.TransientError).reason),
            "sturdy.attempt": meta.attempt + 1,
            "sturdy.attempts": profile.retriesAfterFirst + 1,
            "sturdy.delayMillis": Math.round(Duration.toMillis(meta.duration))
          })
        )
      ),
      // A rejected attempt waits its own backoff, not the breaker's `retryAfter`, so a call's time stays bounded by
      // its schedule however long the open duration has grown; and it stops waiting when the breaker closes (the
      // health monitor closes it as soon as the server answers), to retry at once.
      Schedule.modifyDelay((meta) =>
        isRejection(meta.input)
          ? Effect.as(Effect.raceFirst(Effect.sleep(meta.duration), this.untilClosed), Duration.zero)
          : Effect.succeed(meta.duration)
      )
    )
  }
  /** Calls waiting after a rejection for the breaker to close. */
  get waitingForClose(): number {
    return this.closedWaiters.size
  }
  /** The breaker closed: every call waiting after a rejection retries now, oldest first (see `wakeInTurns`). */
  closed(): void {
    const waiters = [...this.closedWaiters]
    this.closedWaiters.clear()
    wakeInTurns(waiters)
  }
}

/**
 * How many waiting calls one turn of the event loop wakes when the breaker
 * closes. A 5 s outage with callers arriving at 2,000/s leaves about 8,000
 * waiting; each woken call runs inline until it parks, and waking them all
 * at once held the event loop for 266 ms, during which no connection could
 * be opened and no statement answered (the first success came 0.44-0.56 s
 * after the server was back, against 0.05 s for plain `@effect/sql-pg`).
 */
export const wakeBatch = 32

/** Calls `wakes` in order, `wakeBatch` now and as many in each later turn of the event loop (`setImmediate`). */
export const wakeInTurns = (wakes: ReadonlyArray<() => void>, from = 0): void => {
  const to = Math.min(wakes.length, from + wakeBatch)
  for (let i = from; i < to; i++) wakes[i]!()
  if (to < wakes.length) setImmediate(() => wakeInTurns(wakes, to))
}

/**
 * The line a call logs when it succeeded after retries; the statement's span
 * (when tracing) gets the attempts it took, and the line as an event.
 */
export const logRecovered = (operation: string, attempts: number) =>
  Effect.andThen(
    Effect.annotateCurrentSpan("sturdy.attempts", attempts),
    Effect.logInfo("A database call recovered").pipe(
      Effect.annotateLogs({
        "sturdy.event": "recovered",
        "sturdy.operation": operation,
        "sturdy.attempts": attempts
      })
    )
  )

/** The line a call logs when it failed with a policy failure (a rejection logs none: the breaker is doing its job). */
export const logFailed = (
  operation: string,
  failure: Exclude<PgFailure.PolicyFailure, Breaker.Rejection>,
  attempts: number
) =>
  Effect.annotateLogs(
    Effect.andThen(Effect.annotateCurrentSpan("sturdy.attempts", attempts), Effect.logError("A database call failed")),
    {
      "sturdy.event": "failed",
      "sturdy.operation": operation,
      "sturdy.error": failure._tag,
      "sturdy.reason":
        failure._tag === "CommitOutcomeUnknown"
          ? "CommitOutcomeUnknown"
          : failure._tag === "ConfigurationRefused"
            ? failure.refusal
            : failure.reason._tag,
      "sturdy.attempts": attempts
    }
  )
