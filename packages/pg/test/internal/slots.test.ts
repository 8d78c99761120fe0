import { assert, describe, it } from "@effect/vitest"
import { Transient } from "@sturdy/resilience"
import { Duration, Effect, Fiber, Scheduler } from "effect"
import { Call } from "../../src/internal/call.ts"
import { Slots } from "../../src/internal/slots.ts"

// `Effect.runFork` starts a fiber at once, and the calls handed a slot are woken by one task of their fiber's
// scheduler: here a scheduler whose tasks run when the test calls `flush`, so the order in which calls get a slot
// is observable synchronously, without sleeping.
const pending: Array<() => void> = []
const manual = new Scheduler.MixedScheduler("async", (task) => {
  pending.push(task)
  return () => {}
})
const flush = () => {
  while (pending.length > 0) pending.shift()!()
}

/** Takes a slot for `call`: `"now"` when one was free; else the parked fiber, which notes its name when woken. */
const take = (slots: Slots, call: Call, woken: Array<number>) => {
  const wait = slots.take(call)
  if (wait === undefined) return "now" as const
  return Effect.runFork(
    Effect.andThen(
      wait,
      Effect.sync(() => woken.push(call.started))
    ).pipe(Effect.provideService(Scheduler.Scheduler, manual))
  )
}

const timeoutOf = () => new Transient.AttemptTimeout({ phase: "connect", timeout: Duration.seconds(1) })

describe("Slots", () => {
  it("hands free slots out at once, then parks calls and gives each freed slot to the first still parked", () => {
    const slots = new Slots(2, timeoutOf)
    const woken: Array<number> = []
    const [a, b, c, d, e] = [1, 2, 3, 4, 5].map((n) => new Call(n)) as [Call, Call, Call, Call, Call]
    const taken = [a, b, c, d, e].map((call) => (take(slots, call, woken) === "now" ? "now" : "parked"))
    assert.deepStrictEqual(taken, ["now", "now", "parked", "parked", "parked"])
    assert.deepStrictEqual([slots.active, c.parked, c.slot], [2, true, false])

    // A release hands the slot over at once, and wakes its call on the scheduler's next task, not inline: woken
    // inline, the call would ask the pool for the connection the releasing statement has not given back yet.
    slots.release(a)
    assert.deepStrictEqual([woken, c.slot, c.parked, slots.active], [[], true, false, 2])
    flush()
    const steps: Array<[Array<number>, number]> = [[[...woken], slots.active]]
    for (const call of [b, c, d, e]) {
      slots.release(call)
      flush()
      steps.push([[...woken], slots.active])
    }
    assert.deepStrictEqual(steps, [
      [[3], 2],
      [[3, 4], 2],
      [[3, 4, 5], 2],
      [[3, 4, 5], 1],
      [[3, 4, 5], 0]
    ])
    assert.deepStrictEqual(
      [a, b, c, d, e].map((call) => [call.slot, call.parked]),
      [
        [false, false],
        [false, false],
        [false, false],
        [false, false],
        [false, false]
      ]
    )
  })

  it("a slot given back with its session already in the pool (a failed attempt) wakes its call at once", () => {
    const slots = new Slots(1, timeoutOf)
    const woken: Array<number> = []
    const [holder, next, last] = [1, 2, 3].map((n) => new Call(n)) as [Call, Call, Call]
    take(slots, holder, woken)
    take(slots, next, woken)
    take(slots, last, woken)
    slots.release(holder, true)
    assert.deepStrictEqual([woken, pending.length], [[2], 0])
    slots.release(next)
    assert.deepStrictEqual(woken, [2])
    flush()
    assert.deepStrictEqual(woken, [2, 3])
  })

  it("skips a call that stopped waiting: interrupted, or woken by its deadline", () => {
    const slots = new Slots(1, timeoutOf)
    const woken: Array<number> = []
    const [holder, interrupted, timedOut, next] = [1, 2, 3, 4].map((n) => new Call(n)) as [Call, Call, Call, Call]
    take(slots, holder, woken)
    const fibers = [interrupted, timedOut, next].map((call) => take(slots, call, woken))
    Effect.runSync(Fiber.interrupt(fibers[0] as Fiber.Fiber<unknown>))
    // What the watchdog does at a parked call's deadline.
    timedOut.parked = false
    assert.deepStrictEqual([interrupted.parked, timedOut.parked, next.parked], [false, false, true])

    slots.release(holder)
    flush()
    assert.deepStrictEqual(woken, [4])
    assert.deepStrictEqual([interrupted.slot, timedOut.slot, next.slot, slots.active], [false, false, true, 1])
  })

  it("a call without a slot gives nothing back, and a slot is given back once", () => {
    const slots = new Slots(1, timeoutOf)
    const woken: Array<number> = []
    const [holder, parked, stranger] = [1, 2, 3].map((n) => new Call(n)) as [Call, Call, Call]
    take(slots, holder, woken)
    take(slots, parked, woken)
    slots.release(stranger)
    flush()
    assert.deepStrictEqual([woken, slots.active], [[], 1])
    slots.release(holder)
    slots.release(holder)
    flush()
    assert.deepStrictEqual([woken, slots.active, parked.slot], [[2], 1, true])
  })

  it("keeps arrival order across the queue's compaction, with calls parking while others are woken", () => {
    const slots = new Slots(1, timeoutOf)
    const woken: Array<number> = []
    const holder = new Call(-1)
    take(slots, holder, woken)
    const calls: Array<Call> = []
    const park = (from: number, to: number) => {
      for (let n = from; n < to; n++) {
        const call = new Call(n)
        calls.push(call)
        take(slots, call, woken)
      }
    }
    park(0, 3000)
    // Each woken call gives its slot on to the next one; the queue compacts once 1,500 have left it.
    slots.release(holder)
    for (let i = 0; i < 1999; i++) slots.release(calls[i]!)
    flush()
    park(3000, 4000)
    for (let i = 1999; i < 4000; i++) slots.release(calls[i]!)
    flush()
    assert.deepStrictEqual(
      woken,
      Array.from({ length: 4000 }, (_, n) => n)
    )
    assert.strictEqual(slots.active, 0)
  })

  it("a wait that starts after its call was answered keeps the answer: the slot handed over, or the deadline", () => {
    const slots = new Slots(1, timeoutOf)
    const [holder, handed, expired] = [1, 2, 3].map((n) => new Call(n)) as [Call, Call, Call]
    assert.isUndefined(slots.take(holder))
    // Both waits are built, and answered, before they run: a release and the watchdog get there first.
    const handedWait = slots.take(handed)!
    const expiredWait = slots.take(expired)!
    slots.release(holder)
    expired.parked = false // what the watchdog does at the deadline of a call with no resume yet
    // Synchronously: a wait left for a resume nobody will call would make runSync throw.
    assert.isUndefined(Effect.runSync(handedWait))
    const failed = Effect.runSync(Effect.flip(expiredWait))
    assert.strictEqual(failed._tag, "AttemptTimeout")
    assert.deepStrictEqual([handed.slot, slots.active, expired.slot], [true, 1, false])
  })
})
