import { assert, describe, it } from "@effect/vitest"
import { Eventually } from "@sturdy/testing"
import { Cause, Clock, Data, Duration, Effect, Exit, Fiber, Predicate, Result } from "effect"
import { TestClock } from "effect/testing"

class Refused extends Data.TaggedError("Refused")<{ readonly port: number }> {}

/**
 * A check that plays `outcomes` in order (repeating the last) and records the virtual time at which each run
 * started: a number or `undefined` is returned, `"refused"` fails with `Refused`, `{ after, value }` returns
 * `value` after `after` ms, `"hang"` never returns, `"die"` dies.
 */
type Outcome = number | undefined | "refused" | "hang" | "die" | { readonly after: number; readonly value: number }

const scripted = (outcomes: ReadonlyArray<Outcome>) => {
  const started: Array<number> = []
  const check = Effect.gen(function* () {
    const outcome = outcomes[Math.min(started.length, outcomes.length - 1)]
    started.push(yield* Clock.currentTimeMillis)
    if (outcome === "refused") return yield* new Refused({ port: 5432 })
    if (outcome === "hang") return yield* Effect.never
    if (outcome === "die") return yield* Effect.die(new Error("a bug in the check"))
    if (typeof outcome === "object") return yield* Effect.as(Effect.sleep(outcome.after), outcome.value)
    return outcome
  })
  return { check, started }
}

