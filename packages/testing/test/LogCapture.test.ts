import { assert, describe, it } from "@effect/vitest"
import { LogCapture } from "@sturdy/testing"
import { Cause, Clock, Effect, Exit, Fiber, References } from "effect"
import { TestClock } from "effect/testing"

const messageIs =
  (message: unknown) =>
  (entry: LogCapture.Entry): boolean =>
    entry.message === message

const eventIs =
  (event: string) =>
  (entry: LogCapture.Entry): boolean =>
    entry.annotations["sturdy.event"] === event

describe("LogCapture.make", () => {
  it.effect(
    "captures each line: its level, its message (one part as itself, several as an array), annotations, cause",
    () =>
      Effect.gen(function* () {
        const logs = yield* LogCapture.make
        yield* Effect.gen(function* () {
          yield* Effect.logInfo("started").pipe(Effect.annotateLogs({ "sturdy.event": "ready", attempt: 1 }))
          yield* Effect.logWarning("retrying", { attempt: 2 })
          yield* Effect.logError("failed", Cause.fail("connection refused"))
          yield* Effect.logFatal("gave up").pipe(Effect.annotateLogs("database", "db:5432/app"))
          yield* Effect.logDebug("below the minimum level")
        }).pipe(Effect.provide(logs.layer))
        assert.deepStrictEqual(yield* logs.entries, [
          { level: "INFO", message: "started", cause: undefined, annotations: { "sturdy.event": "ready", attempt: 1 } },
          { level: "WARN", message: ["retrying", { attempt: 2 }], cause: undefined, annotations: {} },
          { level: "ERROR", message: "failed", cause: "Error: connection refused", annotations: {} },
          { level: "FATAL", message: "gave up", cause: undefined, annotations: { database: "db:5432/app" } }
        ])
      })
  )

  it.effect("keeps effect's minimum level: a Debug line is captured once the minimum allows it", () =>
    Effect.gen(function* () {
      const logs = yield* LogCapture.make
      yield* Effect.logDebug("probe sent").pipe(
        Effect.provide(logs.layer),
        Effect.provideService(References.MinimumLogLevel, "Debug")
      )
      assert.deepStrictEqual(yield* logs.entries, [
        { level: "DEBUG", message: "probe sent", cause: undefined, annotations: {} }
      ])
    })
  )

  it.effect("replaces the loggers of what it is provided to, and sees nothing outside it", () =>
    Effect.gen(function* () {
      const outer = yield* LogCapture.make
      const inner = yield* LogCapture.make
      yield* Effect.gen(function* () {
        yield* Effect.log("outer only")
        yield* Effect.log("inner only").pipe(Effect.provide(inner.layer))
      }).pipe(Effect.provide(outer.layer))
      yield* Effect.log("neither")
      assert.deepStrictEqual(
        (yield* outer.entries).map((entry) => entry.message),
        ["outer only"]
      )
      assert.deepStrictEqual(
        (yield* inner.entries).map((entry) => entry.message),
        ["inner only"]
      )
    })
  )

  it.effect("entries is a snapshot: lines logged later do not appear in an array already returned", () =>
    Effect.gen(function* () {
      const logs = yield* LogCapture.make
      yield* Effect.log("first").pipe(Effect.provide(logs.layer))
      const before = yield* logs.entries
      yield* Effect.log("second").pipe(Effect.provide(logs.layer))
      assert.deepStrictEqual(
        before.map((entry) => entry.message),
        ["first"]
      )
      assert.deepStrictEqual(
        (yield* logs.entries).map((entry) => entry.message),
        ["first", "second"]
      )
    })
  )

  it.effect("text renders every line as one JSON line, messages, annotations and causes included", () =>
    Effect.gen(function* () {
      const logs = yield* LogCapture.make
      yield* Effect.gen(function* () {
        yield* Effect.logInfo("connected").pipe(Effect.annotateLogs("database", "db:5432/app"))
        yield* Effect.logError("failed", Cause.fail("password authentication failed for user app"))
      }).pipe(Effect.provide(logs.layer))
      const text = yield* logs.text
      const lines = text.split("\n")
      assert.strictEqual(lines.length, 2)
      assert.deepStrictEqual(JSON.parse(lines[0]!), {
        level: "INFO",
        message: "connected",
        annotations: { database: "db:5432/app" }
      })
      assert.deepStrictEqual(JSON.parse(lines[1]!), {
        level: "ERROR",
        message: "failed",
        cause: "Error: password authentication failed for user app",
        annotations: {}
      })
    })
  )
})

