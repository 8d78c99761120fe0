import { assert, describe, it } from "@effect/vitest"
import { RetryBudget } from "@sturdy/resilience"
import * as fc from "fast-check"

describe("RetryBudget", () => {
  it("starts full: ten seconds of the floor, at least 100 tokens", () => {
    const table = [
      [0.1, 1],
      [0.1, 0],
      [0.2, 20],
      [0, 0.05]
    ].map(([ratio, minRetriesPerSecond]) => {
      const budget = RetryBudget.make({ ratio, minRetriesPerSecond }, 0)
      return [ratio, minRetriesPerSecond, budget.capacity, budget.available(0)]
    })
    assert.deepStrictEqual(table, [
      [0.1, 1, 100, 100],
      [0.1, 0, 100, 100],
      [0.2, 20, 200, 200],
      [0, 0.05, 100, 100]
    ])
  })

  it("a retry takes a token; an empty bucket refuses and counts the refusal", () => {
    const budget = RetryBudget.make({ ratio: 0.1, minRetriesPerSecond: 0 }, 0)
    for (let i = 0; i < 100; i++) assert.isTrue(budget.tryAcquire(0))
    assert.deepStrictEqual([budget.tryAcquire(0), budget.refused], [false, 1])
    // Ten successes pay for one retry.
    for (let i = 0; i < 9; i++) budget.deposit()
    assert.isFalse(budget.tryAcquire(0))
    budget.deposit()
    assert.deepStrictEqual([budget.tryAcquire(0), budget.refused], [true, 2])
  })

  it("report: deposits and spending since the last report; settle: never more than the fleet's balance", () => {
    const budget = RetryBudget.make({ ratio: 0.1, minRetriesPerSecond: 1 }, 0)
    for (let i = 0; i < 20; i++) budget.deposit()
    for (let i = 0; i < 3; i++) assert.isTrue(budget.tryAcquire(0))
    assert.isFalse(budget.tryAcquire(0, 1000), "refused: not spent")
    const first = budget.report()
    assert.deepStrictEqual([Math.round(first.deposited * 10) / 10, first.spent], [2, 3])
    assert.deepStrictEqual(budget.report(), { deposited: 0, spent: 0 })
    // The fleet holds 4.5: this process too. A fleet balance above its own, or overdrawn, changes it to no more than
    // its own and no less than 0.
    budget.settle(4.5, 0)
    assert.strictEqual(budget.available(0), 4.5)
    budget.settle(50, 0)
    assert.strictEqual(budget.available(0), 4.5)
    budget.settle(-7, 0)
    assert.strictEqual(budget.available(0), 0)
    // Its own floor still refills from there.
    assert.strictEqual(budget.available(2000), 2)
  })

  it("the floor refills over time, never beyond the capacity, and time going backwards adds nothing", () => {
    const budget = RetryBudget.make({ ratio: 0.1, minRetriesPerSecond: 1 }, 1000)
    for (let i = 0; i < 100; i++) assert.isTrue(budget.tryAcquire(1000))
    assert.isFalse(budget.tryAcquire(1000))
    assert.isFalse(budget.tryAcquire(500))
    assert.strictEqual(budget.available(1500), 0.5)
    assert.isTrue(budget.tryAcquire(2000))
    assert.strictEqual(budget.available(1_000_000), 100)
  })

  it("an isolated failure in a healthy period is always retried", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 100, noNaN: true }),
        fc.array(fc.nat({ max: 10_000 }), { maxLength: 50 }),
        (ratio, minRetriesPerSecond, traffic) => {
          const budget = RetryBudget.make({ ratio, minRetriesPerSecond }, 0)
          let now = 0
          for (const gap of traffic) {
            now += gap
            budget.deposit()
          }
          // One failure, and its five retries (the production profile).
          return [0, 1, 2, 3, 4].every(() => budget.tryAcquire(now))
        }
      )
    )
  })

  it("over any run, retries <= ratio x successes + capacity + floor x elapsed", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 20, noNaN: true }),
        fc.array(fc.record({ gap: fc.nat({ max: 2000 }), retry: fc.boolean() }), { maxLength: 500 }),
        (ratio, minRetriesPerSecond, events) => {
          const budget = RetryBudget.make({ ratio, minRetriesPerSecond }, 0)
          let now = 0
          let successes = 0
          let retries = 0
          for (const { gap, retry } of events) {
            now += gap
            if (retry) retries += budget.tryAcquire(now) ? 1 : 0
            else {
              successes++
              budget.deposit()
            }
          }
          return retries <= ratio * successes + budget.capacity + (minRetriesPerSecond * now) / 1000 + 1e-6
        }
      )
    )
  })

  it("an outage after a healthy minute: every call fails, retries fall to the floor (10 s at 100 calls a second)", () => {
    const budget = RetryBudget.make(RetryBudget.defaults, 0)
    for (let i = 0; i < 6000; i++) budget.deposit()
    let first = 0
    let attempts = 0
    for (let now = 60_000; now < 70_000; now += 10) {
      first++
      attempts++
      for (let retry = 0; retry < 3 && budget.tryAcquire(now); retry++) attempts++
    }
    // The full bucket (100) and the floor (1 a second: 9 whole tokens in the 9.7 s after the first refusal).
    assert.deepStrictEqual([first, attempts, budget.refused], [1000, 1109, 967])
  })

  it("an overload: one call in two fails; retries stay within 10 % of first attempts, plus the constants", () => {
    const budget = RetryBudget.make(RetryBudget.defaults, 0)
    let first = 0
    let retries = 0
    for (let now = 0; now < 10_000; now++) {
      first++
      if (now % 2 === 0) budget.deposit()
      else if (budget.tryAcquire(now)) retries++
    }
    assert.isAtMost(retries, 0.1 * first + 100 + 10)
    assert.isAtLeast(retries, 0.05 * first)
  })

  it("refuses invalid options with a RangeError naming the option and its value", () => {
    const messages = [
      { ratio: 1.5 },
      { ratio: Number.NaN },
      { minRetriesPerSecond: -1 },
      { minRetriesPerSecond: Infinity }
    ].map((options) => {
      try {
        RetryBudget.make(options, 0)
        return "accepted"
      } catch (error) {
        return `${(error as Error).name}: ${(error as Error).message}`
      }
    })
    assert.deepStrictEqual(messages, [
      "RangeError: RetryBudget.make: ratio must be a number in [0, 1], got 1.5",
      "RangeError: RetryBudget.make: ratio must be a number in [0, 1], got NaN",
      "RangeError: RetryBudget.make: minRetriesPerSecond must be a finite number >= 0, got -1",
      "RangeError: RetryBudget.make: minRetriesPerSecond must be a finite number >= 0, got Infinity"
    ])
  })
})
