import { assert, describe, it } from "@effect/vitest"
import { Profile } from "@sturdy/resilience"
import { ConfigProvider, Duration, Effect, Exit, Schedule } from "effect"

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

  it("the open duration doubles from 1 s to the seed's 60 s by default; given alone, a duration pins it", () =>
    Effect.gen(function* () {
      const delays = (profile: Profile.Profile) =>
        Effect.gen(function* () {
          const duration = Profile.openDuration(profile)
          if (!Schedule.isSchedule(duration)) return [Duration.toMillis(duration)]
          const step = yield* Schedule.toStep(duration)
          const out: Array<number> = []
          let now = 0
          for (let attempt = 1; attempt <= 8; attempt++) {
            const [, delay] = yield* step(now, attempt)
            out.push(Duration.toMillis(delay))
            now += Duration.toMillis(delay)
          }
          return out
        })
      assert.deepStrictEqual(yield* delays(Profile.production), [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000])
      assert.deepStrictEqual(
        yield* delays(Profile.override(Profile.development, { breakerOpenDuration: "60 seconds" })),
        [60000]
      )
      assert.deepStrictEqual(
        yield* delays(
          Profile.override(Profile.development, {
            breakerOpenDuration: "5 seconds",
            breakerOpenDurationMax: "12 seconds"
          })
        ),
        [5000, 10000, 12000, 12000, 12000, 12000, 12000, 12000]
      )
      assert.throws(
        () =>
          Profile.override(Profile.development, {
            breakerOpenDuration: "5 seconds",
            breakerOpenDurationMax: "1 second"
          }),
        "Profile.override: breakerOpenDurationMax must be >= breakerOpenDuration, got 1s < 5s"
      )
    }).pipe(Effect.runPromise))

  it.effect(
    "STURDY_BREAKER_OPEN_DURATION alone pins the open duration; with STURDY_BREAKER_OPEN_DURATION_MAX it is the first of a doubling",
    () =>
      Effect.gen(function* () {
        const pinned = yield* load({ STURDY_BREAKER_OPEN_DURATION: "30 seconds" })
        assert.isTrue(Exit.isSuccess(pinned))
        if (Exit.isSuccess(pinned)) assert.strictEqual(Duration.toMillis(pinned.value.breakerOpenDurationMax), 30_000)
        const ranged = yield* load({
          STURDY_BREAKER_OPEN_DURATION: "2 seconds",
          STURDY_BREAKER_OPEN_DURATION_MAX: "20 seconds"
        })
        assert.isTrue(Exit.isSuccess(ranged))
        if (Exit.isSuccess(ranged)) assert.strictEqual(Duration.toMillis(ranged.value.breakerOpenDurationMax), 20_000)
      })
  )
})
