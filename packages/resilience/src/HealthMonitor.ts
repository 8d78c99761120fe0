/**
 * Periodic health probing: the application always knows how healthy its
 * dependency is, without a caller having to fail first.
 *
 * **Details**
 *
 * Probe-agnostic: give it an effect that succeeds when the dependency is
 * healthy (`@sturdy/pg` supplies `SELECT 1` on a connection of its own). It
 * probes at start-up, then every `interval` while healthy and every
 * `fastInterval` (250 ms by default) while unhealthy or while `probeFastWhile`
 * says so, each probe bounded by `timeout`, and keeps the latest
 * `HealthCheckResult` in a `SubscriptionRef`: `lastHealthCheck` reads it,
 * `changes` streams every result. `checkSoon` cuts the current wait short:
 * call it on any sign of trouble (a dropped connection, an opened breaker) so
 * readiness follows the dependency within a probe, not within an interval.
 *
 * **Where it belongs in a stack**
 *
 * Beside the policies, never inside them: a probe must not go through the
 * circuit breaker (an open breaker would stop the probes that tell it the
 * database is back) nor wait behind a saturated pool (a busy database is not
 * a dead one).
 *
 * **Gotchas**
 *
 * `onStartup: "degraded"` (the default) builds the layer even when the first
 * probe fails: the service starts, readiness says not ready, the monitor keeps
 * probing. `"fail"` fails the layer with `StartupHealthCheckFailed` instead,
 * which under a supervisor that restarts failed processes means a crash loop
 * while the database is down.
 *
 * @since 0.1.0
 */
import {
  Clock,
  Context,
  Data,
  Duration,
  Effect,
  Layer,
  Predicate,
  Queue,
  Schema,
  type Scope,
  Stream,
  SubscriptionRef
} from "effect"
import { positive } from "./internal/duration.ts"

/**
 * The result of one health probe.
 *
 * @since 0.1.0
 * @category models
 */
export class HealthCheckResult extends Schema.Class<HealthCheckResult>("@sturdy/resilience/HealthCheckResult")({
  status: Schema.Literals(["healthy", "unhealthy"]),
  /** Milliseconds the probe took, when it answered. */
  responseTime: Schema.optional(Schema.Number),
  timestamp: Schema.Date,
  /** Why the probe failed; never contains credentials. */
  error: Schema.optional(Schema.String)
}) {}

/**
 * The first probe failed and `onStartup` is `"fail"`.
 *
 * @since 0.1.0
 * @category errors
 */
export class StartupHealthCheckFailed extends Schema.TaggedError<StartupHealthCheckFailed>()(
  "StartupHealthCheckFailed",
  { error: Schema.String }
) {
  override get message(): string {
    return `The start-up health check failed: ${this.error}`
  }
}

/** The probe's own deadline passed: told apart from any failure of the probe itself. */
class ProbeTimeout extends Data.TaggedError("ProbeTimeout") {}

