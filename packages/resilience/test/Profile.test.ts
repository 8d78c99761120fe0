import { assert, describe, it } from "@effect/vitest"
import { Profile } from "@sturdy/resilience"
import { ConfigProvider, Duration, Effect, Exit } from "effect"

const load = (env: Record<string, string>) => Effect.exit(Profile.config.parse(ConfigProvider.fromEnv({ env })))

describe("Profile.config", () => {
  it.effect("picks the profile from STURDY_PROFILE, else NODE_ENV, else development", () =>
    Effect.gen(function* () {
      const cases = [
        [{}, "development"],
        [{ NODE_ENV: "production" }, "production"],
        [{ NODE_ENV: "test" }, "development"],
        [{ NODE_ENV: "staging" }, "development"],
        [{ NODE_ENV: "production", STURDY_PROFILE: "development" }, "development"],
        [{ STURDY_PROFILE: "production" }, "production"]
      ] as const
      for (const [env, name] of cases) {
        const exit = yield* load(env)
        assert.isTrue(Exit.isSuccess(exit) && exit.value.name === name, `${JSON.stringify(env)} -> ${name}`)
      }
    })
  )

  it.effect("has the seed's values per profile and applies every override", () =>
    Effect.gen(function* () {
      const production = yield* Profile.config.parse(ConfigProvider.fromEnv({ env: { NODE_ENV: "production" } }))
      assert.deepStrictEqual(production, Profile.production)
      assert.strictEqual(production.retriesAfterFirst, 5)
      assert.strictEqual(Duration.toMillis(production.attemptTimeout), 30_000)
      assert.strictEqual(Duration.toMillis(Profile.development.attemptTimeout), 10_000)
      assert.strictEqual(Profile.development.retriesAfterFirst, 3)
      const overridden = yield* Profile.config.parse(
        ConfigProvider.fromEnv({
          env: {
            STURDY_RETRIES: "0",
            STURDY_BACKOFF_BASE: "250 millis",
            STURDY_BACKOFF_JITTER: "0 millis",
            STURDY_ATTEMPT_TIMEOUT: "2 seconds",
            STURDY_HEALTH_CHECK_INTERVAL: "5 seconds"
          }
        })
      )
      assert.deepStrictEqual(
        [
          overridden.retriesAfterFirst,
          ...[
            overridden.backoffBase,
            overridden.backoffJitter,
            overridden.attemptTimeout,
            overridden.healthCheckInterval
          ].map(Duration.toMillis)
        ],
        [0, 250, 0, 2000, 5000]
      )
    })
  )

  const invalid = [
    ["STURDY_PROFILE", "staging"],
    ["STURDY_RETRIES", "-1"],
    ["STURDY_RETRIES", "1.5"],
    ["STURDY_RETRIES", "three"],
    ["STURDY_BACKOFF_BASE", "0 seconds"],
    ["STURDY_BACKOFF_BASE", "soon"],
    ["STURDY_BACKOFF_JITTER", "a bit"],
    ["STURDY_ATTEMPT_TIMEOUT", "0 seconds"],
    ["STURDY_ATTEMPT_TIMEOUT", "Infinity"],
    ["STURDY_HEALTH_CHECK_INTERVAL", "0 millis"]
  ] as const
  for (const [key, value] of invalid) {
    it.effect(`${key}=${JSON.stringify(value)} fails with a ConfigError naming ${key}`, () =>
      Effect.gen(function* () {
        const exit = yield* load({ [key]: value })
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.findErrorOption(exit)
        assert.isTrue(error._tag === "Some" && error.value._tag === "ConfigError")
        assert.include(String(error._tag === "Some" ? error.value.message : ""), key)
      })
    )
  }

  it("override throws a RangeError naming the function, the setting and the value", () => {
    assert.throws(
      () => Profile.override(Profile.development, { retriesAfterFirst: -2 }, "ResilientPg.make"),
      "ResilientPg.make: retriesAfterFirst must be an integer >= 0, got -2"
    )
    assert.throws(
      () => Profile.override(Profile.development, { attemptTimeout: 0 }),
      "Profile.override: attemptTimeout must be a positive finite duration, got 0"
    )
  })
})
