import { assert, describe, it } from "@effect/vitest"
import { Profile, Retry } from "@sturdy/resilience"
import { Clock, Data, Effect, Exit, Fiber, Random } from "effect"
import { TestClock } from "effect/testing"
import * as fc from "fast-check"

class Boom extends Data.TaggedError("Boom")<{ readonly retryable: boolean }> {}

/** A `Random` whose doubles come from the given list, in order (repeating the last). */
const jitterSource = (values: ReadonlyArray<number>): Random.Random => {
  let i = 0
  const next = () => values[Math.min(i++, values.length - 1)] ?? 0
  return { nextDoubleUnsafe: next, nextIntUnsafe: () => Math.floor(next() * Number.MAX_SAFE_INTEGER) }
}

/**
 * Runs an effect that fails according to `outcomes` (one per attempt; past the
 * end it fails retryably) under `policy`, and returns the virtual time of each
 * attempt and the exit.
 */
const attemptTimes = (
  options: Retry.BackoffOptions,
  outcomes: ReadonlyArray<"ok" | "retryable" | "fatal">,
  random: Random.Random,
  run: "lazy" | "Effect.retry" = "lazy"
) =>
  Effect.gen(function* () {
    const times: Array<number> = []
    const attempt = Effect.suspend(() => {
      const outcome = outcomes[times.length] ?? "retryable"
      return Effect.flatMap(Clock.currentTimeMillis, (now) => {
        times.push(now)
        return outcome === "ok"
          ? Effect.succeed(times.length)
          : Effect.fail(new Boom({ retryable: outcome === "retryable" }))
      })
    })
    const policy = Retry.schedule(options, (error: Boom) => error.retryable)
    const retried = run === "lazy" ? Retry.retryOnFailure(attempt, policy) : Effect.retry(attempt, policy)
    const fiber = yield* Effect.forkChild(Effect.exit(Effect.provideService(retried, Random.Random, random)))
    // Far beyond any schedule here: every sleep registered on the way runs in order.
    yield* TestClock.adjust("1 day")
    const exit = yield* Fiber.join(fiber)
    return { times, exit }
  }).pipe(Effect.provide(TestClock.layer()))

const gaps = (times: ReadonlyArray<number>) => times.slice(1).map((time, i) => time - times[i]!)

describe("Retry.backoff", () => {
  it.effect("development: 4 attempts, 1 s, 2 s, 4 s apart plus the jitter drawn", () =>
    Effect.gen(function* () {
      const { times, exit } = yield* attemptTimes(Profile.development, [], jitterSource([0.25, 0.5, 0.999]))
      assert.isTrue(Exit.isFailure(exit))
      assert.deepStrictEqual(times, [0, 1250, 1250 + 2500, 1250 + 2500 + 4999])
    })
  )

  it.effect("production: 6 attempts, 1, 2, 4, 8, 16 s apart plus the jitter drawn", () =>
    Effect.gen(function* () {
      const { times } = yield* attemptTimes(Profile.production, [], jitterSource([0]))
      assert.deepStrictEqual(gaps(times), [1000, 2000, 4000, 8000, 16000])
    })
  )

  it.effect("with effect's default random source every gap lies within the jitter bounds", () =>
    Effect.gen(function* () {
      for (const profile of [Profile.development, Profile.production]) {
        const { times } = yield* attemptTimes(profile, [], Random.Random.defaultValue())
        assert.strictEqual(times.length, profile.retriesAfterFirst + 1)
        gaps(times).forEach((gap, n) => {
          assert.isAtLeast(gap, 1000 * 2 ** n)
          assert.isBelow(gap, 1000 * 2 ** n + 1000)
        })
      }
    })
  )

  it.effect("a failure that is not retryable stops at once, attempts remaining or not", () =>
    Effect.gen(function* () {
      const { times, exit } = yield* attemptTimes(Profile.production, ["retryable", "fatal"], jitterSource([0]))
      assert.deepStrictEqual(times, [0, 1000])
      assert.isTrue(
        Exit.isFailure(exit) && Exit.findErrorOption(exit).pipe((o) => o._tag === "Some" && !o.value.retryable)
      )
    })
  )

  it("rejects invalid options with a message naming the function, the rule and the value", () => {
    assert.throws(
      () => Retry.backoff({ retriesAfterFirst: -1, backoffBase: "1 second", backoffJitter: "1 second" }),
      "Retry.backoff: retriesAfterFirst must be an integer >= 0, got -1"
    )
    assert.throws(
      () => Retry.backoff({ retriesAfterFirst: 3, backoffBase: 0, backoffJitter: "1 second" }),
      "Retry.backoff: backoffBase must be a positive finite duration, got 0"
    )
  })

  it("property: for any jitter source, the nth delay is base × 2^n + its draw × jitter, and it stops where the outcomes say", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 8 }),
        fc.integer({ min: 1, max: 5000 }),
        fc.integer({ min: 0, max: 2000 }),
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 10 }),
        fc.array(fc.constantFrom("ok" as const, "retryable" as const, "fatal" as const), { maxLength: 10 }),
        async (retriesAfterFirst, base, jitter, draws, outcomes) => {
          const { times } = await Effect.runPromise(
            attemptTimes({ retriesAfterFirst, backoffBase: base, backoffJitter: jitter }, outcomes, jitterSource(draws))
          )
          // Durations have nanosecond resolution and times are float sums: allow one nanosecond, nothing more.
          const epsilon = 1e-6
          gaps(times).forEach((gap, n) => {
            // One draw per delay, in order; the source repeats its last draw.
            const draw = draws[Math.min(n, draws.length - 1)]!
            assert.closeTo(gap, base * 2 ** n + draw * jitter, epsilon, `delay ${n}`)
          })
          // It stops exactly where the outcomes say it must.
          const firstStop = outcomes.findIndex((outcome) => outcome !== "retryable")
          const expected = Math.min(firstStop === -1 ? Number.POSITIVE_INFINITY : firstStop + 1, retriesAfterFirst + 1)
          assert.strictEqual(times.length, expected)
        }
      ),
      { numRuns: 300 }
    )
  })

  it("property: retryOnFailure behaves exactly as Effect.retry with the same schedule", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 6 }),
        fc.array(fc.constantFrom("ok" as const, "retryable" as const, "fatal" as const), { maxLength: 8 }),
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 8 }),
        async (retriesAfterFirst, outcomes, draws) => {
          const options = { retriesAfterFirst, backoffBase: 100, backoffJitter: 50 }
          const lazy = await Effect.runPromise(attemptTimes(options, outcomes, jitterSource(draws), "lazy"))
          const eager = await Effect.runPromise(attemptTimes(options, outcomes, jitterSource(draws), "Effect.retry"))
          assert.deepStrictEqual(lazy.times, eager.times)
          assert.deepStrictEqual(lazy.exit, eager.exit)
        }
      ),
      { numRuns: 300 }
    )
  })
})