/** The probe died (a defect): reported as unhealthy, never the end of the monitor. */
class ProbeDefect extends Data.TaggedError("ProbeDefect")<{ readonly defect: unknown }> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<E> {
  /** Succeeds when the dependency is healthy. */
  readonly probe: Effect.Effect<unknown, E>
  readonly interval: Duration.Input
  /** The interval while unhealthy or while `probeFastWhile` is true. Default: 250 ms, or `interval` if shorter. */
  readonly fastInterval?: Duration.Input | undefined
  /** Probe at `fastInterval` while this is true, even when healthy (for example while a breaker is open). */
  readonly probeFastWhile?: Effect.Effect<boolean> | undefined
  /**
   * Asked before each periodic probe: while it answers `false` the probe is
   * left out and the last result stands (another process probes for this one:
   * see `SharedBreaker`). `check` always probes.
   */
  readonly probeWhen?: Effect.Effect<boolean> | undefined
  /** Bound on one probe; a probe that takes longer is unhealthy. */
  readonly timeout: Duration.Input
  readonly onStartup?: "degraded" | "fail" | undefined
  /** The `error` text of a failed probe. It must not reveal secrets. */
  readonly describe?: ((error: E) => string) | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly lastHealthCheck: Effect.Effect<HealthCheckResult>
  /** The current result, then every new one. */
  readonly changes: Stream.Stream<HealthCheckResult>
  /** Probes now, publishes and returns the result. */
  readonly check: Effect.Effect<HealthCheckResult>
  /** Ends the current wait: the next probe starts now (several calls before it starts make one probe). */
  readonly checkSoon: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category services
 */
export class HealthMonitor extends Context.Service<HealthMonitor, Service>()("@sturdy/resilience/HealthMonitor") {}

/**
 * Probes once, then every interval in a fiber of the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function* <E>(
  options: Options<E>
): Effect.fn.Return<Service, StartupHealthCheckFailed, Scope.Scope> {
  const interval = positive("HealthMonitor.make", "interval", options.interval)
  const timeout = positive("HealthMonitor.make", "timeout", options.timeout)
  const fastInterval =
    options.fastInterval === undefined
      ? Duration.min(interval, Duration.millis(250))
      : positive("HealthMonitor.make", "fastInterval", options.fastInterval)
  const probeFastWhile = options.probeFastWhile ?? Effect.succeed(false)
  const onStartup = options.onStartup ?? "degraded"
  if (onStartup !== "degraded" && onStartup !== "fail") {
    throw new RangeError(`HealthMonitor.make: onStartup must be "degraded" or "fail", got ${JSON.stringify(onStartup)}`)
  }
  const describe =
    options.describe ??
    ((error: E) => (Predicate.hasProperty(error, "message") ? String(error.message) : String(error)))

  const probe: Effect.Effect<HealthCheckResult> = Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    const outcome = yield* options.probe.pipe(
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () => Effect.fail(new ProbeTimeout())
      }),
      // A probe that dies is an unhealthy answer too: a defect must not end the monitor and freeze readiness.
      Effect.catchDefect((defect) => Effect.fail(new ProbeDefect({ defect }))),
      Effect.result
    )
    const finished = yield* Clock.currentTimeMillis
    const timestamp = new Date(finished)
    if (outcome._tag === "Success") {
      return new HealthCheckResult({ status: "healthy", responseTime: finished - started, timestamp })
    }
    const failure = outcome.failure
    const error =
      failure instanceof ProbeTimeout
        ? `The probe did not answer within ${Duration.format(timeout)}`
        : failure instanceof ProbeDefect
          ? `The probe died: ${Predicate.hasProperty(failure.defect, "message") ? String(failure.defect.message) : String(failure.defect)}`
          : describe(failure)
    return new HealthCheckResult({ status: "unhealthy", timestamp, error })
  })

  const first = yield* probe
  yield* Effect.annotateLogs(
    first.status === "healthy"
      ? Effect.logInfo(`Initial health check: healthy (${first.responseTime} ms)`)
      : Effect.logError(`Initial health check: unhealthy: ${first.error}`),
    { "sturdy.event": "health", "sturdy.health": first.status }
  )
  if (first.status === "unhealthy" && onStartup === "fail") {
    return yield* new StartupHealthCheckFailed({ error: first.error ?? "unknown" })
  }

  const ref = yield* SubscriptionRef.make(first)
  const check = Effect.gen(function* () {
    const previous = yield* SubscriptionRef.get(ref)
    const result = yield* probe
    yield* SubscriptionRef.set(ref, result)
    if (result.status !== previous.status) {
      yield* Effect.annotateLogs(
        result.status === "healthy"
          ? Effect.logInfo(`Health check: healthy again (${result.responseTime} ms)`)
          : Effect.logError(`Health check: unhealthy: ${result.error}`),
        { "sturdy.event": "health", "sturdy.health": result.status, "sturdy.previous": previous.status }
      )
    }
    return result
  })
  // One pending wake-up at most: a burst of `checkSoon` makes one probe.
  const wake = yield* Queue.sliding<void>(1)
  const wait = Effect.gen(function* () {
    const healthy = (yield* SubscriptionRef.get(ref)).status === "healthy"
    const delay =
      healthy && !(yield* Effect.catchDefect(probeFastWhile, () => Effect.succeed(true))) ? interval : fastInterval
    yield* Effect.timeoutOption(Queue.take(wake), delay)
  })
  const periodic =
    options.probeWhen === undefined
      ? check
      : Effect.flatMap(
          Effect.catchDefect(options.probeWhen, () => Effect.succeed(true)),
          (probe) => (probe ? check : Effect.void)
        )
  yield* Effect.forkScoped(Effect.forever(Effect.andThen(wait, periodic)))

  return {
    lastHealthCheck: SubscriptionRef.get(ref),
    changes: SubscriptionRef.changes(ref),
    check,
    checkSoon: Effect.sync(() => {
      Queue.offerUnsafe(wake, undefined)
    })
  }
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = <E>(options: Options<E>): Layer.Layer<HealthMonitor, StartupHealthCheckFailed> =>
  Layer.effect(HealthMonitor, make(options))
