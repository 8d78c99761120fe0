import { assert, describe, it } from "@effect/vitest"
import { HealthMonitor } from "@sturdy/resilience"
import { Cause, Clock, Context, Effect, Exit, Fiber, Layer, Logger, Queue, Ref, Stream } from "effect"
import { TestClock } from "effect/testing"

/**
 * One scripted probe: `"up"` answers at once, `{ up: ms }` answers after `ms`, `"down"` fails at once with
 * `Error("connection refused")`, `{ down: value }` fails with that value, `"hang"` never answers, `"die"` dies.
 */
type Step = "up" | "down" | "hang" | "die" | { readonly up: number } | { readonly down: unknown }

/**
 * A probe that plays `steps` in order (repeating the last) and records the virtual time at which each probe
 * started. `next` waits for the next probe to start, for tests that must not advance the clock.
 */
const scripted = Effect.fnUntraced(function* (steps: ReadonlyArray<Step>) {
  const started: Array<number> = []
  const starts = yield* Queue.unbounded<number>()
  const probe = Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const step = steps[Math.min(started.length, steps.length - 1)]!
    started.push(now)
    yield* Queue.offer(starts, now)
    if (step === "up") return "pong"
    if (step === "down") return yield* Effect.fail(new Error("connection refused"))
    if (step === "hang") return yield* Effect.never
    if (step === "die") return yield* Effect.die(new Error("probe bug"))
    if ("up" in step) return yield* Effect.as(Effect.sleep(step.up), "pong")
    return yield* Effect.fail(step.down)
  })
  return { probe, started, next: Queue.take(starts) }
})

const statusOf = (monitor: HealthMonitor.Service) => Effect.map(monitor.lastHealthCheck, (result) => result.status)

/** A result as plain data, for deep comparisons. */
const plain = (result: HealthMonitor.HealthCheckResult) => ({
  status: result.status,
  responseTime: result.responseTime,
  timestamp: result.timestamp.getTime(),
  error: result.error
})

