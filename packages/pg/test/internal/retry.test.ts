import { assert, describe, it } from "@effect/vitest"
import { Breaker, Profile, RetryBudget, Transient } from "@sturdy/resilience"
import { Clock, Duration, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as PgFailure from "../../src/PgFailure.ts"
import { RetryPolicy, wakeBatch, wakeInTurns } from "../../src/internal/retry.ts"

const profile = (retriesAfterFirst: number): Profile.Profile => ({
  ...Profile.production,
  retriesAfterFirst,
  backoffBase: Duration.seconds(1),
  backoffJitter: Duration.zero
})
const rejection = new Breaker.CircuitOpen({ key: "db", retryAfter: Duration.seconds(30) })
const transient = new PgFailure.TransientError({
  reason: new Transient.AttemptTimeout({ phase: "connect", timeout: Duration.seconds(1) })
})

/** An attempt that fails with `first`, then succeeds; counts its runs. */
const failingOnce = (first: unknown) => {
  let runs = 0
  const attempt = Effect.suspend(() => (++runs === 1 ? Effect.fail(first) : Effect.succeed("ok")))
  return { attempt, runs: () => runs }
}

/** Lets the retrying fiber run until it waits for the breaker to close (bounded: fails instead of spinning). */
const untilWaiting = (policy: RetryPolicy) =>
  Effect.gen(function* () {
    for (let i = 0; i < 1000 && policy.waitingForClose === 0; i++) yield* Effect.yieldNow
    assert.strictEqual(policy.waitingForClose, 1, "the rejected call waits for the breaker")
  })

describe("RetryPolicy", () => {
  it("a rejected first attempt ends the call when failing fast or with no retries", () => {
    const table = (["fail-fast", "wait-and-retry"] as const).flatMap((when) =>
      [0, 3].map((retries) => [when, retries, new RetryPolicy(profile(retries), when).rejectionEndsTheCall])
    )
    assert.deepStrictEqual(table, [
      ["fail-fast", 0, true],
      ["fail-fast", 3, true],
      ["wait-and-retry", 0, true],
      ["wait-and-retry", 3, false]
    ])
  })

  it("retries transient failures, and rejections only when waiting for the circuit", () => {
    const fast = new RetryPolicy(profile(3), "fail-fast")
    const waiting = new RetryPolicy(profile(3), "wait-and-retry")
    assert.deepStrictEqual(
      [fast.retryable(transient), fast.retryable(rejection), waiting.retryable(rejection), waiting.retryable("x")],
      [true, false, true, false]
    )
  })

  it.effect("a rejected call retries as soon as the breaker closes, without waiting out its backoff", () =>
    Effect.gen(function* () {
      const policy = new RetryPolicy(profile(3), "wait-and-retry")
      const { attempt, runs } = failingOnce(rejection)
      const fiber = yield* Effect.forkChild(Effect.retry(attempt, policy.schedule))
      yield* untilWaiting(policy)
      assert.strictEqual(fiber.pollUnsafe(), undefined)
      policy.closed()
      assert.strictEqual(yield* Fiber.join(fiber), "ok")
      assert.deepStrictEqual([runs(), policy.waitingForClose, yield* Clock.currentTimeMillis], [2, 0, 0])
    })
  )

  it.effect("a rejected call whose breaker stays open retries after its own backoff, and stops waiting", () =>
    Effect.gen(function* () {
      const policy = new RetryPolicy(profile(3), "wait-and-retry")
      const { attempt, runs } = failingOnce(rejection)
      const fiber = yield* Effect.forkChild(Effect.retry(attempt, policy.schedule))
      yield* untilWaiting(policy)
      yield* TestClock.adjust("999 millis")
      assert.deepStrictEqual([fiber.pollUnsafe(), runs()], [undefined, 1])
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Fiber.join(fiber), "ok")
      assert.deepStrictEqual([runs(), policy.waitingForClose], [2, 0])
    })
  )

  it.effect("a transient failure waits its backoff: the breaker closing does not shorten it", () =>
    Effect.gen(function* () {
      const policy = new RetryPolicy(profile(3), "wait-and-retry")
      const { attempt, runs } = failingOnce(transient)
      const fiber = yield* Effect.forkChild(Effect.retry(attempt, policy.schedule))
      yield* TestClock.adjust("999 millis")
      policy.closed()
      yield* Effect.yieldNow
      assert.deepStrictEqual([fiber.pollUnsafe(), runs(), policy.waitingForClose], [undefined, 1, 0])
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Fiber.join(fiber), "ok")
    })
  )

  it.effect("the breaker closing wakes the waiting calls oldest first, a batch per turn of the event loop", () =>
    Effect.gen(function* () {
      const woken: Array<number> = []
      const wakes = Array.from({ length: 2 * wakeBatch + 5 }, (_, n) => () => woken.push(n))
      wakeInTurns(wakes)
      // The first batch at once: the loop is free to open connections and answer them before the next.
      const atOnce = woken.length
      const turn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
      yield* turn
      const afterOneTurn = woken.length
      for (let i = 0; i < 10 && woken.length < wakes.length; i++) yield* turn
      assert.deepStrictEqual(
        [atOnce, afterOneTurn, woken],
        [wakeBatch, 2 * wakeBatch, Array.from({ length: wakes.length }, (_, n) => n)]
      )
    })
  )

  describe("with a retry budget", () => {
    /** A budget with its 100 starting tokens spent and no floor: only deposits pay for retries. */
    const spent = () => {
      const budget = RetryBudget.make({ ratio: 0.1, minRetriesPerSecond: 0 }, 0)
      while (budget.tryAcquire(0)) {}
      return budget
    }

    it.effect(
      "a refused retry ends the call at once with RetryBudgetExhausted carrying the last transient reason",
      () =>
        Effect.gen(function* () {
          const budget = spent()
          const policy = new RetryPolicy(profile(3), "wait-and-retry", budget)
          const { attempt, runs } = failingOnce(transient)
          const exit = yield* Effect.exit(Effect.retry(attempt, policy.schedule))
          assert.deepStrictEqual(exit, Exit.fail(new PgFailure.RetryBudgetExhausted({ reason: transient.reason })))
          assert.deepStrictEqual([runs(), budget.refused, yield* Clock.currentTimeMillis], [1, 2, 0])
        })
    )

    it.effect("a token from the deposits pays for the retry, which then waits its backoff", () =>
      Effect.gen(function* () {
        const budget = spent()
        for (let i = 0; i < 10; i++) budget.deposit()
        const policy = new RetryPolicy(profile(3), "wait-and-retry", budget)
        const { attempt, runs } = failingOnce(transient)
        const fiber = yield* Effect.forkChild(Effect.retry(attempt, policy.schedule))
        yield* TestClock.adjust("1 second")
        assert.strictEqual(yield* Fiber.join(fiber), "ok")
        assert.deepStrictEqual([runs(), budget.refused, budget.available(1000) < 1e-9], [2, 1, true])
      })
    )

    it.effect("a retry after a rejection by the open circuit costs no token", () =>
      Effect.gen(function* () {
        const budget = spent()
        const policy = new RetryPolicy(profile(3), "wait-and-retry", budget)
        const { attempt, runs } = failingOnce(rejection)
        const fiber = yield* Effect.forkChild(Effect.retry(attempt, policy.schedule))
        yield* untilWaiting(policy)
        policy.closed()
        assert.strictEqual(yield* Fiber.join(fiber), "ok")
        assert.deepStrictEqual([runs(), budget.refused], [2, 1])
      })
    )

    it.effect("the last attempt's failure asks for no token: the schedule has no retry left", () =>
      Effect.gen(function* () {
        const budget = RetryBudget.make({ ratio: 0.1, minRetriesPerSecond: 0 }, 0)
        const policy = new RetryPolicy(profile(1), "wait-and-retry", budget)
        const fiber = yield* Effect.forkChild(Effect.exit(Effect.retry(Effect.fail(transient), policy.schedule)))
        yield* TestClock.adjust("1 second")
        assert.deepStrictEqual(yield* Fiber.join(fiber), Exit.fail(transient))
        assert.deepStrictEqual([budget.available(1000), budget.refused], [99, 0])
      })
    )
  })
})
