/**
 * What a failed attempt means: for the retry (`decide`), for the circuit
 * breaker (`breakerOutcome`), for the statement table (`reasonOf`). Pure: the
 * same failure and attempt give the same answer.
 *
 * @internal
 */
import { Breaker, Transient } from "@sturdy/resilience"
import { type Duration, Predicate } from "effect"
import { isSqlError } from "effect/sql/SqlError"
import * as PgFailure from "../PgFailure.ts"
import { isReadOnly } from "./readOnly.ts"

/** What `decide` reads of an attempt (a `Call` is one). */
export interface Attempt {
  /** A connection was lent: the statement may have reached the server. */
  readonly sent: boolean
  /** The watchdog's deadline passed while the attempt ran. */
  readonly timedOut: boolean
  /** The statement's text, once a connection was asked to run it. */
  readonly sql: string | undefined
}

/** The caller's marking: `"auto"` decides per statement by the read-only rule. */
export type Idempotency = "auto" | "idempotent" | "not-idempotent"

/** The client's settings that `decide` depends on. */
export interface Policy {
  readonly sentPhaseRetry: "safe" | "always"
  readonly attemptTimeout: Duration.Duration
}

export const isTransientError = (u: unknown): u is PgFailure.TransientError => Predicate.isTagged(u, "TransientError")
export const isRejection: (u: unknown) => u is Breaker.Rejection = Breaker.isRejection

/** The timeout an attempt ran out of, in the phase it had reached. */
export const attemptTimeout = (attempt: Pick<Attempt, "sent">, timeout: Duration.Duration): Transient.AttemptTimeout =>
  new Transient.AttemptTimeout({ phase: attempt.sent ? "sent" : "connect", timeout })

/** What a failed attempt means for the retry: a transient failure, an unknown outcome, or the original error. */
export const decide = (error: unknown, attempt: Attempt, idempotency: Idempotency, policy: Policy): unknown => {
  // The connection gate refused to open a socket: the circuit opened while this attempt was on its way.
  if (isSqlError(error) && isRejection(error.reason.cause)) return error.reason.cause
  // A refused configuration: not transient, and not an outage (the breaker sees an answer).
  const refused = isSqlError(error) ? PgFailure.refusal(error) : undefined
  if (refused !== undefined) return refused
  let reason: PgFailure.TransientReason | undefined = Predicate.isTagged(error, "AttemptTimeout")
    ? (error as Transient.AttemptTimeout)
    : isSqlError(error)
      ? PgFailure.classify(error)
      : undefined
  // The watchdog ended this session: the closed connection is the attempt's deadline.
  if (attempt.timedOut && reason !== undefined && isSqlError(error) && PgFailure.sessionLost(error)) {
    reason = attemptTimeout(attempt, policy.attemptTimeout)
  }
  if (reason === undefined) return error
  if (
    PgFailure.outcome(reason) === "not-applied" ||
    policy.sentPhaseRetry === "always" ||
    idempotency === "idempotent" ||
    (idempotency === "auto" && attempt.sql !== undefined && isReadOnly(attempt.sql))
  ) {
    return new PgFailure.TransientError({ reason })
  }
  return new PgFailure.OutcomeUnknown({ reason })
}

/**
 * What an attempt's failure (as `decide` left it) tells the breaker: failing
 * to get a session and timeouts count; an answer, even an error, is a
 * success; a session lost mid-statement and a read-only refusal are ignored,
 * and so is a rejection by the breaker itself.
 */
export const breakerOutcome = (failure: unknown): Breaker.Outcome => {
  if (isRejection(failure)) return "Ignored"
  if (!isTransientError(failure) && !Predicate.isTagged(failure, "OutcomeUnknown")) return "Success"
  return PgFailure.countsAgainstBreaker((failure as PgFailure.TransientError | PgFailure.OutcomeUnknown).reason)
    ? "Failure"
    : "Ignored"
}

/** Whether a failure is worth another attempt. */
export const shouldRetry = (failure: unknown, whenCircuitOpen: "fail-fast" | "wait-and-retry"): boolean =>
  isTransientError(failure) || (whenCircuitOpen === "wait-and-retry" && isRejection(failure))

/** The name a failure is reported under in the statement table: its reason when it has one. */
export const reasonOf = (error: unknown): string => {
  const tagged = error as { readonly _tag?: string; readonly reason?: { readonly _tag?: string } }
  return tagged?.reason?._tag ?? tagged?._tag ?? "Unknown"
}
