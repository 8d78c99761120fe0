/**
 * The client's health monitor, wired to its breaker: while the circuit is
 * closed the probe runs `SELECT 1` on a session of its own, and that session's
 * loss (a server that stops ends it at once) starts the next probe at once;
 * while it is open, every probe opens a fresh session, as the pool would have
 * to, probes come every `fastInterval`, and a success closes the circuit.
 * The probe never goes through the breaker or waits behind a saturated pool.
 *
 * @internal
 */
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { type Breaker, HealthMonitor, type Profile } from "@sturdy/resilience"
import { Effect, Stream } from "effect"
import type * as Scope from "effect/Scope"
import type { SqlError } from "effect/sql/SqlError"
import * as PgFailure from "../PgFailure.ts"
import * as ProbeSessions from "./probeSessions.ts"

/** A probe failure in the health result: Sturdy's reason where it has one, else the driver's. */
const describe = (error: SqlError): string => {
  const refused = PgFailure.refusal(error)
  if (refused !== undefined) return `ConfigurationRefused: ${refused.message}`
  const reason = PgFailure.classify(error)
  return reason === undefined ? `${error.reason._tag}: ${error.message}` : `${reason._tag}: ${reason.message}`
}

export const make = Effect.fnUntraced(function* (options: {
  /** Opens the probe's session (the router's discovery when there are several hosts). */
  readonly connect: Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope>
  readonly verify: (connection: PgConnection.PgConnection) => Effect.Effect<unknown, SqlError>
  readonly breaker: Breaker.Service
  readonly key: string
  readonly profile: Profile.Profile
  readonly onStartup: "degraded" | "fail"
}) {
  const { breaker, key, profile } = options
  let onSessionLost = () => {}
  const probeSessions = yield* ProbeSessions.make(options.connect, options.verify, () => onSessionLost())
  const circuitClosed = Effect.map(breaker.state(key), (state) => state._tag === "Closed")
  const health = yield* HealthMonitor.make({
    probe: Effect.flatMap(
      circuitClosed,
      (closed): Effect.Effect<unknown, SqlError> => probeSessions.probe(closed ? "reuse" : "fresh")
    ),
    interval: profile.healthCheckInterval,
    probeFastWhile: Effect.map(circuitClosed, (closed) => !closed),
    // While the circuit is not closed, a shared breaker lets one process of the fleet probe for all of them.
    ...(breaker.shouldProbe !== undefined && {
      probeWhen: Effect.flatMap(circuitClosed, (closed) => (closed ? Effect.succeed(true) : breaker.shouldProbe!(key)))
    }),
    timeout: profile.healthCheckTimeout,
    onStartup: options.onStartup,
    describe
  })
  onSessionLost = () => Effect.runSync(health.checkSoon)
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
  return health
})
