import { assert, describe, it } from "@effect/vitest"
import { Breaker } from "@sturdy/resilience"
import { Deferred, Duration, Effect, Exit, Fiber, Layer, Stream } from "effect"
import { TestClock } from "effect/testing"
import { layers } from "./breakerLayers.ts"

const key = "db.internal:5432/app"

const seedPolicy: Breaker.Options = { tripPolicy: Breaker.consecutive(5), openDuration: "60 seconds" }

const succeed = Effect.succeed("ok")
const fail = Effect.fail("down" as const)
const classify = (exit: Exit.Exit<unknown, unknown>): Breaker.Outcome => (Exit.isSuccess(exit) ? "Success" : "Failure")

/** Runs a call through the breaker; returns "ok", "failed" or the rejection. */
const call = (breaker: Breaker.Service, effect: Effect.Effect<string, "down">) =>
  breaker.execute(key, effect, classify).pipe(
    Effect.map(() => "ok" as const),
    Effect.catch((error) => Effect.succeed(error === "down" ? ("failed" as const) : error))
  )

const stateTag = (breaker: Breaker.Service) => Effect.map(breaker.state(key), (state) => state._tag)

const suite = (name: string, makeLayer: (options: Breaker.Options) => Layer.Layer<Breaker.Breaker>) =>
  describe(`Breaker (${name})`, () => {
    const withBreaker = <A, E>(options: Breaker.Options, f: (breaker: Breaker.Service) => Effect.Effect<A, E>) =>
      Effect.gen(function* () {
        return yield* f(yield* Breaker.Breaker)
      }).pipe(Effect.provide(makeLayer(options)), Effect.provide(TestClock.layer()))

    it.effect("4 failures keep it closed, the 5th opens it, a success in between resets the streak", () =>
      withBreaker(seedPolicy, (breaker) =>
        Effect.gen(function* () {
          for (let i = 0; i < 4; i++) assert.strictEqual(yield* call(breaker, fail), "failed")
          assert.strictEqual(yield* stateTag(breaker), "Closed")
          assert.strictEqual(yield* call(breaker, succeed), "ok")
          for (let i = 0; i < 4; i++) assert.strictEqual(yield* call(breaker, fail), "failed")
          assert.strictEqual(yield* stateTag(breaker), "Closed")
          assert.strictEqual(yield* call(breaker, fail), "failed")
          assert.strictEqual(yield* stateTag(breaker), "Open")
        })
      )
    )

    it.effect("while open, calls are rejected at once with retryAfter, without running", () =>
      withBreaker(seedPolicy, (breaker) =>
        Effect.gen(function* () {
          for (let i = 0; i < 5; i++) yield* call(breaker, fail)
          yield* TestClock.adjust("10 seconds")
          let ran = false
          const result = yield* call(breaker, Effect.sync(() => (ran = true)).pipe(Effect.as("ok")))
          assert.isFalse(ran)
          const rejection = result as Breaker.CircuitOpen
          assert.strictEqual(rejection._tag, "CircuitOpen")
          assert.strictEqual(rejection.key, key)
          assert.strictEqual(Duration.toMillis(rejection.retryAfter), 50_000)
        })
      )
    )

    it.effect(
      "after 59.999 s still open; at 60 s the next call is the probe, and a second call during it is rejected",
      () =>
        withBreaker(seedPolicy, (breaker) =>
          Effect.gen(function* () {
            for (let i = 0; i < 5; i++) yield* call(breaker, fail)
            yield* TestClock.adjust(59_999)
            assert.strictEqual(((yield* call(breaker, succeed)) as Breaker.CircuitOpen)._tag, "CircuitOpen")
            yield* TestClock.adjust(1)
            const release = yield* Deferred.make<void>()
            const started = yield* Deferred.make<void>()
            const probe = yield* Effect.forkChild(
              call(
                breaker,
                Effect.andThen(Deferred.succeed(started, undefined), Effect.as(Deferred.await(release), "ok"))
              )
            )
            yield* Deferred.await(started)
            assert.strictEqual(yield* stateTag(breaker), "HalfOpen")
            const second = (yield* call(breaker, succeed)) as Breaker.CircuitHalfOpen
            assert.deepStrictEqual([second._tag, second.key, second.isRetryable], ["CircuitHalfOpen", key, true])
            yield* Deferred.succeed(release, undefined)
            assert.strictEqual(yield* Fiber.join(probe), "ok")
            assert.strictEqual(yield* stateTag(breaker), "Closed")
          })
        )
    )

    it.effect("a failed probe reopens it for another full period", () =>
      withBreaker(seedPolicy, (breaker) =>
        Effect.gen(function* () {
          for (let i = 0; i < 5; i++) yield* call(breaker, fail)
          yield* TestClock.adjust("60 seconds")
          assert.strictEqual(yield* call(breaker, fail), "failed")
          assert.strictEqual(yield* stateTag(breaker), "Open")
          yield* TestClock.adjust(59_999)
          assert.strictEqual(((yield* call(breaker, succeed)) as Breaker.CircuitOpen)._tag, "CircuitOpen")
          yield* TestClock.adjust(1)
          assert.strictEqual(yield* call(breaker, succeed), "ok")
          assert.strictEqual(yield* stateTag(breaker), "Closed")
        })
      )
    )

    it.effect("ignored outcomes (interruption, the caller's own errors) never count", () =>
      withBreaker(seedPolicy, (breaker) =>
        Effect.gen(function* () {
          const ignored = (exit: Exit.Exit<unknown, unknown>): Breaker.Outcome =>
            Exit.isSuccess(exit) ? "Success" : "Ignored"
          for (let i = 0; i < 20; i++) {
            yield* Effect.exit(breaker.execute(key, fail, ignored))
            yield* Effect.exit(breaker.execute(key, Effect.interrupt, classify))
          }
          assert.strictEqual(yield* stateTag(breaker), "Closed")
        })
      )
    )

    it.effect("publishes every transition on its stream", () =>
      withBreaker(seedPolicy, (breaker) =>
        Effect.gen(function* () {
          const collected = yield* Effect.forkChild(Stream.runCollect(Stream.take(breaker.transitions, 4)), {
            startImmediately: true
          })
          for (let i = 0; i < 5; i++) yield* call(breaker, fail)
          yield* TestClock.adjust("60 seconds")
          yield* call(breaker, fail)
          yield* TestClock.adjust("60 seconds")
          yield* call(breaker, succeed)
          const transitions = yield* Fiber.join(collected)
          assert.deepStrictEqual(
            transitions.map((t) => `${t.from}->${t.to}`),
            ["Closed->Open", "Open->HalfOpen", "HalfOpen->Open", "Open->HalfOpen"]
          )
        })
      )
    )

    it.effect("an exponential open duration probes after 1 s, 2 s, 4 s... capped, and recovers in about a second", () =>
      withBreaker(
        {
          tripPolicy: Breaker.consecutive(1),
          openDuration: Breaker.exponentialOpenDuration({ from: "1 second", max: "4 seconds" })
        },
        (breaker) =>
          Effect.gen(function* () {
            yield* call(breaker, fail)
            const openFor: Array<number> = []
            for (let i = 0; i < 4; i++) {
              const state = yield* breaker.state(key)
              assert.strictEqual(state._tag, "Open")
              openFor.push(state._tag === "Open" ? Duration.toMillis(state.retryAfter) : -1)
              yield* TestClock.adjust(openFor[i]!)
              yield* call(breaker, fail)
            }
            assert.deepStrictEqual(openFor, [1000, 2000, 4000, 4000])
            yield* TestClock.adjust("4 seconds")
            assert.strictEqual(yield* call(breaker, succeed), "ok")
            assert.strictEqual(yield* stateTag(breaker), "Closed")
          })
      )
    )
  })

