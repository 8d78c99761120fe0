/**
 * The two profiles, development and production, and the `Config` that
 * picks one from the environment and applies overrides.
 *
 * **Details**
 *
 * `development` and `production` hold each profile's values; `variables`
 * lists the environment variables that override them, with their defaults.
 *
 * Setting only the first open duration pins it (the ceiling follows it):
 * `STURDY_BREAKER_OPEN_DURATION=60s` gives a fixed minute. While the
 * breaker is open, `@sturdy/pg` probes the server itself and closes it as soon
 * as the server answers, so the open duration only bounds how long callers
 * wait when nothing else notices the recovery.
 *
 * The profile is `STURDY_PROFILE` when set (`development` or `production`,
 * anything else is an error), otherwise `production` when `NODE_ENV` is
 * `production` and `development` for any other `NODE_ENV` (tools set it to
 * `test`, `staging` and more; refusing those would break them).
 *
 * **Gotchas**
 *
 * Every invalid value fails with a `ConfigError` naming its key; values are
 * never echoed, so a secret pasted into the wrong variable does not end up in
 * a log.
 *
 * @since 0.1.0
 */
import { Config, Duration, Option, Schedule, Schema } from "effect"
import { positive } from "./internal/duration.ts"
import * as Breaker from "./Breaker.ts"

/**
 * @since 0.1.0
 * @category models
 */
export type Name = "development" | "production"

/**
 * @since 0.1.0
 * @category models
 */
export interface Profile {
  readonly name: Name
  /** Retries after the first attempt. */
  readonly retriesAfterFirst: number
  /** First backoff delay; each retry doubles it. */
  readonly backoffBase: Duration.Duration
  /** Upper bound (exclusive) of the uniform jitter added to each delay. */
  readonly backoffJitter: Duration.Duration
  /** Deadline of one attempt: acquiring a connection plus running the statement. */
  readonly attemptTimeout: Duration.Duration
  /** Interval between health probes. */
  readonly healthCheckInterval: Duration.Duration
  /** Bound on one health probe. */
  readonly healthCheckTimeout: Duration.Duration
  /** Consecutive failed attempts that open the circuit breaker. */
  readonly breakerFailures: number
  /**
   * How long the breaker stays open the first time: it doubles with each
   * consecutive opening up to `breakerOpenDurationMax`. A schedule over
   * consecutive openings replaces both.
   */
  readonly breakerOpenDuration: Duration.Duration | Schedule.Schedule<unknown, number>
  /** The ceiling of the open duration. */
  readonly breakerOpenDurationMax: Duration.Duration
}

/**
 * @since 0.1.0
 * @category profiles
 */
export const development: Profile = {
  name: "development",
  retriesAfterFirst: 3,
  backoffBase: Duration.seconds(1),
  backoffJitter: Duration.seconds(1),
  attemptTimeout: Duration.seconds(10),
  healthCheckInterval: Duration.seconds(30),
  healthCheckTimeout: Duration.seconds(5),
  breakerFailures: 5,
  breakerOpenDuration: Duration.seconds(1),
  breakerOpenDurationMax: Duration.seconds(60)
}

/**
 * @since 0.1.0
 * @category profiles
 */
export const production: Profile = {
  name: "production",
  retriesAfterFirst: 5,
  backoffBase: Duration.seconds(1),
  backoffJitter: Duration.seconds(1),
  attemptTimeout: Duration.seconds(30),
  healthCheckInterval: Duration.seconds(60),
  healthCheckTimeout: Duration.seconds(5),
  breakerFailures: 5,
  breakerOpenDuration: Duration.seconds(1),
  breakerOpenDurationMax: Duration.seconds(60)
}

/**
 * @since 0.1.0
 * @category profiles
 */
export const byName = (name: Name): Profile => (name === "production" ? production : development)

/**
 * Overrides of a profile's values, as durations in any `Duration.Input` form.
 *
 * @since 0.1.0
 * @category models
 */
export interface Overrides {
  readonly retriesAfterFirst?: number | undefined
  readonly backoffBase?: Duration.Input | undefined
  readonly backoffJitter?: Duration.Input | undefined
  readonly attemptTimeout?: Duration.Input | undefined
  readonly healthCheckInterval?: Duration.Input | undefined
  readonly healthCheckTimeout?: Duration.Input | undefined
  readonly breakerFailures?: number | undefined
  /** Given alone, a duration pins the open duration (the ceiling follows it). */
  readonly breakerOpenDuration?: Duration.Input | Schedule.Schedule<unknown, number> | undefined
  readonly breakerOpenDurationMax?: Duration.Input | undefined
}

