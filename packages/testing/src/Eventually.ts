/**
 * Waiting, in a test, for a condition the test does not control (the
 * server's view of its sessions, a standby catching up, a background fiber's
 * side effect): the check runs again until it passes, and a wait that never
 * ends fails with what it waited for and what it saw last.
 *
 * **Details**
 *
 * `until` runs `check` at once, then again `interval` (20 ms by default)
 * after each run that did not pass: a run passes when it succeeds and, with
 * `accept`, its value satisfies `accept`. It succeeds with the value that
 * passed. When `timeout` has passed since the start, the run in progress is
 * interrupted and the wait fails with `Timeout`, which names `what`, counts
 * the runs and carries the last one's outcome (its value, or its typed
 * failure). `holds` is `until` for a condition that is an `Effect<boolean>`.
 *
 * Typed failures of `check` are retried; a defect or an interruption ends the
 * wait at once, as it would end any effect.
 *
 * **Gotchas**
 *
 * Time is the `Clock` of the fiber. Under `TestClock` (the default of
 * `it.effect`) the interval and the timeout pass only as the test adjusts the
 * clock: to wait for something outside the process in real time, run the wait
 * with `TestClock.withLive`.
 *
 * **Example** (Waiting for the server to see a statement)
 *
 * ```ts
 * import { Eventually } from "@sturdy/testing"
 *
 * const queries = yield* Eventually.until(server.activeQueries(applicationName), {
 *   what: "the INSERT running on the server",
 *   accept: (queries) => queries.some((query) => query.includes("INSERT")),
 *   timeout: "5 seconds"
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Data, Duration, Effect, Formatter, type Predicate, Result } from "effect"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** What the wait is for, as the failure names it: "the standby to have the row". */
  readonly what: string
  /** How long to keep checking, from the start of the first run. */
  readonly timeout: Duration.Input
  /** The pause between the end of one run and the start of the next. Default 20 ms. */
  readonly interval?: Duration.Input | undefined
}

/**
 * The timeout passed before a run of the check passed.
 *
 * @since 0.1.0
 * @category errors
 */
export class Timeout<A = unknown, E = unknown> extends Data.TaggedError("EventuallyTimeout")<{
  readonly what: string
  readonly timeout: Duration.Duration
  /** Runs of the check that finished, the one interrupted at the deadline not included. */
  readonly checks: number
  /** The outcome of the last run that finished; `undefined` when none did. */
  readonly last: Result.Result<A, E> | undefined
}> {
  override get message(): string {
    const last =
      this.last === undefined
        ? "no check finished"
        : `${this.checks} ${this.checks === 1 ? "check" : "checks"}, the last ${
            Result.isSuccess(this.last)
              ? `returned ${render(this.last.success)}`
              : `failed with ${render(this.last.failure)}`
          }`
    return `Timed out after ${Duration.format(this.timeout)} waiting for ${this.what}: ${last}`
  }
}

const maxRendered = 500

/** A value or failure as the message shows it: an error by its name, message and fields, anything else as data. */
const render = (value: unknown): string => {
  let text: string
  if (value instanceof Error) {
    const fields = Object.entries(value).filter(([key]) => !["_tag", "name", "message", "stack"].includes(key))
    text = fields.length === 0 ? String(value) : `${String(value)} ${Formatter.format(Object.fromEntries(fields))}`
  } else {
    text = Formatter.format(value)
  }
  return text.length > maxRendered ? `${text.slice(0, maxRendered)}...` : text
}

const positive = (fn: string, name: string, input: Duration.Input) => {
  const duration = Duration.fromInputUnsafe(input)
  if (!Duration.isFinite(duration) || !(Duration.toMillis(duration) > 0)) {
    throw new RangeError(`${fn}: ${name} must be a positive finite duration, got ${Duration.format(duration)}`)
  }
  return duration
}

/**
 * Runs `check` until it succeeds (and, with `accept`, its value satisfies
 * `accept`), and succeeds with that value; fails with `Timeout` when
 * `timeout` passes first. Throws a `RangeError` at once when `timeout` or
 * `interval` is not a positive finite duration.
 *
 * @since 0.1.0
 * @category waiting
 */
export const until: {
  <A, E, R, B extends A>(
    check: Effect.Effect<A, E, R>,
    options: Options & { readonly accept: Predicate.Refinement<A, B> }
  ): Effect.Effect<B, Timeout<A, E>, R>
  <A, E, R>(
    check: Effect.Effect<A, E, R>,
    options: Options & { readonly accept?: Predicate.Predicate<A> | undefined }
  ): Effect.Effect<A, Timeout<A, E>, R>
} = <A, E, R>(
  check: Effect.Effect<A, E, R>,
  options: Options & { readonly accept?: Predicate.Predicate<A> | undefined }
): Effect.Effect<A, Timeout<A, E>, R> => {
  const timeout = positive("Eventually.until", "timeout", options.timeout)
  const interval = positive("Eventually.until", "interval", options.interval ?? Duration.millis(20))
  const accept = options.accept ?? (() => true)
  return Effect.suspend(() => {
    let checks = 0
    let last: Result.Result<A, E> | undefined
    const run: Effect.Effect<A, never, R> = Effect.flatMap(Effect.result(check), (outcome) => {
      checks++
      last = outcome
      return Result.isSuccess(outcome) && accept(outcome.success)
        ? Effect.succeed(outcome.success)
        : Effect.andThen(Effect.sleep(interval), run)
    })
    return Effect.timeoutOrElse(run, {
      duration: timeout,
      orElse: () => Effect.fail(new Timeout<A, E>({ what: options.what, timeout, checks, last }))
    })
  })
}

/**
 * Runs `condition` until it yields `true`; fails with `Timeout` when
 * `timeout` passes first. `until` with `accept: (holds) => holds`.
 *
 * @since 0.1.0
 * @category waiting
 */
export const holds = <E, R>(
  condition: Effect.Effect<boolean, E, R>,
  options: Options
): Effect.Effect<void, Timeout<boolean, E>, R> =>
  Effect.asVoid(until(condition, { ...options, accept: (holds: boolean) => holds }))
