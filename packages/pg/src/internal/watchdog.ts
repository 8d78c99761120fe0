/**
 * The watchdog: one fiber per client enforces every attempt's deadline, so the
 * success path pays for no fiber and no timer of its own.
 *
 * @internal
 */
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import type { DatabaseMetrics, Transient } from "@sturdy/resilience"
import { Duration, Effect } from "effect"
import { type Call, InFlight } from "./call.ts"

export interface WatchdogOptions {
  /** What deadlines are read from (effect's `Clock`, or a fake one in tests). */
  readonly clock: { currentTimeMillisUnsafe(): number }
  /** Every attempt's deadline, from its start. */
  readonly timeoutMillis: number
  /**
   * Whether the interrupt cancels just the call's statement: not when
   * statements share a connection, where interrupting does nothing and the
   * server's statement_timeout is the cancellation.
   */
  readonly cancelsStatement: boolean
  readonly recorder: DatabaseMetrics.Recorder
  /** Asks the server to cancel the statement running on a session. */
  readonly interrupt: (connection: PgConnection.PgConnection) => void
  /** Ends a session that stayed silent through the grace period after its cancel. */
  readonly destroy: (connection: PgConnection.PgConnection) => void
  /** The failure that wakes a call whose deadline passed while it was parked for a slot. */
  readonly timeoutOf: (call: Call) => Transient.AttemptTimeout
}

/** The attempts running against their deadline, and those cancelled and waiting out their grace period. */
export class Watchdog {
  readonly inFlight = new InFlight()
  readonly cancelled = new InFlight()
  readonly timeoutMillis: number
  /** How long a cancelled statement has to end before its session is destroyed. */
  readonly graceMillis: number
  /** How often deadlines are checked. */
  readonly tick: Duration.Duration
  /** Checks deadlines every `tick`, forever: forked once per client. */
  readonly loop: Effect.Effect<never>
  private readonly clock: { currentTimeMillisUnsafe(): number }
  private readonly cancelsStatement: boolean
  private readonly recorder: DatabaseMetrics.Recorder
  private readonly interrupt: (connection: PgConnection.PgConnection) => void
  private readonly destroy: (connection: PgConnection.PgConnection) => void
  private readonly timeoutOf: (call: Call) => Transient.AttemptTimeout
  constructor(options: WatchdogOptions) {
    this.clock = options.clock
    this.timeoutMillis = options.timeoutMillis
    this.cancelsStatement = options.cancelsStatement
    this.recorder = options.recorder
    this.interrupt = options.interrupt
    this.destroy = options.destroy
    this.timeoutOf = options.timeoutOf
    this.graceMillis = Math.min(2000, Math.max(50, options.timeoutMillis / 4))
    this.tick = Duration.millis(Math.min(1000, Math.max(10, options.timeoutMillis / 20)))
    this.loop = Effect.forever(
      Effect.andThen(
        Effect.sleep(this.tick),
        Effect.sync(() => this.expire())
      )
    )
  }
  /** Starts an attempt's deadline; `now`: the attempt's start on the watchdog's clock, if the caller has it. */
  watch(call: Call, now = this.clock.currentTimeMillisUnsafe()): void {
    call.deadline = now + this.timeoutMillis
    this.inFlight.add(call)
  }
  /** The attempt settled: nothing is left to enforce. */
  forget(call: Call): void {
    this.inFlight.remove(call)
    this.cancelled.remove(call)
  }
  /** Acts on every deadline that has passed. */
  expire(): void {
    const now = this.clock.currentTimeMillisUnsafe()
    const inFlight = this.inFlight
    for (let call = inFlight.head; call !== undefined && call.deadline <= now; call = inFlight.head) {
      inFlight.remove(call)
      call.timedOut = true
      this.recorder.timeouts++
      if (call.connection !== undefined) {
        // Ask the server to cancel; if the network is silent, end the session after a grace period.
        // (A multiplexed session's interrupt does nothing: its statement_timeout is the cancellation.)
        call.cancelSent = this.cancelsStatement
        this.interrupt(call.connection)
        call.deadline = now + this.graceMillis
        this.cancelled.add(call)
      } else if (call.parked) {
        call.parked = false
        call.resume?.(Effect.fail(this.timeoutOf(call)))
      }
      // Otherwise it is opening a connection, which the driver's connect timeout (the attempt timeout) bounds.
    }
    const cancelled = this.cancelled
    for (let call = cancelled.head; call !== undefined && call.deadline <= now; call = cancelled.head) {
      cancelled.remove(call)
      if (call.connection !== undefined) this.destroy(call.connection)
    }
  }
}
