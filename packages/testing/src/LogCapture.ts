/**
 * Captures every log line of an effect, structured, for assertions: which
 * lifecycle events were logged, and that no secret was.
 *
 * **Example** (Waiting for the first retry)
 *
 * ```ts
 * import { LogCapture } from "@sturdy/testing"
 * import { Effect } from "effect"
 *
 * Effect.gen(function*() {
 *   const logs = yield* LogCapture.make
 *   const fiber = yield* Effect.forkChild(program.pipe(Effect.provide(logs.layer)))
 *   yield* logs.waitFor((entry) => entry.annotations["sturdy.event"] === "retry")
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Layer, Logger, Queue } from "effect"

/**
 * One captured log line, as `Logger.formatStructured` renders it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly level: string
  readonly message: unknown
  readonly cause: string | undefined
  readonly annotations: Record<string, unknown>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface LogCapture {
  /** Replaces the loggers of whatever it is provided to with the capture. */
  readonly layer: Layer.Layer<never>
  readonly entries: Effect.Effect<ReadonlyArray<Entry>>
  /**
   * The earliest captured line that satisfies the predicate and that no
   * earlier call returned, waiting for more lines if none does yet. Lines that
   * do not match stay available to later calls, so background events (health
   * checks, breaker transitions) can be awaited in any order.
   */
  readonly waitFor: (predicate: (entry: Entry) => boolean) => Effect.Effect<Entry>
  /** Every captured line rendered as one string, messages, annotations and causes included. */
  readonly text: Effect.Effect<string>
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<LogCapture> = Effect.gen(function* () {
  const entries: Array<Entry> = []
  const queue = yield* Queue.unbounded<Entry>()
  const logger = Logger.map(Logger.formatStructured, (entry) => {
    const captured: Entry = {
      level: entry.level,
      message: entry.message,
      cause: entry.cause,
      annotations: entry.annotations
    }
    entries.push(captured)
    Queue.offerUnsafe(queue, captured)
  })
  const returned = new Set<Entry>()
  const waitFor = (predicate: (entry: Entry) => boolean): Effect.Effect<Entry> =>
    Effect.suspend(() => {
      const found = entries.find((entry) => !returned.has(entry) && predicate(entry))
      if (found !== undefined) {
        returned.add(found)
        return Effect.succeed(found)
      }
      // Wake on the next captured line and look again.
      return Effect.flatMap(Queue.take(queue), () => waitFor(predicate))
    })
  return {
    layer: Logger.layer([logger]),
    entries: Effect.sync(() => entries.slice()),
    waitFor,
    text: Effect.sync(() => entries.map((entry) => JSON.stringify(entry)).join("\n"))
  }
})