/**
 * Applies overrides to a profile, throwing a `RangeError` that names the
 * function, the setting and the value for anything out of range.
 *
 * @since 0.1.0
 * @category constructors
 */
export const override = (profile: Profile, overrides: Overrides, fn = "Profile.override"): Profile => {
  const retries = overrides.retriesAfterFirst ?? profile.retriesAfterFirst
  if (!Number.isInteger(retries) || retries < 0) {
    throw new RangeError(`${fn}: retriesAfterFirst must be an integer >= 0, got ${retries}`)
  }
  const jitter = Duration.fromInputUnsafe(overrides.backoffJitter ?? profile.backoffJitter)
  if (!Duration.isFinite(jitter) || Duration.toMillis(jitter) < 0) {
    throw new RangeError(`${fn}: backoffJitter must be a finite duration >= 0, got ${Duration.format(jitter)}`)
  }
  const breakerFailures = overrides.breakerFailures ?? profile.breakerFailures
  if (!Number.isInteger(breakerFailures) || breakerFailures < 1) {
    throw new RangeError(`${fn}: breakerFailures must be an integer >= 1, got ${breakerFailures}`)
  }
  const openDuration = overrides.breakerOpenDuration ?? profile.breakerOpenDuration
  const breakerOpenDuration = Schedule.isSchedule(openDuration)
    ? openDuration
    : positive(fn, "breakerOpenDuration", openDuration)
  const breakerOpenDurationMax = positive(
    fn,
    "breakerOpenDurationMax",
    overrides.breakerOpenDurationMax ??
      (overrides.breakerOpenDuration !== undefined && !Schedule.isSchedule(breakerOpenDuration)
        ? breakerOpenDuration
        : profile.breakerOpenDurationMax)
  )
  if (!Schedule.isSchedule(breakerOpenDuration) && Duration.isLessThan(breakerOpenDurationMax, breakerOpenDuration)) {
    throw new RangeError(
      `${fn}: breakerOpenDurationMax must be >= breakerOpenDuration, got ${Duration.format(breakerOpenDurationMax)} < ${Duration.format(breakerOpenDuration)}`
    )
  }
  return {
    name: profile.name,
    retriesAfterFirst: retries,
    backoffBase: positive(fn, "backoffBase", overrides.backoffBase ?? profile.backoffBase),
    backoffJitter: jitter,
    attemptTimeout: positive(fn, "attemptTimeout", overrides.attemptTimeout ?? profile.attemptTimeout),
    healthCheckInterval: positive(
      fn,
      "healthCheckInterval",
      overrides.healthCheckInterval ?? profile.healthCheckInterval
    ),
    healthCheckTimeout: positive(fn, "healthCheckTimeout", overrides.healthCheckTimeout ?? profile.healthCheckTimeout),
    breakerFailures,
    breakerOpenDuration,
    breakerOpenDurationMax
  }
}

const durationWhere = (key: string, rule: string, ok: (millis: number) => boolean) =>
  Config.option(
    Config.schema(
      Schema.DurationFromString.check(
        Schema.makeFilter(
          (duration: Duration.Duration) =>
            (Duration.isFinite(duration) && ok(Duration.toMillis(duration))) || `Expected ${rule}`
        )
      ),
      key
    )
  )

/**
 * The environment's profile name: `STURDY_PROFILE`, else derived from `NODE_ENV`.
 *
 * @since 0.1.0
 * @category config
 */
export const nameConfig: Config.Config<Name> = Config.all({
  explicit: Config.option(Config.Literals(["development", "production"], "STURDY_PROFILE")),
  nodeEnv: Config.option(Config.String("NODE_ENV"))
}).pipe(
  Config.map(({ explicit, nodeEnv }) =>
    Option.getOrElse(
      explicit,
      (): Name => (Option.getOrUndefined(nodeEnv) === "production" ? "production" : "development")
    )
  )
)

/**
 * The environment variables `config` and `nameConfig` read, as data: the
 * names they read are these (a test checks it), and the README's
 * configuration table is made from them. `default` is what applies while the
 * variable is unset.
 *
 * @since 0.1.0
 * @category config
 */
