/**
 * Drives a workload with concurrent callers and records every call: when it
 * started, how long it took and how it ended, as a caller sees it.
 */
import { ResilientPg } from "@sturdy/pg"
import { Cause, type Context, Duration, Effect, Exit, Fiber, FiberSet, Option } from "effect"
import type { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import type { Workload } from "./Workload.ts"

/**
 * How a call ended: `"ok"`, or the typed failure a caller would match on
 * (`TransientError:ConnectionRefused`, `OutcomeUnknown:ConnectionClosed`,
 * `CircuitOpen`, `SqlError:ConnectionError`...), `Hung` when it outlived the
 * runner's deadline, `Defect:...` for a defect.
 */
export type Ending = string

export interface CallRecord {
  readonly workload: Workload["name"]
  readonly id: string
  /** `performance.now()` at the start. */
  readonly startedAt: number
  readonly millis: number
  readonly ended: Ending
}

/** The name a caller would match a failure on. */
export const endingOf = (exit: Exit.Exit<unknown, unknown>): Ending => {
  if (Exit.isSuccess(exit)) return "ok"
  const failure = exit.cause.reasons.find(Cause.isFailReason)
  if (failure !== undefined) {
    const error = failure.error as { readonly _tag?: string; readonly reason?: { readonly _tag?: string } }
    if (error._tag === "CircuitOpen" || error._tag === "CircuitHalfOpen") return error._tag
    return error.reason?._tag === undefined ? String(error._tag) : `${error._tag}:${error.reason._tag}`
  }
  const defect = exit.cause.reasons.find(Cause.isDieReason)
  if (defect !== undefined) return `Defect:${String((defect.defect as Error)?.message ?? defect.defect)}`
  return "Interrupted"
}

/** What every call of a run needs: the workload, the client, the cap on a call, and where its record goes. */
interface CallOptions {
  readonly workload: Workload
  readonly sql: SqlClient.SqlClient
  /** What the workload's calls need: the Sturdy client's services (a plain client runs only statements). */
  readonly context: Context.Context<ResilientPg.ResilientPg>
  readonly deadline: Duration.Input
  readonly record: (call: CallRecord) => void
}

const callOnce = (options: CallOptions) =>
  Effect.suspend(() => {
    const id = randomUUID()
    const startedAt = performance.now()
    return Effect.exit(
      ResilientPg.unwrapFailures(options.workload.call(options.sql, id)).pipe(
        Effect.provideContext(options.context),
        Effect.timeoutOption(options.deadline)
      )
    ).pipe(
      Effect.map((exit) => {
        const ended = Exit.isSuccess(exit) && Option.isNone(exit.value) ? "Hung" : endingOf(exit)
        options.record({
          workload: options.workload.name,
          id,
          startedAt,
          millis: performance.now() - startedAt,
          ended
        })
      })
    )
  })

/**
 * Requests arriving at a fixed rate, each in a fiber of its own, whatever
 * happened to the earlier ones: how a server sees its users. Unlike callers
 * that loop, a client that fails fast does not make more calls (and more
 * failures) than one that hangs. Stops issuing when `stop` completes, then
 * waits for the requests in flight.
 */
export const runOpenLoop = (
  options: CallOptions & { readonly perSecond: number; readonly stop: Effect.Effect<void> }
): Effect.Effect<void> =>
  Effect.scoped(
    Effect.gen(function* () {
      const inFlight = yield* FiberSet.make()
      const interval = Duration.millis(1000 / options.perSecond)
      const started = performance.now()
      let issued = 0
      const ticker = yield* Effect.forkChild(
        Effect.forever(
          Effect.gen(function* () {
            // Catch up after a slow tick, so the rate holds over time.
            const due = Math.floor((performance.now() - started) / Duration.toMillis(interval)) + 1
            while (issued < due) {
              issued++
              yield* FiberSet.run(inFlight, callOnce(options))
            }
            yield* Effect.sleep(interval)
          })
        )
      )
      yield* options.stop
      yield* Fiber.interrupt(ticker)
      yield* FiberSet.awaitEmpty(inFlight)
    })
  )

/**
 * Runs `concurrency` callers of the workload until `stop` completes, each
 * waiting `pause` between calls; every call is capped at `deadline` (a call
 * still running then is recorded as `Hung`, and interrupted).
 */
export const run = (
  options: CallOptions & {
    readonly concurrency: number
    readonly stop: Effect.Effect<void>
    readonly pause: Duration.Input
  }
): Effect.Effect<void> => {
  let stopped = false
  const caller = Effect.gen(function* () {
    while (!stopped) {
      yield* callOnce(options)
      yield* Effect.sleep(options.pause)
    }
  })
  return Effect.gen(function* () {
    const callers = yield* Effect.forkChild(
      Effect.all(
        Array.from({ length: options.concurrency }, () => caller),
        { concurrency: "unbounded", discard: true }
      )
    )
    yield* options.stop
    stopped = true
    yield* Fiber.await(callers)
  })
}