suite("in-process", layers["in-process"])
suite("effect CircuitBreaker + memory store", layers["effect CircuitBreaker + memory store"])

describe("Breaker options", () => {
  it.effect("invalid open durations fail construction with a message naming the function and the value", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(
        Effect.scoped(Breaker.make({ tripPolicy: Breaker.consecutive(5), openDuration: 0 }))
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.include(
        String(Exit.isFailure(exit) ? exit.cause : ""),
        "Breaker.make: openDuration must be a positive finite duration, got 0"
      )
      assert.throws(() => Breaker.consecutive(0), "CircuitBreaker.consecutive: failures must be an integer >= 1, got 0")
    })
  )
})

describe("Breaker state machine: recheck and probeSucceeded", () => {
  const policy = Breaker.consecutive(2)
  const openFor = () => 1000
  const opened = (time: { now: number }) => {
    const cell = Breaker.makeCell(key)
    const now = () => time.now
    const first = Breaker.admit(cell, now)
    assert.strictEqual(first._tag, "Admitted")
    const generation = first._tag === "Admitted" ? first.generation : -1
    Breaker.record(cell, generation, "Failure", policy, now, openFor)
    Breaker.record(cell, generation, "Failure", policy, now, openFor)
    assert.strictEqual(cell.state, "Open")
    return { cell, now, generation }
  }

  it("a call admitted while closed is rejected by recheck once the circuit has opened; a closed circuit lets it go", () => {
    const time = { now: 0 }
    const cell = Breaker.makeCell(key)
    const now = () => time.now
    const admitted = Breaker.admit(cell, now)
    const generation = admitted._tag === "Admitted" ? admitted.generation : -1
    assert.isUndefined(Breaker.recheck(cell, generation, now))
    const { cell: open, generation: stale } = opened(time)
    time.now = 300
    assert.deepStrictEqual(Breaker.recheck(open, stale, now), {
      _tag: "Rejected",
      retryAfterMillis: 700,
      probing: false
    })
  })

  it("the half-open probe itself passes recheck; others waiting are rejected as probing", () => {
    const time = { now: 0 }
    const { cell, now } = opened(time)
    time.now = 1000
    const probe = Breaker.admit(cell, now)
    assert.strictEqual(probe._tag, "Admitted")
    const generation = probe._tag === "Admitted" ? probe.generation : -1
    assert.isUndefined(Breaker.recheck(cell, generation, now))
    assert.deepStrictEqual(Breaker.recheck(cell, -1, now), { _tag: "Rejected", retryAfterMillis: 0, probing: true })
  })

  it("probeSucceeded closes an open circuit (Open -> HalfOpen -> Closed) and ignores the calls admitted before", () => {
    const time = { now: 0 }
    const { cell, now, generation } = opened(time)
    time.now = 200
    const transitions = Breaker.probeSucceeded(cell, now)
    assert.deepStrictEqual(
      transitions.map((t) => `${t.from}->${t.to}`),
      ["Open->HalfOpen", "HalfOpen->Closed"]
    )
    assert.strictEqual(cell.state, "Closed")
    // A failure admitted before the circuit opened does not count towards the next opening.
    Breaker.record(cell, generation, "Failure", policy, now, openFor)
    assert.strictEqual(cell.streak, 0)
    assert.deepStrictEqual(Breaker.probeSucceeded(cell, now), [])
  })

  it("probeSucceeded on a half-open circuit closes it; the in-flight probe's late outcome is not counted", () => {
    const time = { now: 0 }
    const { cell, now } = opened(time)
    time.now = 1000
    const probe = Breaker.admit(cell, now)
    const generation = probe._tag === "Admitted" ? probe.generation : -1
    assert.deepStrictEqual(
      Breaker.probeSucceeded(cell, now).map((t) => `${t.from}->${t.to}`),
      ["HalfOpen->Closed"]
    )
    assert.isUndefined(Breaker.record(cell, generation, "Failure", policy, now, openFor))
    assert.strictEqual(cell.state, "Closed")
  })
})

