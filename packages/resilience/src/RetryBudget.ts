/**
 * A retry budget: retries stay a bounded fraction of first attempts, so that
 * during an outage or an overload retrying does not multiply the load.
 *
 * **Details**
 *
 * A token bucket: every call that succeeds deposits `ratio` of a token
 * (as the AWS SDK's retry quota and gRPC's retry throttling refill on
 * success), every retry withdraws one, and the bucket also refills at
 * `minRetriesPerSecond` on its own (Finagle's floor, so a quiet client can
 * still retry an isolated failure). It holds at most `capacity` tokens (ten seconds of the floor,
 * at least 100 tokens, so that a failover that loses a busy client's
 * sessions at once is still retried) and starts full.
 *
 * Over any period of length `T`, retries <= `ratio` x successes +
 * `capacity` + `minRetriesPerSecond` x `T`. Successes are at most first
 * attempts, so under an overload retries stay within `ratio` of first
 * attempts (plus the constants); in an outage nothing succeeds, and retries
 * fall to the floor: attempts stay within about 1.0 x first attempts.
 *
 * A deposit is one comparison and one addition, with no clock read: the
 * success path pays for nothing else. The clock is read only when a retry
 * asks for a token (`now` is passed in, so the module is pure and a test
 * controls time).
 *
 * **Across a fleet**
 *
 * A bucket is one process's. `SharedBreaker.layer` also shares the budgets
 * of the clients built on it through its Redis (the `Budgets` service): each
 * process still decides every retry on its own bucket, with no round trip,
 * and every 250 ms sends what it deposited and spent to a fleet bucket on
 * Redis (same ratio, floor and capacity, for the whole fleet) and lowers its
 * own balance to the fleet's (`report`, `settle`). So a fleet retries about
 * as much as one process would, give or take what its processes spend within
 * one sync.
 *
 * @since 0.1.0
 */
import { Context, type Effect, type Scope } from "effect"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Tokens a success deposits: the fraction of successful calls that may be retried, in [0, 1]. Default 0.1. */
  readonly ratio?: number | undefined
  /** Tokens refilled per second whatever the traffic: a finite number >= 0. Default 1. */
  readonly minRetriesPerSecond?: number | undefined
}

/**
 * The defaults: retries up to 10 % of successful calls, plus one per second.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaults = { ratio: 0.1, minRetriesPerSecond: 1 } as const

/**
 * Checks the options (a `RangeError` naming `fn`, the option and its value) and fills in the defaults.
 *
 * @since 0.1.0
 * @category constructors
 */
export const validate = (
  fn: string,
  options: Options,
  prefix = ""
): { readonly ratio: number; readonly minRetriesPerSecond: number } => {
  const ratio = options.ratio ?? defaults.ratio
  const minRetriesPerSecond = options.minRetriesPerSecond ?? defaults.minRetriesPerSecond
  if (typeof ratio !== "number" || !(ratio >= 0 && ratio <= 1)) {
    throw new RangeError(`${fn}: ${prefix}ratio must be a number in [0, 1], got ${String(ratio)}`)
  }
  if (typeof minRetriesPerSecond !== "number" || !Number.isFinite(minRetriesPerSecond) || minRetriesPerSecond < 0) {
    throw new RangeError(
      `${fn}: ${prefix}minRetriesPerSecond must be a finite number >= 0, got ${String(minRetriesPerSecond)}`
    )
  }
  return { ratio, minRetriesPerSecond }
}

/**
 * The bucket. `deposit` on every success, `tryAcquire` before every retry.
 *
 * @since 0.1.0
 * @category models
 */
export class RetryBudget {
  readonly ratio: number
  readonly minRetriesPerSecond: number
  /** The most tokens the bucket holds. */
  readonly capacity: number
  /** Tokens as of `updatedAt` plus the deposits since (deposits do not read the clock). */
  private tokens: number
  private updatedAt: number
  /** Retries refused so far. */
  refused = 0
  /** Deposited and spent since the last `report`, for a fleet's bucket. */
  private deposited = 0
  private spent = 0

  constructor(options: { readonly ratio: number; readonly minRetriesPerSecond: number }, now: number) {
    this.ratio = options.ratio
    this.minRetriesPerSecond = options.minRetriesPerSecond
    this.capacity = Math.max(100, 10 * options.minRetriesPerSecond)
    this.tokens = this.capacity
    this.updatedAt = now
  }

  /** A success: `ratio` of a token, up to the capacity. */
  deposit(): void {
    if (this.tokens < this.capacity) this.tokens += this.ratio
    this.deposited += this.ratio
  }

  /** Tokens available at `now` (milliseconds): the balance plus the floor's refill since, at most the capacity. */
  available(now: number): number {
    const elapsed = now > this.updatedAt ? now - this.updatedAt : 0
    return Math.min(this.capacity, this.tokens + (elapsed * this.minRetriesPerSecond) / 1000)
  }

  /** A retry at `now` (milliseconds): takes `cost` tokens and answers `true`, or answers `false` and takes none. */
  tryAcquire(now: number, cost = 1): boolean {
    const available = this.available(now)
    if (now > this.updatedAt) this.updatedAt = now
    // A small epsilon: ten deposits of 0.1 add up to 0.9999999999999999.
    if (available + 1e-9 >= cost) {
      this.tokens = available - cost
      this.spent += cost
      return true
    }
    this.tokens = available
    this.refused++
    return false
  }

  /** What was deposited and spent since the last report (a fleet's sync sends it), and starts counting afresh. */
  report(): { readonly deposited: number; readonly spent: number } {
    const report = { deposited: this.deposited, spent: this.spent }
    this.deposited = 0
    this.spent = 0
    return report
  }

  /** The fleet's bucket holds `balance` at `now`: this process's may not hold more. */
  settle(balance: number, now: number): void {
    this.tokens = Math.min(this.available(now), Math.max(0, balance))
    if (now > this.updatedAt) this.updatedAt = now
  }
}

/**
 * Where a client gets its budget when one is in context (`SharedBreaker.layer`
 * provides one that keeps the budgets of a fleet in step); without it, each
 * client makes its own.
 *
 * @since 0.1.0
 * @category services
 */
export class Budgets extends Context.Service<
  Budgets,
  {
    /** The budget of the client of database `key`, kept in step with the fleet's while the scope lasts. */
    readonly make: (
      key: string,
      options: { readonly ratio: number; readonly minRetriesPerSecond: number },
      now: number
    ) => Effect.Effect<RetryBudget, never, Scope.Scope>
  }
>()("@sturdy/resilience/RetryBudget/Budgets") {}

/**
 * A budget, full, as of `now` (milliseconds).
 *
 * **Example** (Retries bounded to 10 % of successes, plus one a second)
 *
 * ```ts
 * import { RetryBudget } from "@sturdy/resilience"
 *
 * const budget = RetryBudget.make({ ratio: 0.1, minRetriesPerSecond: 1 }, Date.now())
 * budget.deposit() // on each success
 * if (!budget.tryAcquire(Date.now())) {
 *   // give up instead of retrying
 * }
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options, now: number): RetryBudget =>
  new RetryBudget(validate("RetryBudget.make", options), now)