describe("HealthMonitor", () => {
  describe("schedule", () => {
    it.effect("probes once at start-up, then every interval while healthy", () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted(["up"])
        const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" })
        assert.deepStrictEqual(started, [0])
        yield* TestClock.adjust(9_999)
        assert.deepStrictEqual(started, [0])
        yield* TestClock.adjust(1)
        assert.deepStrictEqual(started, [0, 10_000])
        yield* TestClock.adjust("10 seconds")
        assert.deepStrictEqual(started, [0, 10_000, 20_000])
        assert.deepStrictEqual(plain(yield* monitor.lastHealthCheck), {
          status: "healthy",
          responseTime: 0,
          timestamp: 20_000,
          error: undefined
        })
      }).pipe(Effect.scoped)
    )

    it.effect("a probe that dies is unhealthy, and the monitor keeps probing at the fast interval", () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted(["up", "die", "die", "up"])
        const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" })
        yield* TestClock.adjust("10 seconds")
        assert.deepStrictEqual(plain(yield* monitor.lastHealthCheck), {
          status: "unhealthy",
          responseTime: undefined,
          timestamp: 10_000,
          error: "The probe died: probe bug"
        })
        yield* TestClock.adjust(500)
        assert.deepStrictEqual(started, [0, 10_000, 10_250, 10_500])
        assert.strictEqual(yield* statusOf(monitor), "healthy")
      }).pipe(Effect.scoped)
    )

    it.effect("the interval is counted from the end of the previous probe", () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted([{ up: 40 }])
        const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" }).pipe(
          Effect.forkChild
        )
        yield* TestClock.adjust(40)
        const service = yield* Fiber.join(monitor)
        // Answered at 40 ms after 40 ms; the next probe starts one interval after that answer.
        assert.deepStrictEqual(plain(yield* service.lastHealthCheck), {
          status: "healthy",
          responseTime: 40,
          timestamp: 40,
          error: undefined
        })
        yield* TestClock.adjust(9_999)
        assert.deepStrictEqual(started, [0])
        yield* TestClock.adjust(1)
        assert.deepStrictEqual(started, [0, 10_040])
      }).pipe(Effect.scoped)
    )

    it.effect("while unhealthy it probes every 250 ms by default, and every interval again once healthy", () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted(["down", "down", "down", "up"])
        const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" })
        assert.strictEqual(yield* statusOf(monitor), "unhealthy")
        yield* TestClock.adjust(249)
        assert.deepStrictEqual(started, [0])
        yield* TestClock.adjust(1)
        assert.deepStrictEqual(started, [0, 250])
        yield* TestClock.adjust(500)
        assert.deepStrictEqual(started, [0, 250, 500, 750])
        assert.strictEqual(yield* statusOf(monitor), "healthy")
        yield* TestClock.adjust(9_999)
        assert.deepStrictEqual(started, [0, 250, 500, 750])
        yield* TestClock.adjust(1)
        assert.deepStrictEqual(started, [0, 250, 500, 750, 10_750])
      }).pipe(Effect.scoped)
    )

    it.effect("the default fast interval is the interval itself when that is shorter than 250 ms", () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted(["down"])
        yield* HealthMonitor.make({ probe, interval: "100 millis", timeout: "50 millis" })
        yield* TestClock.adjust(300)
        assert.deepStrictEqual(started, [0, 100, 200, 300])
      }).pipe(Effect.scoped)
    )

    it.effect("an explicit fastInterval replaces the default while unhealthy", () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted(["down", "down", "up"])
        yield* HealthMonitor.make({ probe, interval: "10 seconds", fastInterval: "2 seconds", timeout: "1 second" })
        yield* TestClock.adjust(1_999)
        assert.deepStrictEqual(started, [0])
        yield* TestClock.adjust(1)
        assert.deepStrictEqual(started, [0, 2_000])
        yield* TestClock.adjust(2_000)
        assert.deepStrictEqual(started, [0, 2_000, 4_000])
        yield* TestClock.adjust(10_000)
        assert.deepStrictEqual(started, [0, 2_000, 4_000, 14_000])
      }).pipe(Effect.scoped)
    )

    it.effect(
      "probeFastWhile: healthy, it probes at the fast interval while the condition holds, read as each wait begins",
      () =>
        Effect.gen(function* () {
          const { probe, started } = yield* scripted(["up"])
          const fast = yield* Ref.make(true)
          yield* HealthMonitor.make({
            probe,
            interval: "10 seconds",
            timeout: "1 second",
            probeFastWhile: Ref.get(fast)
          })
          yield* TestClock.adjust(500)
          assert.deepStrictEqual(started, [0, 250, 500])
          // The wait that began after the probe at 500 ms read `true`: it still ends at 750 ms.
          yield* Ref.set(fast, false)
          yield* TestClock.adjust(250)
          assert.deepStrictEqual(started, [0, 250, 500, 750])
          yield* TestClock.adjust(9_999)
          assert.deepStrictEqual(started, [0, 250, 500, 750])
          yield* TestClock.adjust(1)
          assert.deepStrictEqual(started, [0, 250, 500, 750, 10_750])
        }).pipe(Effect.scoped)
    )

    it.effect(
      "probeWhen: a periodic probe is left out while it answers false, the last result stands, check still probes",
      () =>
        Effect.gen(function* () {
          const { probe, started } = yield* scripted(["down"])
          const mine = yield* Ref.make(false)
          const asked = yield* Ref.make(0)
          const monitor = yield* HealthMonitor.make({
            probe,
            interval: "10 seconds",
            timeout: "1 second",
            probeWhen: Effect.andThen(
              Ref.update(asked, (n) => n + 1),
              Ref.get(mine)
            )
          })
          // The start-up probe is not asked about; the periodic ones are, at the fast interval (unhealthy).
          yield* TestClock.adjust(1000)
          assert.deepStrictEqual(started, [0])
          assert.strictEqual(yield* Ref.get(asked), 4)
          assert.strictEqual(yield* statusOf(monitor), "unhealthy")
          assert.strictEqual((yield* monitor.check).status, "unhealthy")
          assert.deepStrictEqual(started, [0, 1000])
          yield* Ref.set(mine, true)
          yield* TestClock.adjust(250)
          assert.deepStrictEqual(started, [0, 1000, 1250])
        }).pipe(Effect.scoped)
    )

    it.effect("stops probing when its scope closes", () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted(["up"])
        yield* Effect.scoped(HealthMonitor.make({ probe, interval: "1 second", timeout: "100 millis" }))
        yield* TestClock.adjust("1 hour")
        assert.deepStrictEqual(started, [0])
      })
    )
  })

  describe("checkSoon and check", () => {
    it.effect(
      "checkSoon ends the current wait: a burst of calls makes one probe, and the interval restarts from it",
      () =>
        Effect.gen(function* () {
          const { probe, started, next } = yield* scripted(["up"])
          const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" })
          yield* next
          yield* TestClock.adjust(3_000)
          yield* monitor.checkSoon
          yield* monitor.checkSoon
          yield* monitor.checkSoon
          assert.strictEqual(yield* next, 3_000)
          // Everything woken so far runs before the clock moves: no second probe for the other two calls.
          yield* TestClock.adjust(9_999)
          assert.deepStrictEqual(started, [0, 3_000])
          yield* TestClock.adjust(1)
          assert.deepStrictEqual(started, [0, 3_000, 13_000])
        }).pipe(Effect.scoped)
    )

    it.effect("checkSoon during a probe: the next probe starts as soon as that one answers", () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted(["up", { up: 100 }, "up"])
        const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" })
        yield* TestClock.adjust(10_050)
        assert.deepStrictEqual(started, [0, 10_000])
        yield* monitor.checkSoon
        yield* monitor.checkSoon
        yield* TestClock.adjust(50)
        assert.deepStrictEqual(started, [0, 10_000, 10_100])
        yield* TestClock.adjust(10_000)
        assert.deepStrictEqual(started, [0, 10_000, 10_100, 20_100])
      }).pipe(Effect.scoped)
    )

    it.effect("check probes now, publishes the result and returns it", () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted(["up", "down"])
        const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" })
        yield* TestClock.adjust(5_000)
        const result = yield* monitor.check
        assert.deepStrictEqual(started, [0, 5_000])
        assert.deepStrictEqual(plain(result), {
          status: "unhealthy",
          responseTime: undefined,
          timestamp: 5_000,
          error: "connection refused"
        })
        assert.strictEqual(yield* monitor.lastHealthCheck, result)
      }).pipe(Effect.scoped)
    )

    it.effect("changes: the current result, then every new one, repeated statuses included", () =>
      Effect.gen(function* () {
        const { probe } = yield* scripted(["up", "down", "down", "up"])
        const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" })
        const collected = yield* Effect.forkChild(Stream.runCollect(Stream.take(monitor.changes, 4)), {
          startImmediately: true
        })
        yield* TestClock.adjust(10_500)
        const results = yield* Fiber.join(collected)
        assert.deepStrictEqual(
          results.map((result) => [result.status, result.timestamp.getTime()]),
          [
            ["healthy", 0],
            ["unhealthy", 10_000],
            ["unhealthy", 10_250],
            ["healthy", 10_500]
          ]
        )
      }).pipe(Effect.scoped)
    )
  })

  describe("timeout and errors", () => {
    it.effect(
      "a probe that does not answer within the timeout is unhealthy at the timeout; one that answers just in time is healthy",
      () =>
        Effect.gen(function* () {
          const { probe, started } = yield* scripted(["up", "hang", { up: 1_999 }])
          const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "2 seconds" })
          yield* TestClock.adjust(11_999)
          assert.strictEqual(yield* statusOf(monitor), "healthy")
          yield* TestClock.adjust(1)
          assert.deepStrictEqual(plain(yield* monitor.lastHealthCheck), {
            status: "unhealthy",
            responseTime: undefined,
            timestamp: 12_000,
            error: "The probe did not answer within 2s"
          })
          // Unhealthy: the next probe 250 ms later, which answers after 1 999 ms.
          yield* TestClock.adjust(250 + 1_999)
          assert.deepStrictEqual(started, [0, 10_000, 12_250])
          assert.deepStrictEqual(plain(yield* monitor.lastHealthCheck), {
            status: "healthy",
            responseTime: 1_999,
            timestamp: 14_249,
            error: undefined
          })
        }).pipe(Effect.scoped)
    )

    it.effect(
      "a failed probe's error text: describe when given, else the failure's message, else the failure as a string",
      () =>
        Effect.gen(function* () {
          const errorOf = (down: unknown, describe?: (error: unknown) => string) =>
            Effect.gen(function* () {
              const { probe } = yield* scripted([{ down }])
              const monitor = yield* HealthMonitor.make({ probe, interval: "1 second", timeout: "1 second", describe })
              return (yield* monitor.lastHealthCheck).error
            }).pipe(Effect.scoped)
          assert.strictEqual(
            yield* errorOf(new Error("password authentication failed")),
            "password authentication failed"
          )
          assert.strictEqual(yield* errorOf({ message: 57014 }), "57014")
          assert.strictEqual(yield* errorOf("ECONNREFUSED"), "ECONNREFUSED")
          assert.strictEqual(
            yield* errorOf(new Error("postgres://app:secret@db/app refused"), () => "ConnectionRefused"),
            "ConnectionRefused"
          )
        })
    )

    it.effect("logs the first result, then only changes of status", () =>
      Effect.gen(function* () {
        const lines: Array<string> = []
        const capture = Logger.make(({ logLevel, message }) => {
          lines.push(`${logLevel}: ${Array.isArray(message) ? message.join(" ") : String(message)}`)
        })
        const { probe } = yield* scripted(["up", "down", "down", "up"])
        yield* Effect.gen(function* () {
          yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" })
          yield* TestClock.adjust(10_500)
        }).pipe(Effect.scoped, Effect.provide(Logger.layer([capture])))
        assert.deepStrictEqual(lines, [
          "Info: Initial health check: healthy (0 ms)",
          "Error: Health check: unhealthy: connection refused",
          "Info: Health check: healthy again (0 ms)"
        ])
      })
    )
  })

  describe("start-up", () => {
    it.effect('"degraded" (the default) builds with a failed first probe and keeps probing', () =>
      Effect.gen(function* () {
        const { probe } = yield* scripted(["down", "up"])
        const monitor = yield* HealthMonitor.make({ probe, interval: "10 seconds", timeout: "1 second" })
        assert.deepStrictEqual(plain(yield* monitor.lastHealthCheck), {
          status: "unhealthy",
          responseTime: undefined,
          timestamp: 0,
          error: "connection refused"
        })
        yield* TestClock.adjust(250)
        assert.strictEqual(yield* statusOf(monitor), "healthy")
      }).pipe(Effect.scoped)
    )

    it.effect('"fail" fails the layer with StartupHealthCheckFailed and starts no probing', () =>
      Effect.gen(function* () {
        const { probe, started } = yield* scripted(["down", "up"])
        const error = yield* Layer.build(
          HealthMonitor.layer({ probe, interval: "1 second", timeout: "1 second", onStartup: "fail" })
        ).pipe(Effect.flip)
        assert.instanceOf(error, HealthMonitor.StartupHealthCheckFailed)
        assert.strictEqual(error.error, "connection refused")
        assert.strictEqual(error.message, "The start-up health check failed: connection refused")
        yield* TestClock.adjust("1 hour")
        assert.deepStrictEqual(started, [0])
      }).pipe(Effect.scoped)
    )

    it.effect('"fail" waits the probe\'s timeout at start-up, then fails with the timeout as its error', () =>
      Effect.gen(function* () {
        const { probe } = yield* scripted(["hang"])
        const fiber = yield* HealthMonitor.make({
          probe,
          interval: "1 second",
          timeout: "3 seconds",
          onStartup: "fail"
        }).pipe(Effect.scoped, Effect.flip, Effect.forkChild)
        yield* TestClock.adjust(2_999)
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust(1)
        const error = yield* Fiber.join(fiber)
        assert.strictEqual(error.message, "The start-up health check failed: The probe did not answer within 3s")
      })
    )

    it.effect('"fail" with a healthy first probe builds the service', () =>
      Effect.gen(function* () {
        const { probe } = yield* scripted(["up"])
        const context = yield* Layer.build(
          HealthMonitor.layer({ probe, interval: "1 second", timeout: "1 second", onStartup: "fail" })
        )
        assert.strictEqual(yield* statusOf(Context.get(context, HealthMonitor.HealthMonitor)), "healthy")
      }).pipe(Effect.scoped)
    )
  })

  describe("options", () => {
    const defect = <A, E>(exit: Exit.Exit<A, E>) => {
      assert.isTrue(Exit.isFailure(exit), "expected make to die")
      return Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
    }
    const cases: ReadonlyArray<{
      readonly options: Partial<Omit<HealthMonitor.Options<unknown>, "probe">>
      readonly message: string
    }> = [
      { options: { interval: 0 }, message: "HealthMonitor.make: interval must be a positive finite duration, got 0" },
      {
        options: { interval: "Infinity" },
        message: "HealthMonitor.make: interval must be a positive finite duration, got Infinity"
      },
      { options: { timeout: -5 }, message: "HealthMonitor.make: timeout must be a positive finite duration, got -5ms" },
      {
        options: { fastInterval: 0 },
        message: "HealthMonitor.make: fastInterval must be a positive finite duration, got 0"
      },
      {
        options: { onStartup: "crash" as "fail" },
        message: 'HealthMonitor.make: onStartup must be "degraded" or "fail", got "crash"'
      }
    ]
    for (const { options, message } of cases) {
      it.effect(`rejects ${JSON.stringify(options)} before probing`, () =>
        Effect.gen(function* () {
          const { probe, started } = yield* scripted(["up"])
          const exit = yield* Effect.exit(
            Effect.scoped(HealthMonitor.make({ probe, interval: "1 second", timeout: "1 second", ...options }))
          )
          const error = defect(exit)
          assert.instanceOf(error, RangeError)
          assert.strictEqual((error as RangeError).message, message)
          assert.deepStrictEqual(started, [])
        })
      )
    }
  })
})