describe("LogCapture.waitFor", () => {
  it.effect("returns the earliest captured line that matches, at once, and each line once", () =>
    Effect.gen(function* () {
      const logs = yield* LogCapture.make
      yield* Effect.gen(function* () {
        yield* Effect.log("retry 1").pipe(Effect.annotateLogs("sturdy.event", "retry"))
        yield* Effect.log("opened").pipe(Effect.annotateLogs("sturdy.event", "breaker"))
        yield* Effect.log("retry 2").pipe(Effect.annotateLogs("sturdy.event", "retry"))
      }).pipe(Effect.provide(logs.layer))
      assert.strictEqual((yield* logs.waitFor(eventIs("retry"))).message, "retry 1")
      assert.strictEqual((yield* logs.waitFor(eventIs("retry"))).message, "retry 2")
      // Both retry lines are taken: a third call waits (for a line that never comes).
      const third = yield* Effect.forkChild(logs.waitFor(eventIs("retry")))
      yield* Effect.yieldNow
      assert.isUndefined(third.pollUnsafe())
      yield* Fiber.interrupt(third)
    })
  )

  it.effect("lines that do not match stay for later calls: events are awaited in any order", () =>
    Effect.gen(function* () {
      const logs = yield* LogCapture.make
      yield* Effect.gen(function* () {
        yield* Effect.log("healthy").pipe(Effect.annotateLogs("sturdy.event", "health"))
        yield* Effect.log("closed").pipe(Effect.annotateLogs("sturdy.event", "breaker"))
        yield* Effect.log("recovered").pipe(Effect.annotateLogs("sturdy.event", "recovered"))
      }).pipe(Effect.provide(logs.layer))
      assert.deepStrictEqual(
        [
          (yield* logs.waitFor(eventIs("recovered"))).message,
          (yield* logs.waitFor(eventIs("breaker"))).message,
          (yield* logs.waitFor(eventIs("health"))).message
        ],
        ["recovered", "closed", "healthy"]
      )
    })
  )

  it.effect("waits for a line not logged yet, past lines that do not match, until the one that does", () =>
    Effect.gen(function* () {
      const logs = yield* LogCapture.make
      yield* Effect.forkChild(
        Effect.gen(function* () {
          yield* Effect.sleep("1 second")
          yield* Effect.log("checking")
          yield* Effect.sleep("1 second")
          yield* Effect.log("ready")
        }).pipe(Effect.provide(logs.layer))
      )
      const waiter = yield* Effect.forkChild(
        Effect.flatMap(logs.waitFor(messageIs("ready")), (entry) =>
          Effect.map(Clock.currentTimeMillis, (at) => ({ message: entry.message, at }))
        )
      )
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(
        (yield* logs.entries).map((entry) => entry.message),
        ["checking"]
      )
      assert.isUndefined(waiter.pollUnsafe(), "a line that does not match does not end the wait")
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* Fiber.join(waiter), { message: "ready", at: 2000 })
      // The non-matching line is still there for a later call.
      assert.strictEqual((yield* logs.waitFor(messageIs("checking"))).message, "checking")
    })
  )

  it.effect("never gives up by itself: under a timeout, it fails with the timeout when no line matches", () =>
    Effect.gen(function* () {
      const logs = yield* LogCapture.make
      yield* Effect.forkChild(
        Effect.log("unhealthy").pipe(Effect.delay("1 second"), Effect.forever(), Effect.provide(logs.layer))
      )
      const waiter = yield* Effect.forkChild(logs.waitFor(messageIs("healthy")).pipe(Effect.timeout("5 seconds")))
      yield* TestClock.adjust("4999 millis")
      assert.isUndefined(waiter.pollUnsafe(), "still waiting before the timeout")
      yield* TestClock.adjust("1 millis")
      const exit = yield* Effect.exit(Fiber.join(waiter))
      assert.isTrue(Exit.isFailure(exit) && Cause.isTimeoutError(Cause.squash(exit.cause)), String(exit))
      // Five unhealthy lines came and went while it waited, none taken by the timed-out wait.
      assert.strictEqual((yield* logs.entries).length, 5)
      for (let i = 0; i < 5; i++) assert.strictEqual((yield* logs.waitFor(messageIs("unhealthy"))).message, "unhealthy")
    })
  )
})
