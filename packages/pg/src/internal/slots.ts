/**
 * Slots: at most one statement per pooled connection (times the statements a
 * connection may multiplex) goes to the pool; the rest park here. The pool has
 * no wait limit of its own, and a fiber waiting inside it cannot be woken.
 * Parked calls can: the watchdog fails them at their deadline, so an exhausted
 * pool is a typed timeout, without a timer per call.
 *
 * @internal
 */
import type { Transient } from "@sturdy/resilience"
import { Effect, type Scheduler } from "effect"
import type { Call } from "./call.ts"

/** The stack's slots, the calls parked for one in arrival order, and who holds or waits for a connection. */
export class Slots {
  readonly capacity: number
  /** Slots held. */
  active = 0
  /** Attempts waiting for a connection: parked here, or inside the pool. */
  waiting = 0
  /** Attempts holding a connection. */
  inUse = 0
  /** Parked calls from `head` on; a call that stopped waiting stays until its turn comes, and is skipped then. */
  private readonly parked: Array<Call> = []
  private head = 0
  /**
   * Calls handed a slot by a statement that has not given its session back
   * yet, woken together by one scheduler task: woken inline, such a call would
   * ask the pool for a connection that statement still holds, and park a
   * second time, inside the pool (effect's own `Semaphore` and `Pool` wake
   * their waiters the same way). A call handed a slot after a failure, with
   * the session back, runs at once: a failing call waits no extra turn of the
   * event loop.
   */
  private ready: Array<Call> = []
  private dispatcher: Scheduler.SchedulerDispatcher | undefined = undefined
  /** The failure of a call whose deadline passed while it was parked. */
  private readonly timeoutOf: (call: Call) => Transient.AttemptTimeout
  constructor(capacity: number, timeoutOf: (call: Call) => Transient.AttemptTimeout) {
    this.capacity = capacity
    this.timeoutOf = timeoutOf
  }
  /**
   * Takes a slot for `call`: `undefined` when one was free, else the wait,
   * which ends when `release` hands it one (or fails when the watchdog wakes
   * it at its deadline).
   */
  take(call: Call): Effect.Effect<void, Transient.AttemptTimeout> | undefined {
    if (this.active < this.capacity) {
      this.active++
      call.slot = true
      return undefined
    }
    call.parked = true
    this.parked.push(call)
    const wait = this.wait
    // `function`: effect calls the registration with the fiber's scheduler as `this`.
    return Effect.callback<void, Transient.AttemptTimeout>(function (resume) {
      return wait(call, this, resume)
    })
  }
  private readonly wait = (
    call: Call,
    scheduler: Scheduler.Scheduler,
    resume: (effect: Effect.Effect<void, Transient.AttemptTimeout>) => void
  ): Effect.Effect<void> | void => {
    // The wait may start after the call was already answered (the scheduler can run a release or the
    // watchdog in between): a slot handed over, or the deadline passed. Either answer stands.
    if (call.slot) return resume(Effect.void)
    if (!call.parked) return resume(Effect.fail(this.timeoutOf(call)))
    this.dispatcher ??= scheduler.makeDispatcher()
    call.resume = resume
    return Effect.sync(() => {
      call.parked = false
    })
  }
  /**
   * Gives back `call`'s slot, if it holds one, to the first call still parked.
   * `returned`: the session `call` used (if any) is back in the pool, so the
   * call handed the slot may run at once; otherwise (a statement that
   * succeeded, settled in the map that takes its rows, before `Pool.use` gets
   * the session back) it is woken on the scheduler's next task.
   */
  release(call: Call, returned = false): void {
    if (!call.slot) return
    call.slot = false
    this.active--
    const parked = this.parked
    while (this.head < parked.length) {
      const next = parked[this.head]!
      parked[this.head++] = undefined as unknown as Call
      if (!next.parked) continue
      next.parked = false
      next.slot = true
      this.active++
      if (next.resume === undefined) break
      if (returned) next.resume(Effect.void)
      else this.wake(next)
      break
    }
    if (this.head > 1024 && this.head * 2 > parked.length) {
      parked.splice(0, this.head)
      this.head = 0
    }
  }
  private wake(call: Call): void {
    this.ready.push(call)
    if (this.ready.length === 1) this.dispatcher!.scheduleTask(this.resumeReady, 0)
  }
  /** Resumes the calls handed a slot since the last task (one that stopped waiting in between has no `resume`). */
  private readonly resumeReady = () => {
    const ready = this.ready
    this.ready = []
    for (const call of ready) call.resume?.(Effect.void)
  }
}
