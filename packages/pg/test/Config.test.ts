import { assert, describe, it } from "@effect/vitest"
import { ResilientPg } from "@sturdy/pg"
import { Cause, ConfigProvider, Duration, Effect, Exit, Layer, Redacted } from "effect"

const secret = "hunter2-Secret-Password"
const validUrl = `postgres://app:${secret}@db.internal:5432/app`

const load = (env: Record<string, string>) => Effect.exit(ResilientPg.config.parse(ConfigProvider.fromEnv({ env })))

const configErrorMessage = (exit: Exit.Exit<unknown, unknown>): string => {
  assert.isTrue(Exit.isFailure(exit), "expected a ConfigError")
  const error = Exit.findErrorOption(exit as Exit.Exit<unknown, { readonly _tag: string; readonly message: string }>)
  assert.isTrue(error._tag === "Some" && error.value._tag === "ConfigError")
  return error._tag === "Some" ? error.value.message : ""
}

describe("ResilientPg.config", () => {
  it.effect("reads DATABASE_URL (redacted) and the profile", () =>
    Effect.gen(function* () {
      const options = yield* ResilientPg.config.parse(
        ConfigProvider.fromEnv({
          env: {
            DATABASE_URL: validUrl,
            NODE_ENV: "production",
            STURDY_POOL_SIZE: "4",
            STURDY_SENT_PHASE_RETRY: "always",
            STURDY_WHEN_CIRCUIT_OPEN: "wait-and-retry",
            STURDY_HEALTH_ON_STARTUP: "fail",
            STURDY_BREAKER_FAILURES: "3"
          }
        })
      )
      assert.strictEqual(Redacted.value(options.url!), validUrl)
      assert.notInclude(String(options.url), secret)
      assert.strictEqual(options.profile, "production")
      assert.strictEqual(options.retriesAfterFirst, 5)
      assert.strictEqual(Duration.toMillis(Duration.fromInputUnsafe(options.attemptTimeout!)), 30_000)
      assert.strictEqual(options.maxConnections, 4)
      assert.strictEqual(options.sentPhaseRetry, "always")
      assert.strictEqual(options.whenCircuitOpen, "wait-and-retry")
      assert.strictEqual(options.healthOnStartup, "fail")
      assert.strictEqual(options.breakerFailures, 3)
    })
  )

  const invalid = [
    ["DATABASE_URL", "not a url"],
    ["DATABASE_URL", `mysql://app:${secret}@db:3306/app`],
    ["DATABASE_URL", `postgres://app:${secret}@db:notaport/app`],
    ["DATABASE_URL", "postgres://%%%"],
    ["DATABASE_URL", `postgres://app:${secret}@h1,h2/app?target_session_attrs=writable`],
    ["STURDY_POOL_SIZE", "0"],
    ["STURDY_POOL_SIZE", "many"],
    ["STURDY_SENT_PHASE_RETRY", "sometimes"],
    ["STURDY_WHEN_CIRCUIT_OPEN", "panic"],
    ["STURDY_HEALTH_ON_STARTUP", "crash"],
    ["STURDY_BREAKER_FAILURES", "0"],
    ["STURDY_BREAKER_OPEN_DURATION", "0 seconds"],
    ["STURDY_HEALTH_CHECK_TIMEOUT", "never"],
    ["STURDY_PROFILE", "qa"],
    ["STURDY_RETRIES", "-1"],
    ["STURDY_ATTEMPT_TIMEOUT", "0 seconds"],
    ["STURDY_RETRY_BUDGET_RATIO", "1.5"],
    ["STURDY_RETRY_BUDGET_RATIO", "on"],
    ["STURDY_RETRY_BUDGET_MIN_PER_SECOND", "-1"]
  ] as const
  for (const [key, value] of invalid) {
    it.effect(
      `${key}=${JSON.stringify(value.replace(secret, "…"))} fails with a ConfigError naming ${key}, and no secret`,
      () =>
        Effect.gen(function* () {
          const env: Record<string, string> =
            key === "DATABASE_URL" ? { [key]: value } : { DATABASE_URL: validUrl, [key]: value }
          const message = configErrorMessage(yield* load(env))
          assert.include(message, key)
          assert.notInclude(message, secret)
        })
    )
  }

  it.effect("the retry budget: defaults when unset, the values given, false for off", () =>
    Effect.gen(function* () {
      const budgetOf = (env: Record<string, string>) =>
        Effect.map(
          ResilientPg.config.parse(ConfigProvider.fromEnv({ env: { DATABASE_URL: validUrl, ...env } })),
          (options) => options.retryBudget
        )
      assert.deepStrictEqual(
        [
          yield* budgetOf({}),
          yield* budgetOf({ STURDY_RETRY_BUDGET_RATIO: "0.2", STURDY_RETRY_BUDGET_MIN_PER_SECOND: "5" }),
          yield* budgetOf({ STURDY_RETRY_BUDGET_RATIO: "off" })
        ],
        [{ ratio: undefined, minRetriesPerSecond: undefined }, { ratio: 0.2, minRetriesPerSecond: 5 }, false]
      )
    })
  )

  it.effect("a missing DATABASE_URL names the key", () =>
    Effect.gen(function* () {
      assert.include(configErrorMessage(yield* load({})), "DATABASE_URL")
    })
  )

  it.effect("layerConfig with a url in code does not need DATABASE_URL and still reads the STURDY_* variables", () =>
    Effect.gen(function* () {
      const url = Redacted.make(`postgres://app:${secret}@127.0.0.1:1/app`)
      const withEnv = (env: Record<string, string>) =>
        Layer.provide(ResilientPg.layerConfig({ url }), ConfigProvider.layer(ConfigProvider.fromEnv({ env })))
      const max = yield* Effect.flatMap(ResilientPg.ResilientPg, (pg) => pg.pool).pipe(
        Effect.provide(withEnv({ STURDY_POOL_SIZE: "3", STURDY_HEALTH_CHECK_TIMEOUT: "200 millis" })),
        Effect.map((pool) => pool.max)
      )
      assert.strictEqual(max, 3)
      const message = configErrorMessage(
        yield* Effect.exit(Effect.provide(Effect.void, withEnv({ STURDY_POOL_SIZE: "0" })))
      )
      assert.include(message, "STURDY_POOL_SIZE")
    })
  )

  it.effect("invalid options in code fail the layer with a RangeError naming the option and the value", () =>
    Effect.gen(function* () {
      const url = Redacted.make(validUrl)
      const messageOf = (options: Partial<ResilientPg.Options>) =>
        Effect.map(Effect.exit(Effect.provide(Effect.void, ResilientPg.layer({ url, ...options }))), (exit) =>
          Exit.isFailure(exit) ? (Cause.squash(exit.cause) as Error).message : "built"
        )
      // One option per check the layer runs (the profile's, the options', the statement timeout's);
      // internal/options.test.ts has every option's message.
      assert.strictEqual(
        yield* messageOf({ retriesAfterFirst: -1 }),
        "ResilientPg.make: retriesAfterFirst must be an integer >= 0, got -1"
      )
      assert.strictEqual(
        yield* messageOf({ attemptTimeout: "0 millis" }),
        "ResilientPg.make: attemptTimeout must be a positive finite duration, got 0"
      )
      assert.strictEqual(
        yield* messageOf({ profile: "staging" as never }),
        'ResilientPg.make: profile must be "development" or "production", got "staging"'
      )
      assert.strictEqual(
        yield* messageOf({ statementTimeout: "-5 seconds" }),
        'ResilientPg.make: statementTimeout must be a positive finite duration or "off", got -5s'
      )
    })
  )
})
