import { assert, describe, it } from "@effect/vitest"
import { Call, InFlight } from "../../src/internal/call.ts"

const order = (list: InFlight) => {
  const out: Array<number> = []
  for (let call = list.head; call !== undefined; call = call.next) out.push(call.started)
  const back: Array<number> = []
  for (let call = list.tail; call !== undefined; call = call.prev) back.push(call.started)
  assert.deepStrictEqual(back.reverse(), out, "forward and backward links agree")
  return out
}

describe("the watchdog's lists", () => {
  it("a call moved to the cancelled list is not touched by removing it from the in-flight list", () => {
    // The order of a timed-out attempt that settles during its grace period: the watchdog moved it to
    // `cancelled`; settling then removes it from both lists. Removing it from `inFlight` used to unlink
    // it with `cancelled`'s pointers, leaving `cancelled.head` on a call no list owned: the watchdog
    // then looped forever (pnpm demo froze in its latency spike).
    const inFlight = new InFlight()
    const cancelled = new InFlight()
    const [a, b, c, d] = [1, 2, 3, 4].map((n) => new Call(n)) as [Call, Call, Call, Call]
    for (const call of [a, b, c]) inFlight.add(call)
    cancelled.add(d)
    inFlight.remove(a)
    cancelled.add(a)
    assert.deepStrictEqual(
      [order(inFlight), order(cancelled)],
      [
        [2, 3],
        [4, 1]
      ]
    )

    inFlight.remove(a)
    assert.deepStrictEqual(
      [order(inFlight), order(cancelled)],
      [
        [2, 3],
        [4, 1]
      ]
    )
    cancelled.remove(a)
    assert.deepStrictEqual([order(inFlight), order(cancelled)], [[2, 3], [4]])
    cancelled.remove(a)
    inFlight.remove(c)
    assert.deepStrictEqual([order(inFlight), order(cancelled)], [[2], [4]])
  })

  it("adding a call that is in another list moves it", () => {
    const first = new InFlight()
    const second = new InFlight()
    const call = new Call(7)
    first.add(call)
    second.add(call)
    assert.deepStrictEqual([order(first), order(second)], [[], [7]])
  })
})
