/**
 * One statement's attempts, and the lists the watchdog keeps them in while an attempt runs.
 *
 * @internal
 */
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import type { Transient } from "@sturdy/resilience"
import type { Effect } from "effect"
import type { Builder } from "./statementText.ts"

/** One statement's attempts, and its node in the watchdog's list while an attempt runs. */
export class Call {
  readonly started: number
  sql: string | undefined = undefined
  /** The statement's builder (`@effect/sql` hands it to the borrower): `sqlOf` learns the text from it. */
  builder: Builder | undefined = undefined
  sent = false
  attempts = 0
  /** The breaker generation that admitted the current attempt. */
  generation = 0
  timedOut = false
  /** A cancel request was sent for the current attempt's statement. */
  cancelSent = false
  deadline = 0
  connection: PgConnection.PgConnection | undefined = undefined
  /** Holds one of the stack's slots (one per pooled connection) until the attempt settles. */
  slot = false
  /** Parked, waiting for a slot; `resume` wakes it (or times it out). */
  parked = false
  resume: ((effect: Effect.Effect<void, Transient.AttemptTimeout>) => void) | undefined = undefined
  prev: Call | undefined = undefined
  next: Call | undefined = undefined
  /** The list the call is in: a call moves from the in-flight list to the cancelled one, never in both. */
  list: InFlight | undefined = undefined
  /**
   * What settles the call when its statement succeeds, run (once) by the
   * connection that ran it, in the map that takes the rows: the first attempt's
   * success then costs the stack no continuation of its own. `undefined`:
   * settled, or settled by the stack itself (retries).
   */
  succeeded: ((call: Call) => void) | undefined = undefined
  /** The lent connection built this call's statement (`@effect/sql` does, synchronously). */
  routed = false
  /** Settles the call as succeeded, once: whichever of the connection and the stack sees the success first. */
  settleSucceeded(): void {
    const succeeded = this.succeeded
    if (succeeded === undefined) return
    this.succeeded = undefined
    succeeded(this)
  }
  constructor(started: number) {
    this.started = started
  }
}

/**
 * A FIFO of calls, linked through the calls themselves. Every attempt has the
 * same timeout (and every cancelled one the same grace), so deadlines come in
 * order. `remove` ignores a call that is in another list (or none).
 */
export class InFlight {
  head: Call | undefined = undefined
  tail: Call | undefined = undefined
  add(call: Call): void {
    if (call.list !== undefined) call.list.remove(call)
    call.prev = this.tail
    call.next = undefined
    if (this.tail === undefined) this.head = call
    else this.tail.next = call
    this.tail = call
    call.list = this
  }
  remove(call: Call): void {
    if (call.list !== this) return
    if (call.prev === undefined) this.head = call.next
    else call.prev.next = call.next
    if (call.next === undefined) this.tail = call.prev
    else call.next.prev = call.prev
    call.prev = call.next = undefined
    call.list = undefined
  }
}
