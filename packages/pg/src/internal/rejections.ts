/**
 * The errors a call rejected by the open breaker fails with, built once and
 * reused: a rejection is the breaker doing its job, possibly thousands of
 * times a second, and building three error objects with stacks for each one
 * would cost more than the call it refuses.
 *
 * @internal
 */
import { Breaker, type DatabaseMetrics } from "@sturdy/resilience"
import { Effect } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import * as PgFailure from "../PgFailure.ts"

/** An admission the breaker refused. */
export type Rejected = Extract<Breaker.Admission, { _tag: "Rejected" }>

/** The rejection for one `retryAfter`: the error, the `SqlError` a statement fails with, and that failure itself. */
export interface Rejection {
  readonly retryAfterMillis: number
  readonly probing: boolean
  readonly error: Breaker.Rejection
  readonly statementFailure: Effect.Effect<never, SqlError>
}

/** One client's rejections: the last one built, and the `SqlError` each one surfaced as. */
export class Rejections {
  private readonly key: string
  private readonly recorder: DatabaseMetrics.Recorder
  /** Reused while the breaker answers with the same `retryAfter` and probing. */
  private last: Rejection | undefined = undefined
  private readonly surfaced = new WeakMap<Breaker.Rejection, SqlError>()
  constructor(key: string, recorder: DatabaseMetrics.Recorder) {
    this.key = key
    this.recorder = recorder
  }
  /** The rejection for `admission`, counted in the recorder. */
  of(admission: Rejected): Rejection {
    this.recorder.rejections++
    const cached = this.last
    if (
      cached !== undefined &&
      cached.retryAfterMillis === admission.retryAfterMillis &&
      cached.probing === admission.probing
    ) {
      return cached
    }
    const error = stackless(() => Breaker.rejection(this.key, admission))
    const wrapped = stackless(() => PgFailure.toSqlError(error, "execute"))
    this.last = {
      retryAfterMillis: admission.retryAfterMillis,
      probing: admission.probing,
      error,
      statementFailure: Effect.fail(wrapped)
    }
    return this.last
  }
  /** The `SqlError` a rejection surfaces as when it ends a call: built the first time, with that call's operation. */
  sqlError(failure: Breaker.Rejection, operation: string): SqlError {
    let wrapped = this.surfaced.get(failure)
    if (wrapped === undefined) {
      wrapped = stackless(() => PgFailure.toSqlError(failure, operation))
      this.surfaced.set(failure, wrapped)
    }
    return wrapped
  }
}

/** Builds an error without capturing a stack: for errors a caller meets by the thousand (rejections). */
export const stackless = <A>(make: () => A): A => {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return make()
  } finally {
    Error.stackTraceLimit = limit
  }
}
