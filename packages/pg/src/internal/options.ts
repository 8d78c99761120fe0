/**
 * The options of `ResilientPg.make`, checked and resolved: the profile, the
 * server-side statement timeout, the target and the breaker's key.
 *
 * @internal
 */
import { Profile, RetryBudget } from "@sturdy/resilience"
import { Duration, Redacted, Result } from "effect"
import type { Options } from "../ResilientPg.ts"
import * as Target from "../Target.ts"

export const positiveDuration = (fn: string, name: string, input: Duration.Input): Duration.Duration => {
  const duration = Duration.fromInputUnsafe(input)
  if (!Duration.isFinite(duration) || !(Duration.toMillis(duration) > 0)) {
    throw new RangeError(`${fn}: ${name} must be a positive finite duration, got ${Duration.format(duration)}`)
  }
  return duration
}

export const validateOptions = (options: Options): Profile.Profile => {
  const fn = "ResilientPg.make"
  const profileName = options.profile ?? "development"
  if (profileName !== "development" && profileName !== "production") {
    throw new RangeError(`${fn}: profile must be "development" or "production", got ${JSON.stringify(profileName)}`)
  }
  const sentPhaseRetry = options.sentPhaseRetry ?? "safe"
  if (sentPhaseRetry !== "safe" && sentPhaseRetry !== "always") {
    throw new RangeError(`${fn}: sentPhaseRetry must be "safe" or "always", got ${JSON.stringify(sentPhaseRetry)}`)
  }
  const whenCircuitOpen = options.whenCircuitOpen ?? "wait-and-retry"
  if (whenCircuitOpen !== "fail-fast" && whenCircuitOpen !== "wait-and-retry") {
    throw new RangeError(
      `${fn}: whenCircuitOpen must be "fail-fast" or "wait-and-retry", got ${JSON.stringify(whenCircuitOpen)}`
    )
  }
  if (options.targetSessionAttrs !== undefined && !Target.sessionAttrs.includes(options.targetSessionAttrs)) {
    throw new RangeError(
      `${fn}: targetSessionAttrs must be one of ${Target.sessionAttrs.join(", ")}, got ${JSON.stringify(options.targetSessionAttrs)}`
    )
  }
  if (
    options.loadBalanceHosts !== undefined &&
    options.loadBalanceHosts !== "disable" &&
    options.loadBalanceHosts !== "random"
  ) {
    throw new RangeError(
      `${fn}: loadBalanceHosts must be "disable" or "random", got ${JSON.stringify(options.loadBalanceHosts)}`
    )
  }
  if (options.hosts !== undefined && options.hosts.length === 0) {
    throw new RangeError(`${fn}: hosts must list at least one host`)
  }
  const statementTimeoutVia = options.statementTimeoutVia ?? "transaction"
  if (statementTimeoutVia !== "transaction" && statementTimeoutVia !== "startup") {
    throw new RangeError(
      `${fn}: statementTimeoutVia must be "transaction" or "startup", got ${JSON.stringify(statementTimeoutVia)}`
    )
  }
  const statementStatsSize = options.statementStatsSize ?? 500
  if (!Number.isInteger(statementStatsSize) || statementStatsSize < 0) {
    throw new RangeError(`${fn}: statementStatsSize must be an integer >= 0, got ${statementStatsSize}`)
  }
  return Profile.override(Profile.byName(profileName), options, fn)
}

/** The retry budget's settings, checked: `undefined` when `retryBudget` is `false`. */
export const retryBudgetOf = (
  options: Options
): { readonly ratio: number; readonly minRetriesPerSecond: number } | undefined => {
  const budget = options.retryBudget
  if (budget === false) return undefined
  if (budget !== undefined && (typeof budget !== "object" || budget === null)) {
    throw new RangeError(
      `ResilientPg.make: retryBudget must be { ratio, minRetriesPerSecond } or false, got ${JSON.stringify(budget)}`
    )
  }
  return RetryBudget.validate("ResilientPg.make", budget ?? {}, "retryBudget.")
}

export const statementTimeoutMillis = (options: Options, profile: Profile.Profile): number | undefined => {
  if (options.statementTimeout === "off") return undefined
  const duration = Duration.fromInputUnsafe(options.statementTimeout ?? profile.attemptTimeout)
  const millis = Math.ceil(Duration.toMillis(duration))
  if (!Duration.isFinite(duration) || !(millis > 0)) {
    throw new RangeError(
      `ResilientPg.make: statementTimeout must be a positive finite duration or "off", got ${Duration.format(duration)}`
    )
  }
  return millis
}

/**
 * The target from the options: the URL's (libpq syntax, several hosts
 * allowed), or the host options given in code.
 */
export const targetOf = (options: Options): Result.Result<Target.Target, Target.InvalidUrl> => {
  const fromUrl =
    options.url === undefined ? undefined : Target.parse(Redacted.value(options.url), options.urlSource ?? "url")
  if (fromUrl !== undefined && Result.isFailure(fromUrl)) return fromUrl
  const base = fromUrl?.success
  const hosts =
    options.hosts?.map((h) => ({ host: h.host, port: h.port ?? 5432 })) ??
    (options.host !== undefined || options.port !== undefined || base === undefined
      ? [
          {
            host: options.host ?? base?.hosts[0]?.host ?? "localhost",
            port: options.port ?? base?.hosts[0]?.port ?? 5432
          }
        ]
      : base.hosts)
  return Result.succeed({
    hosts,
    username: options.username ?? base?.username,
    password: base?.password,
    database: options.database ?? base?.database,
    targetSessionAttrs: options.targetSessionAttrs ?? base?.targetSessionAttrs ?? "any",
    loadBalanceHosts: options.loadBalanceHosts ?? base?.loadBalanceHosts ?? "disable",
    connectTimeout: base?.connectTimeout,
    parameters: base?.parameters ?? []
  })
}

/** The breaker's key: one circuit per database, never the credentials. */
export const databaseKey = (target: Target.Target): string =>
  `${target.hosts.map((h) => `${h.host.includes(":") ? `[${h.host}]` : h.host}:${h.port}`).join(",")}/${
    // PostgreSQL's own default: the database named after the user, from the URL or from code.
    target.database ?? target.username ?? "postgres"
  }`