describe("Eventually.until", () => {
  it.effect("a check that passes at once: its value, one run, no time spent", () =>
    Effect.gen(function* () {
      const { check, started } = scripted([7])
      assert.strictEqual(yield* Eventually.until(check, { what: "seven", timeout: "1 second" }), 7)
      assert.deepStrictEqual(started, [0])
    })
  )

  it.effect("runs again every interval after a typed failure, until it succeeds", () =>
    Effect.gen(function* () {
      const { check, started } = scripted(["refused", "refused", 3])
      const fiber = yield* Effect.forkChild(Eventually.until(check, { what: "a connection", timeout: "1 second" }))
      yield* TestClock.adjust(39)
      assert.deepStrictEqual(started, [0, 20])
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust(1)
      assert.strictEqual(yield* Fiber.join(fiber), 3)
      assert.deepStrictEqual(started, [0, 20, 40])
    })
  )

  it.effect("with accept, runs again until the value satisfies it, and narrows to what a refinement accepts", () =>
    Effect.gen(function* () {
      const { check, started } = scripted([undefined, 1, 2, 5])
      const fiber = yield* Effect.forkChild(
        Eventually.until(check, {
          what: "a count of at least 2",
          timeout: "1 second",
          interval: "100 millis",
          accept: (n): n is number => Predicate.isNumber(n) && n >= 2
        })
      )
      yield* TestClock.adjust(200)
      // A number, not number | undefined: the refinement's type.
      const count: number = yield* Fiber.join(fiber)
      assert.strictEqual(count, 2)
      assert.deepStrictEqual(started, [0, 100, 200])
    })
  )

  it.effect("the interval is counted from the end of a run", () =>
    Effect.gen(function* () {
      const { check, started } = scripted([
        { after: 30, value: 0 },
        { after: 30, value: 0 },
        { after: 30, value: 1 }
      ])
      const fiber = yield* Effect.forkChild(
        Eventually.until(check, { what: "one", timeout: "1 second", interval: "100 millis", accept: (n) => n === 1 })
      )
      yield* TestClock.adjust(290)
      assert.strictEqual(yield* Fiber.join(fiber), 1)
      assert.deepStrictEqual(started, [0, 130, 260])
    })
  )

  it.effect("when the timeout passes first, fails with Timeout naming what it waited for and the last value", () =>
    Effect.gen(function* () {
      const { check, started } = scripted([0])
      const fiber = yield* Effect.forkChild(
        Effect.flip(
          Eventually.until(check, {
            what: "the standby to have the row",
            timeout: "1 second",
            interval: "300 millis",
            accept: (n) => (n ?? 0) > 0
          })
        )
      )
      yield* TestClock.adjust(999)
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust(1)
      const timeout = yield* Fiber.join(fiber)
      assert.deepStrictEqual(started, [0, 300, 600, 900])
      assert.instanceOf(timeout, Eventually.Timeout)
      assert.strictEqual(timeout._tag, "EventuallyTimeout")
      assert.strictEqual(timeout.what, "the standby to have the row")
      assert.strictEqual(Duration.toMillis(timeout.timeout), 1000)
      assert.strictEqual(timeout.checks, 4)
      assert.deepStrictEqual(timeout.last, Result.succeed(0))
      assert.strictEqual(
        timeout.message,
        "Timed out after 1s waiting for the standby to have the row: 4 checks, the last returned 0"
      )
    })
  )

  it.effect("the last outcome may be a typed failure, shown with its fields", () =>
    Effect.gen(function* () {
      const { check } = scripted(["refused"])
      const fiber = yield* Effect.forkChild(
        Effect.flip(Eventually.until(check, { what: "a connection", timeout: "50 millis" }))
      )
      yield* TestClock.adjust(50)
      const timeout = yield* Fiber.join(fiber)
      assert.strictEqual(timeout.checks, 3)
      assert.deepStrictEqual(timeout.last, Result.fail(new Refused({ port: 5432 })))
      assert.strictEqual(
        timeout.message,
        'Timed out after 50ms waiting for a connection: 3 checks, the last failed with Refused {"port":5432}'
      )
    })
  )

  it.effect("a run still going at the deadline is interrupted; the failure reports the last run that finished", () =>
    Effect.gen(function* () {
      const { check, started } = scripted([0, "hang"])
      const fiber = yield* Effect.forkChild(
        Effect.flip(
          Eventually.until(check, { what: "a positive count", timeout: "1 second", accept: (n) => (n ?? 0) > 0 })
        )
      )
      yield* TestClock.adjust(1000)
      const timeout = yield* Fiber.join(fiber)
      assert.deepStrictEqual(started, [0, 20])
      assert.deepStrictEqual([timeout.checks, timeout.last], [1, Result.succeed(0)])
      assert.strictEqual(
        timeout.message,
        "Timed out after 1s waiting for a positive count: 1 check, the last returned 0"
      )
    })
  )

  it.effect("a first run that never returns: no check finished", () =>
    Effect.gen(function* () {
      const { check } = scripted(["hang"])
      const fiber = yield* Effect.forkChild(
        Effect.flip(Eventually.until(check, { what: "an answer", timeout: "2 seconds" }))
      )
      yield* TestClock.adjust("2 seconds")
      const timeout = yield* Fiber.join(fiber)
      assert.deepStrictEqual([timeout.checks, timeout.last], [0, undefined])
      assert.strictEqual(timeout.message, "Timed out after 2s waiting for an answer: no check finished")
    })
  )

  it.effect("a defect is not retried: it ends the wait at once", () =>
    Effect.gen(function* () {
      const { check, started } = scripted(["die", 1])
      const exit = yield* Effect.exit(Eventually.until(check, { what: "one", timeout: "1 second" }))
      assert.deepStrictEqual(started, [0])
      assert.isTrue(Exit.isFailure(exit) && Cause.hasDies(exit.cause))
      assert.strictEqual(
        (Cause.squash((exit as Exit.Failure<unknown, unknown>).cause) as Error).message,
        "a bug in the check"
      )
    })
  )

  it.effect("a long value is cut in the message", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.forkChild(
        Effect.flip(
          Eventually.until(Effect.succeed("x".repeat(2000)), {
            what: "nothing",
            timeout: "10 millis",
            accept: () => false
          })
        )
      )
      yield* TestClock.adjust(10)
      const timeout = yield* Fiber.join(fiber)
      assert.strictEqual(
        timeout.message,
        `Timed out after 10ms waiting for nothing: 1 check, the last returned "${"x".repeat(499)}...`
      )
    })
  )

  it("rejects a timeout or interval that is not a positive finite duration, when called", () => {
    const check = Effect.succeed(1)
    assert.throws(
      () => Eventually.until(check, { what: "one", timeout: 0 }),
      RangeError,
      "Eventually.until: timeout must be a positive finite duration, got 0"
    )
    assert.throws(
      () => Eventually.until(check, { what: "one", timeout: "1 second", interval: "Infinity" }),
      RangeError,
      "Eventually.until: interval must be a positive finite duration, got Infinity"
    )
  })
})

describe("Eventually.holds", () => {
  it.effect("runs the condition until it yields true", () =>
    Effect.gen(function* () {
      let runs = 0
      const fiber = yield* Effect.forkChild(
        Eventually.holds(
          Effect.sync(() => ++runs === 3),
          { what: "the third run", timeout: "1 second", interval: "5 millis" }
        )
      )
      yield* TestClock.adjust(10)
      yield* Fiber.join(fiber)
      assert.strictEqual(runs, 3)
    })
  )

  it.effect("fails with Timeout when it never does, the last value false", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.forkChild(
        Effect.flip(
          Eventually.holds(Effect.succeed(false), {
            what: "readiness 200",
            timeout: "100 millis",
            interval: "50 millis"
          })
        )
      )
      yield* TestClock.adjust(100)
      const timeout = yield* Fiber.join(fiber)
      assert.strictEqual(
        timeout.message,
        "Timed out after 100ms waiting for readiness 200: 2 checks, the last returned false"
      )
    })
  )
})
