import { assert, describe, it } from "@effect/vitest"
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { DatabaseMetrics, Transient } from "@sturdy/resilience"
import { Clock, Duration, Effect, Exit } from "effect"
import { TestClock } from "effect/testing"
import { Call, type InFlight } from "../../src/internal/call.ts"
import { Watchdog } from "../../src/internal/watchdog.ts"

const connection = (name: string) => ({ name }) as unknown as PgConnection.PgConnection
const nameOf = (c: PgConnection.PgConnection) => (c as unknown as { name: string }).name
const members = (list: InFlight) => {
  const out: Array<number> = []
  for (let call = list.head; call !== undefined; call = call.next) out.push(call.started)
  return out
}

/** A watchdog on a clock the test moves by hand, noting what it interrupts and destroys. */
const harness = (timeoutMillis: number, cancelsStatement = true) => {
  let now = 0
  const interrupted: Array<string> = []
  const destroyed: Array<string> = []
  const recorder = new DatabaseMetrics.Recorder()
  const watchdog = new Watchdog({
    clock: { currentTimeMillisUnsafe: () => now },
    timeoutMillis,
    cancelsStatement,
    recorder,
    interrupt: (c) => interrupted.push(nameOf(c)),
    destroy: (c) => destroyed.push(nameOf(c)),
    timeoutOf: (call) =>
      new Transient.AttemptTimeout({ phase: call.sent ? "sent" : "connect", timeout: Duration.millis(timeoutMillis) })
  })
  /** Moves the clock to `at` and lets the watchdog look. */
  const at = (millis: number) => {
    now = millis
    watchdog.expire()
  }
  const start = (started: number, props: Partial<Pick<Call, "connection" | "parked" | "sent">> = {}) => {
    now = started
    const call = Object.assign(new Call(started), props)
    watchdog.watch(call)
    return call
  }
  return { watchdog, recorder, interrupted, destroyed, at, start }
}

describe("Watchdog", () => {
  it("derives the grace period and the tick from the attempt timeout", () => {
    const derived = [30, 100, 1000, 10_000, 60_000].map((timeoutMillis) => {
      const { watchdog } = harness(timeoutMillis)
      return [timeoutMillis, watchdog.graceMillis, Duration.toMillis(watchdog.tick)]
    })
    assert.deepStrictEqual(derived, [
      [30, 50, 10],
      [100, 50, 10],
      [1000, 250, 50],
      [10_000, 2000, 500],
      [60_000, 2000, 1000]
    ])
  })

  it("expires a call at its deadline, not a millisecond before", () => {
    const { watchdog, recorder, at, start } = harness(1000)
    const call = start(0, { connection: connection("a"), sent: true })
    assert.strictEqual(call.deadline, 1000)
    at(999)
    assert.deepStrictEqual([call.timedOut, recorder.timeouts, members(watchdog.inFlight)], [false, 0, [0]])
    at(1000)
    assert.deepStrictEqual([call.timedOut, recorder.timeouts, members(watchdog.inFlight)], [true, 1, []])
  })

  it("cancels a running statement, then destroys its session when the grace period ends", () => {
    const { watchdog, interrupted, destroyed, at, start } = harness(1000)
    const call = start(0, { connection: connection("a"), sent: true })
    at(1000)
    assert.deepStrictEqual(
      [interrupted, call.cancelSent, call.deadline, members(watchdog.cancelled)],
      [["a"], true, 1250, [0]]
    )
    at(1249)
    assert.deepStrictEqual(destroyed, [])
    at(1250)
    assert.deepStrictEqual([destroyed, members(watchdog.cancelled), interrupted], [["a"], [], ["a"]])
  })

  it("on a multiplexed session the interrupt is sent but not taken for a cancel of the statement", () => {
    const { at, start, interrupted } = harness(1000, false)
    const call = start(0, { connection: connection("m"), sent: true })
    at(1000)
    assert.deepStrictEqual([interrupted, call.cancelSent], [["m"], false])
  })

  it("leaves a session alone once its statement ended during the grace period", () => {
    const { watchdog, destroyed, at, start } = harness(1000)
    const finished = start(0, { connection: connection("finished"), sent: true })
    const settled = start(10, { connection: connection("settled"), sent: true })
    at(1010)
    // What the connection does when its statement ends, and what the stack does when the attempt settles.
    finished.list?.remove(finished)
    finished.connection = undefined
    watchdog.forget(settled)
    at(5000)
    assert.deepStrictEqual([destroyed, members(watchdog.cancelled)], [[], []])
  })

  it("wakes a parked call with its timeout, and leaves a call still connecting to the driver's connect timeout", () => {
    const { watchdog, interrupted, recorder, at, start } = harness(1000)
    const parked = start(0, { parked: true })
    const woken: Array<Exit.Exit<void, Transient.AttemptTimeout>> = []
    parked.resume = (effect) => woken.push(Effect.runSyncExit(effect))
    const connecting = start(0)
    at(1000)
    assert.deepStrictEqual(
      [
        parked.parked,
        parked.timedOut,
        connecting.timedOut,
        recorder.timeouts,
        interrupted,
        members(watchdog.cancelled)
      ],
      [false, true, true, 2, [], []]
    )
    assert.strictEqual(woken.length, 1)
    const exit = woken[0]!
    assert.isTrue(Exit.isFailure(exit))
    const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
    const timeout = error !== undefined && "error" in error ? (error.error as Transient.AttemptTimeout) : undefined
    assert.deepStrictEqual([timeout?._tag, timeout?.phase], ["AttemptTimeout", "connect"])
  })

  it("expires only the calls whose deadline passed, oldest first, and never one that settled", () => {
    const { watchdog, at, start } = harness(1000)
    const calls = [0, 100, 200, 300].map((started) => start(started, { connection: connection(`c${started}`) }))
    watchdog.forget(calls[1]!)
    at(1250)
    assert.deepStrictEqual(
      [calls.map((c) => c.timedOut), members(watchdog.inFlight), members(watchdog.cancelled)],
      [[true, false, true, false], [300], [0, 200]]
    )
  })

  it.effect("its loop checks the deadlines every tick", () =>
    Effect.gen(function* () {
      const recorder = new DatabaseMetrics.Recorder()
      const watchdog = new Watchdog({
        clock: yield* Clock.Clock,
        timeoutMillis: 1000,
        cancelsStatement: true,
        recorder,
        interrupt: () => {},
        destroy: () => {},
        timeoutOf: () => new Transient.AttemptTimeout({ phase: "connect", timeout: Duration.seconds(1) })
      })
      yield* Effect.forkChild(watchdog.loop)
      const call = new Call(0)
      watchdog.watch(call)
      yield* TestClock.adjust("999 millis")
      assert.isFalse(call.timedOut)
      // The deadline passes at 1,000 ms; the tick after it (every 50 ms) sees it.
      yield* TestClock.adjust("50 millis")
      assert.deepStrictEqual([call.timedOut, recorder.timeouts], [true, 1])
    })
  )
})