export const variables: ReadonlyArray<{
  readonly name: string
  readonly default: string | undefined
  readonly description: string
}> = [
  {
    name: "STURDY_PROFILE",
    default: "from `NODE_ENV`",
    description: "`development` or `production`; anything else is an error"
  },
  {
    name: "NODE_ENV",
    default: undefined,
    description: "without `STURDY_PROFILE`: `production` selects the production profile, any other value development"
  },
  {
    name: "STURDY_RETRIES",
    default: "3 (production: 5)",
    description: "retries after the first attempt, integer >= 0"
  },
  {
    name: "STURDY_BACKOFF_BASE",
    default: "1 s",
    description: "first delay between attempts, doubling with each retry"
  },
  {
    name: "STURDY_BACKOFF_JITTER",
    default: "1 s",
    description: "uniform jitter added to each delay, in [0, x)"
  },
  {
    name: "STURDY_ATTEMPT_TIMEOUT",
    default: "10 s (production: 30 s)",
    description:
      "deadline of one attempt: waiting for a connection plus running the statement; also the server's `statement_timeout`"
  },
  {
    name: "STURDY_HEALTH_CHECK_INTERVAL",
    default: "30 s (production: 60 s)",
    description: "time between health probes while healthy (every 250 ms while unhealthy or the circuit is open)"
  },
  { name: "STURDY_HEALTH_CHECK_TIMEOUT", default: "5 s", description: "deadline of one health probe" },
  {
    name: "STURDY_BREAKER_FAILURES",
    default: "5",
    description: "consecutive failed attempts that open the circuit, integer >= 1"
  },
  {
    name: "STURDY_BREAKER_OPEN_DURATION",
    default: "1 s",
    description: "first open duration, doubling with each consecutive opening; given alone, it is fixed"
  },
  {
    name: "STURDY_BREAKER_OPEN_DURATION_MAX",
    default: "60 s",
    description: "ceiling of the open duration"
  }
]

/**
 * The profile from the environment with every override applied; see the
 * module documentation for the variables.
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Profile> = Config.all({
  name: nameConfig,
  retriesAfterFirst: Config.option(Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), "STURDY_RETRIES")),
  backoffBase: durationWhere("STURDY_BACKOFF_BASE", "a positive duration", (ms) => ms > 0),
  backoffJitter: durationWhere("STURDY_BACKOFF_JITTER", "a duration >= 0", (ms) => ms >= 0),
  attemptTimeout: durationWhere("STURDY_ATTEMPT_TIMEOUT", "a positive duration", (ms) => ms > 0),
  healthCheckInterval: durationWhere("STURDY_HEALTH_CHECK_INTERVAL", "a positive duration", (ms) => ms > 0),
  healthCheckTimeout: durationWhere("STURDY_HEALTH_CHECK_TIMEOUT", "a positive duration", (ms) => ms > 0),
  breakerFailures: Config.option(
    Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), "STURDY_BREAKER_FAILURES")
  ),
  breakerOpenDuration: durationWhere("STURDY_BREAKER_OPEN_DURATION", "a positive duration", (ms) => ms > 0),
  breakerOpenDurationMax: durationWhere("STURDY_BREAKER_OPEN_DURATION_MAX", "a positive duration", (ms) => ms > 0)
}).pipe(
  Config.map(({ name, ...values }) =>
    override(byName(name), {
      retriesAfterFirst: Option.getOrUndefined(values.retriesAfterFirst),
      backoffBase: Option.getOrUndefined(values.backoffBase),
      backoffJitter: Option.getOrUndefined(values.backoffJitter),
      attemptTimeout: Option.getOrUndefined(values.attemptTimeout),
      healthCheckInterval: Option.getOrUndefined(values.healthCheckInterval),
      healthCheckTimeout: Option.getOrUndefined(values.healthCheckTimeout),
      breakerFailures: Option.getOrUndefined(values.breakerFailures),
      breakerOpenDuration: Option.getOrUndefined(values.breakerOpenDuration),
      breakerOpenDurationMax: Option.getOrUndefined(values.breakerOpenDurationMax)
    })
  )
)

/**
 * The breaker's open duration for `Breaker.make`: fixed when the first
 * duration equals the ceiling, otherwise doubling from one to the other.
 *
 * @since 0.1.0
 * @category accessors
 */
export const openDuration = (profile: Profile): Duration.Duration | Schedule.Schedule<unknown, number> => {
  const first = profile.breakerOpenDuration
  if (Schedule.isSchedule(first) || Duration.equals(first, profile.breakerOpenDurationMax)) return first
  return Breaker.exponentialOpenDuration({ from: first, max: profile.breakerOpenDurationMax })
}
