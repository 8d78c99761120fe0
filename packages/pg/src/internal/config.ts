/**
 * The environment variables `ResilientPg.layerConfig` reads: one list, which
 * the `Config` below reads by name and the README's table is generated from.
 *
 * @internal
 */
import { Profile } from "@sturdy/resilience"
import { Config, Option, type Redacted, Result, Schema } from "effect"
import type { Options } from "../ResilientPg.ts"
import * as Target from "../Target.ts"

export const databaseUrl = Config.schema(
  Schema.Redacted(
    Schema.String.check(
      Schema.makeFilter((url: string) => {
        const parsed = Target.parse(url, "DATABASE_URL")
        return Result.isSuccess(parsed) || parsed.failure.problem
      })
    )
  ),
  "DATABASE_URL"
)

export const settings = (url: Config.Config<Redacted.Redacted<string>>): Config.Config<Options> =>
  Config.all({
    url,
    profile: Profile.config,
    maxConnections: Config.option(
      Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), "STURDY_POOL_SIZE")
    ),
    sentPhaseRetry: Config.option(Config.Literals(["safe", "always"], "STURDY_SENT_PHASE_RETRY")),
    healthOnStartup: Config.option(Config.Literals(["degraded", "fail"], "STURDY_HEALTH_ON_STARTUP")),
    whenCircuitOpen: Config.option(Config.Literals(["fail-fast", "wait-and-retry"], "STURDY_WHEN_CIRCUIT_OPEN")),
    retryBudgetRatio: Config.option(
      Config.schema(
        Schema.Union([
          Schema.Literal("off"),
          Schema.NumberFromString.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThanOrEqualTo(1))
        ]),
        "STURDY_RETRY_BUDGET_RATIO"
      )
    ),
    retryBudgetMinPerSecond: Config.option(
      Config.schema(
        Schema.NumberFromString.check(Schema.isFinite(), Schema.isGreaterThanOrEqualTo(0)),
        "STURDY_RETRY_BUDGET_MIN_PER_SECOND"
      )
    )
  }).pipe(
    Config.map(
      ({
        url,
        profile,
        maxConnections,
        sentPhaseRetry,
        healthOnStartup,
        whenCircuitOpen,
        retryBudgetRatio,
        retryBudgetMinPerSecond
      }): Options => ({
        url,
        urlSource: "DATABASE_URL",
        profile: profile.name,
        retriesAfterFirst: profile.retriesAfterFirst,
        backoffBase: profile.backoffBase,
        backoffJitter: profile.backoffJitter,
        attemptTimeout: profile.attemptTimeout,
        healthCheckInterval: profile.healthCheckInterval,
        healthCheckTimeout: profile.healthCheckTimeout,
        breakerFailures: profile.breakerFailures,
        breakerOpenDuration: profile.breakerOpenDuration,
        breakerOpenDurationMax: profile.breakerOpenDurationMax,
        maxConnections: Option.getOrUndefined(maxConnections),
        sentPhaseRetry: Option.getOrUndefined(sentPhaseRetry),
        healthOnStartup: Option.getOrUndefined(healthOnStartup),
        whenCircuitOpen: Option.getOrUndefined(whenCircuitOpen),
        retryBudget:
          Option.getOrUndefined(retryBudgetRatio) === "off"
            ? false
            : {
                ratio: Option.getOrUndefined(retryBudgetRatio) as number | undefined,
                minRetriesPerSecond: Option.getOrUndefined(retryBudgetMinPerSecond)
              }
      })
    )
  )

export const dropUndefined = <A extends object>(options: A): A =>
  Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as A

export const variables: ReadonlyArray<{
  readonly name: string
  readonly default: string | undefined
  readonly description: string
}> = [
  {
    name: "DATABASE_URL",
    default: "required",
    description:
      "`postgres://user:password@host:port/database` (read as a secret), libpq's syntax: several hosts, `target_session_attrs`, `load_balance_hosts`, `connect_timeout`"
  },
  { name: "STURDY_POOL_SIZE", default: "10", description: "the pool's maximum connections, integer >= 1" },
  {
    name: "STURDY_SENT_PHASE_RETRY",
    default: "`safe`",
    description: "`safe`: after a statement was sent, retry only reads and idempotent work; `always`: every statement"
  },
  {
    name: "STURDY_WHEN_CIRCUIT_OPEN",
    default: "`wait-and-retry`",
    description: "`wait-and-retry`: a rejected attempt is retried on the call's backoff; `fail-fast`: the call fails"
  },
  {
    name: "STURDY_RETRY_BUDGET_RATIO",
    default: "0.1",
    description:
      "the retry budget: retries allowed per successful call, a number in [0, 1]; `off` turns the budget off (`retryBudget: false`)"
  },
  {
    name: "STURDY_RETRY_BUDGET_MIN_PER_SECOND",
    default: "1",
    description: "the retry budget's floor: retries it allows per second whatever the traffic, a number >= 0"
  },
  {
    name: "STURDY_HEALTH_ON_STARTUP",
    default: "`degraded`",
    description: "`degraded`: the layer builds while the database is down; `fail`: it fails"
  },
  ...Profile.variables
]