describe("Breaker state machine: openedElsewhere and closedElsewhere", () => {
  const policy = Breaker.consecutive(2)
  const openFor = (openings: number) => 1000 * 2 ** (openings - 1)

  it("a closed circuit opens for the given time, without a failure of its own; calls admitted before are not counted", () => {
    const time = { now: 100 }
    const now = () => time.now
    const cell = Breaker.makeCell(key)
    const admitted = Breaker.admit(cell, now)
    const generation = admitted._tag === "Admitted" ? admitted.generation : -1
    const transition = Breaker.openedElsewhere(cell, 750, 3, now)
    assert.deepStrictEqual(transition, {
      key,
      from: "Closed",
      to: "Open",
      retryAfter: Duration.millis(750),
      consecutiveOpenings: 3
    })
    assert.deepStrictEqual(Breaker.admit(cell, now), { _tag: "Rejected", retryAfterMillis: 750, probing: false })
    assert.isUndefined(Breaker.record(cell, generation, "Failure", policy, now, openFor))
    // The open period ends where the other process's does: the next call is the half-open probe.
    time.now = 850
    const probe = Breaker.admit(cell, now)
    assert.strictEqual(probe._tag === "Admitted" && probe.probe, true)
    // Its failure reopens from the shared count: the 4th consecutive opening lasts 8 s.
    const reopened = Breaker.record(
      cell,
      probe._tag === "Admitted" ? probe.generation : -1,
      "Failure",
      policy,
      now,
      openFor
    )
    assert.strictEqual(reopened?.to, "Open")
    assert.strictEqual(cell.consecutiveOpenings, 4)
    assert.strictEqual(cell.openUntil, 850 + 8000)
  })

  it("an open circuit only stays open longer, and reports no transition", () => {
    const time = { now: 0 }
    const now = () => time.now
    const cell = Breaker.makeCell(key)
    Breaker.openedElsewhere(cell, 1000, 1, now)
    assert.isUndefined(Breaker.openedElsewhere(cell, 200, 1, now))
    assert.strictEqual(cell.openUntil, 1000)
    time.now = 500
    assert.isUndefined(Breaker.openedElsewhere(cell, 2000, 2, now))
    assert.strictEqual(cell.openUntil, 2500)
    assert.strictEqual(cell.state, "Open")
  })

  it("a half-open circuit with its probe in flight opens; the probe's late success is not counted", () => {
    const time = { now: 0 }
    const now = () => time.now
    const cell = Breaker.makeCell(key)
    Breaker.openedElsewhere(cell, 1000, 1, now)
    time.now = 1000
    const probe = Breaker.admit(cell, now)
    const generation = probe._tag === "Admitted" ? probe.generation : -1
    assert.strictEqual(Breaker.openedElsewhere(cell, 2000, 2, now)?.from, "HalfOpen")
    assert.isUndefined(Breaker.record(cell, generation, "Success", policy, now, openFor))
    assert.strictEqual(cell.state, "Open")
    assert.strictEqual(cell.probing, false)
  })

  it("a zero, negative or infinite time is ignored", () => {
    const cell = Breaker.makeCell(key)
    for (const millis of [0, -5, Number.POSITIVE_INFINITY, Number.NaN]) {
      assert.isUndefined(Breaker.openedElsewhere(cell, millis, 1, () => 0))
    }
    assert.strictEqual(cell.state, "Closed")
  })

  it("closedElsewhere closes an open or half-open circuit (effect's vocabulary) and leaves a closed one alone", () => {
    const time = { now: 0 }
    const now = () => time.now
    const cell = Breaker.makeCell(key)
    Breaker.openedElsewhere(cell, 1000, 1, now)
    assert.deepStrictEqual(
      Breaker.closedElsewhere(cell, now).map((t) => `${t.from}->${t.to}`),
      ["Open->HalfOpen", "HalfOpen->Closed"]
    )
    assert.deepStrictEqual(Breaker.closedElsewhere(cell, now), [])
    Breaker.openedElsewhere(cell, 1000, 1, now)
    time.now = 1000
    Breaker.admit(cell, now)
    assert.deepStrictEqual(
      Breaker.closedElsewhere(cell, now).map((t) => `${t.from}->${t.to}`),
      ["HalfOpen->Closed"]
    )
  })

  it.effect("make: transitions applied from elsewhere reach the stream but not onTransition", () =>
    Effect.gen(function* () {
      const mine: Array<string> = []
      const keys: Array<string> = []
      const breaker = yield* Breaker.make(
        { tripPolicy: Breaker.consecutive(1), openDuration: "1 second" },
        { onKey: (k) => keys.push(k), onTransition: (t) => mine.push(`${t.from}->${t.to}`) }
      )
      const local = breaker.local!
      const seen = yield* Stream.take(breaker.transitions, 4).pipe(
        Stream.runCollect,
        Effect.forkChild({ startImmediately: true })
      )
      local.openedElsewhere!(key, 500, 1)
      assert.strictEqual(local.admit(key)._tag, "Rejected")
      local.closedElsewhere!(key)
      const admitted = local.admit(key)
      local.record(key, admitted._tag === "Admitted" ? admitted.generation : -1, "Failure")
      assert.deepStrictEqual(keys, [key])
      assert.deepStrictEqual(mine, ["Closed->Open"])
      assert.deepStrictEqual(
        (yield* Fiber.join(seen)).map((t) => `${t.from}->${t.to}`),
        ["Closed->Open", "Open->HalfOpen", "HalfOpen->Closed", "Closed->Open"]
      )
    }).pipe(Effect.scoped)
  )
})
