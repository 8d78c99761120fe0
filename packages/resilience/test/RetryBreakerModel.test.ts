/**
 * Model-based test: retry outermost, breaker inside it, as ResilientPg
 * composes them. A small reference model, written from the specification and
 * not from the implementation, predicts every call's result, how long it
 * takes and the breaker's state afterwards; the real Retry and both real
 * Breaker layers, under TestClock, must agree step by step.
 */
import { assert, describe, it } from "@effect/vitest"
import { Breaker, Retry } from "@sturdy/resilience"
import { Effect, Exit, Fiber, Layer, Random } from "effect"
import { TestClock } from "effect/testing"
import * as fc from "fast-check"
import { layers } from "./breakerLayers.ts"

// transient: retried, counts against the breaker (a refused connection).
// unknown: not retried, counts against the breaker (a write lost in flight).
// fatal: not retried, the server answered, so a success for the breaker (a syntax error).
type AttemptOutcome = "ok" | "transient" | "unknown" | "fatal"
type Step =
  | { readonly _tag: "Call"; readonly outcomes: ReadonlyArray<AttemptOutcome> }
  | {
      readonly _tag: "Advance"
      readonly millis: number
    }
interface Config {
  readonly failures: number
  readonly openMillis: number
  readonly retriesAfterFirst: number
  readonly baseMillis: number
}
type Result = "ok" | "transient" | "unknown" | "fatal" | "rejected"

// --- The reference model -----------------------------------------------------

interface Model {
  state: "Closed" | "Open" | "HalfOpen"
  streak: number
  openUntil: number
  now: number
}

const modelCall = (m: Model, c: Config, outcomes: ReadonlyArray<AttemptOutcome>) => {
  const start = m.now
  for (let attempt = 1; ; attempt++) {
    if (m.state === "Open") {
      if (m.now < m.openUntil) return { result: "rejected" as Result, attempts: attempt - 1, elapsed: m.now - start }
      m.state = "HalfOpen"
    }
    const outcome = outcomes[attempt - 1] ?? "transient"
    const failed = outcome === "transient" || outcome === "unknown"
    if (m.state === "HalfOpen" || (failed && ++m.streak >= c.failures)) {
      m.state = failed ? "Open" : "Closed"
      m.openUntil = m.now + c.openMillis
      m.streak = 0
    } else if (!failed) {
      m.streak = 0
    }
    if (outcome !== "transient" || attempt > c.retriesAfterFirst) {
      return { result: outcome as Result, attempts: attempt, elapsed: m.now - start }
    }
    m.now += c.baseMillis * 2 ** (attempt - 1)
  }
}

// --- The real thing ----------------------------------------------------------

class Failed {
  readonly _tag = "Failed"
  readonly kind: "transient" | "unknown" | "fatal"
  constructor(kind: "transient" | "unknown" | "fatal") {
    this.kind = kind
  }
}

const noJitter: Random.Random = { nextDoubleUnsafe: () => 0, nextIntUnsafe: () => 0 }

const realCall = (breaker: Breaker.Service, c: Config, outcomes: ReadonlyArray<AttemptOutcome>) => {
  let attempts = 0
  const attempt = Effect.suspend(() => {
    const outcome = outcomes[attempts++] ?? "transient"
    return outcome === "ok" ? Effect.succeed("ok" as const) : Effect.fail(new Failed(outcome))
  })
  const outcome = (exit: Exit.Exit<unknown, Failed>): Breaker.Outcome => {
    const error = Exit.findErrorOption(exit)
    return error._tag === "Some" && error.value.kind !== "fatal" ? "Failure" : "Success"
  }
  const policy = Retry.schedule(
    { retriesAfterFirst: c.retriesAfterFirst, backoffBase: c.baseMillis, backoffJitter: 0 },
    (error: Failed | Breaker.Rejection) => error._tag === "Failed" && error.kind === "transient"
  )
  return Retry.retryOnFailure(breaker.execute("db", attempt, outcome), policy).pipe(
    Effect.map((): Result => "ok"),
    Effect.catch((error) => Effect.succeed<Result>(error._tag === "Failed" ? error.kind : "rejected")),
    Effect.map((result) => ({ result, attempts })),
    Effect.provideService(Random.Random, noJitter)
  )
}

const agree = (
  makeLayer: (options: Breaker.Options) => Layer.Layer<Breaker.Breaker>,
  c: Config,
  steps: ReadonlyArray<Step>
) =>
  Effect.gen(function* () {
    const breaker = yield* Breaker.Breaker
    const model: Model = { state: "Closed", streak: 0, openUntil: 0, now: 0 }
    for (const [i, step] of steps.entries()) {
      if (step._tag === "Advance") {
        model.now += step.millis
        yield* TestClock.adjust(step.millis)
      } else {
        const expected = modelCall(model, c, step.outcomes)
        const fiber = yield* Effect.forkChild(realCall(breaker, c, step.outcomes))
        // Exactly the backoff the model says: a real call that needs more (or less) time disagrees.
        yield* TestClock.adjust(expected.elapsed)
        const actual = fiber.pollUnsafe()
        assert.isDefined(actual, `step ${i}: the call had not finished after the model's ${expected.elapsed} ms`)
        assert.isTrue(actual !== undefined && Exit.isSuccess(actual))
        if (actual !== undefined && Exit.isSuccess(actual)) {
          assert.deepStrictEqual(actual.value, { result: expected.result, attempts: expected.attempts }, `step ${i}`)
        }
        yield* Fiber.interrupt(fiber)
      }
      const state = yield* breaker.state("db")
      assert.strictEqual(state._tag, model.state, `step ${i}: breaker state`)
    }
  }).pipe(
    Effect.provide(makeLayer({ tripPolicy: Breaker.consecutive(c.failures), openDuration: c.openMillis })),
    Effect.provide(TestClock.layer())
  )

const outcome = fc.constantFrom<AttemptOutcome>("ok", "transient", "transient", "transient", "unknown", "fatal")
const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .array(outcome, { minLength: 1, maxLength: 7 })
      .map((outcomes) => ({ _tag: "Call" as const, outcomes }))
  },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 90_000 }).map((millis) => ({ _tag: "Advance" as const, millis })) }
)
const config: fc.Arbitrary<Config> = fc.oneof(
  // The seed's policy and the development profile's retry.
  fc.constant({ failures: 5, openMillis: 60_000, retriesAfterFirst: 3, baseMillis: 1000 }),
  fc.record({
    failures: fc.integer({ min: 1, max: 6 }),
    openMillis: fc.integer({ min: 1, max: 60_000 }),
    retriesAfterFirst: fc.integer({ min: 0, max: 5 }),
    baseMillis: fc.integer({ min: 1, max: 5000 })
  })
)

describe("retry + breaker agree with the reference model", () => {
  for (const [name, makeLayer] of Object.entries(layers)) {
    it(`${name}: 500 generated sequences of calls, outcomes and clock advances`, async () => {
      await fc.assert(
        fc.asyncProperty(config, fc.array(step, { minLength: 1, maxLength: 30 }), (c, steps) =>
          Effect.runPromise(agree(makeLayer, c, steps))
        ),
        { numRuns: 500 }
      )
    }, 120_000)
  }
})
