/**
 * The client's lifecycle log lines (`sturdy.event` annotations).
 *
 * @internal
 */
import type { Breaker, Profile } from "@sturdy/resilience"
import { Duration, Effect } from "effect"
import type * as Target from "../Target.ts"

/**
 * One log line per breaker transition, in a span of its own
 * (`sturdy.breaker.transition`, a root: a transition belongs to no request),
 * so a tracing backend shows when the circuit opened and closed.
 */
export const transition = (transition: Breaker.Transition, database: string) => {
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
  return Effect.annotateLogs(log, annotations).pipe(
    Effect.withSpan("sturdy.breaker.transition", {
      root: true,
      attributes: { "db.system.name": "postgresql", "sturdy.database": database, ...annotations }
    })
  )
}

/** The configuration the client starts with, once, at start-up. */
export const configuration = (options: {
  readonly key: string
  readonly profile: Profile.Profile
  readonly statementTimeout: string
  readonly sentPhaseRetry: string
}) => {
  const profile = options.profile
  return Effect.logInfo("Initializing the resilient PostgreSQL client").pipe(
    Effect.annotateLogs({
      "sturdy.event": "configuration",
      "sturdy.database": options.key,
      "sturdy.profile": profile.name,
      "sturdy.environment": process.env.NODE_ENV ?? "(NODE_ENV unset)",
      "sturdy.retriesAfterFirst": profile.retriesAfterFirst,
      "sturdy.backoff": `${Duration.format(profile.backoffBase)} x 2^n + [0, ${Duration.format(profile.backoffJitter)})`,
      "sturdy.attemptTimeout": Duration.format(profile.attemptTimeout),
      "sturdy.statementTimeout": options.statementTimeout,
      "sturdy.healthCheckInterval": Duration.format(profile.healthCheckInterval),
      "sturdy.breaker": `opens after ${profile.breakerFailures} failed attempts`,
      "sturdy.sentPhaseRetry": options.sentPhaseRetry
    })
  )
}

/** The pool is built (its connections open on demand). */
export const poolReady = (maxConnections: number, multiplex: boolean) =>
  Effect.logInfo("Connection pool ready").pipe(
    Effect.annotateLogs({
      "sturdy.event": "pool",
      "sturdy.maxConnections": maxConnections,
      "sturdy.multiplex": multiplex
    })
  )

/** Behind a pooler in transaction mode, named prepared statements were turned off. */
export const preparedStatementsOff = Effect.logWarning(
  "Prepared statements do not survive between statements here (a pooler in transaction mode): statements run unnamed from now on"
).pipe(Effect.annotateLogs({ "sturdy.event": "prepared-statements-off" }))

/** The host that satisfies the target changed. */
export const failover = (from: Target.Host, to: Target.Host) =>
  Effect.logWarning(`The target moved: new connections go to ${to.host}:${to.port}`).pipe(
    Effect.annotateLogs({
      "sturdy.event": "failover",
      "sturdy.from": `${from.host}:${from.port}`,
      "sturdy.to": `${to.host}:${to.port}`
    })
  )
