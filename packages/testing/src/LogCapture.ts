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
  /** Takes captured lines in order, each at most once across calls, until one satisfies the predicate (waiting for more if needed); returns it. */
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
  const waitFor = (predicate: (entry: Entry) => boolean): Effect.Effect<Entry> =>
    Effect.flatMap(Queue.take(queue), (entry) => (predicate(entry) ? Effect.succeed(entry) : waitFor(predicate)))
  return {
    layer: Logger.layer([logger]),
    entries: Effect.sync(() => entries.slice()),
    waitFor,
    text: Effect.sync(() => entries.map((entry) => JSON.stringify(entry)).join("\n"))
  }
})
