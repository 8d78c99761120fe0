/**
 * A short outage, side by side: plain `@effect/sql-pg` and Sturdy with its
 * default options, reading through the same endpoint at the same time while
 * the server (or the pooler in front of it) goes away for a few seconds.
 *
 * Each client has `readers` callers, each issuing a read every
 * `1000 / perReader` ms whatever happened to the previous one (an open loop:
 * a client that fails fast does not get to make more calls, nor one that
 * waits fewer). The figures are what a service's users would see: calls that
 * failed, and how long after the endpoint accepted connections again each
 * client's first call succeeded.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { ResilientPg } from "@sturdy/pg"
import { Context, Deferred, type Duration, Effect, Fiber, Layer, Logger, type Redacted, type Scope } from "effect"
import { SqlClient } from "effect/sql"
import * as Runner from "./Runner.ts"
import * as Workload from "./Workload.ts"

export interface Options {
  /** Where both clients connect: the server, or a pooler in front of it. */
  readonly url: Redacted.Redacted<string>
  /** Takes the endpoint away. */
  readonly stop: Effect.Effect<void, unknown>
  /** Brings it back; completes when it accepts connections again. */
  readonly start: Effect.Effect<void, unknown>
  readonly outage: Duration.Input
  readonly readers?: number | undefined
  /** Calls per second per reader. */
  readonly perReader?: number | undefined
  /** Options given to Sturdy on top of its defaults (none by default: that is the point). */
  readonly sturdy?: Partial<ResilientPg.Options> | undefined
  /** How long both run after the endpoint is back. */
  readonly after?: Duration.Input | undefined
}

export interface Side {
  readonly calls: number
  readonly failed: number
  readonly failuresByReason: Readonly<Record<string, number>>
  /** From the endpoint accepting again to the end of this client's first successful call that started after the stop. */
  readonly firstSuccessAfterMillis: number | undefined
  readonly p99Millis: number
}

export interface Result {
  readonly plain: Side
  readonly sturdy: Side
  /** The outage as measured: from the stop to the endpoint accepting again. */
  readonly outageMillis: number
}

const percentile = (sorted: ReadonlyArray<number>, q: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!

const side = (records: ReadonlyArray<Runner.CallRecord>, stoppedAt: number, acceptedAt: number): Side => {
  const failuresByReason: Record<string, number> = {}
  for (const r of records) if (r.ended !== "ok") failuresByReason[r.ended] = (failuresByReason[r.ended] ?? 0) + 1
  const firstEnd = records
    .filter((r) => r.ended === "ok" && r.startedAt >= stoppedAt)
    .map((r) => r.startedAt + r.millis)
    .sort((a, b) => a - b)[0]
  return {
    calls: records.length,
    failed: records.filter((r) => r.ended !== "ok").length,
    failuresByReason,
    firstSuccessAfterMillis: firstEnd === undefined ? undefined : Math.max(0, firstEnd - acceptedAt),
    p99Millis: percentile(
      records.map((r) => r.millis).sort((a, b) => a - b),
      0.99
    )
  }
}

/**
 * Runs both clients through one outage. The reads table of `Workload.reads`
 * must exist (its `setup`).
 */
export const compare = (options: Options): Effect.Effect<Result, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const readers = options.readers ?? 8
    const perReader = options.perReader ?? 20
    // Neither client's own logs: the figures tell the story.
    const quiet = Logger.layer([])
    const plain = yield* Layer.build(
      PgClient.layer({ url: options.url, applicationName: "sturdy-recovery-plain" }).pipe(Layer.provide(quiet))
    )
    const sturdy = yield* Layer.build(
      ResilientPg.layer({ url: options.url, applicationName: "sturdy-recovery-sturdy", ...options.sturdy }).pipe(
        Layer.provide(quiet)
      )
    )
    const records = { plain: [] as Array<Runner.CallRecord>, sturdy: [] as Array<Runner.CallRecord> }
    const stop = yield* Deferred.make<void>()
    const run = (name: "plain" | "sturdy", context: Context.Context<never>) =>
      Runner.runOpenLoop({
        workload: Workload.reads,
        sql: Context.get(context as Context.Context<SqlClient.SqlClient>, SqlClient.SqlClient),
        // Reads need nothing but the client.
        context: context as unknown as Context.Context<ResilientPg.ResilientPg>,
        perSecond: readers * perReader,
        stop: Deferred.await(stop),
        deadline: "60 seconds",
        record: (call) => records[name].push(call)
      }).pipe(Effect.provide(quiet))
    const running = yield* Effect.forkChild(
      Effect.all([run("plain", plain as Context.Context<never>), run("sturdy", sturdy as Context.Context<never>)], {
        concurrency: "unbounded",
        discard: true
      })
    )
    yield* Effect.sleep("1 second")
    const stoppedAt = performance.now()
    yield* options.stop
    yield* Effect.sleep(options.outage)
    yield* options.start
    const acceptedAt = performance.now()
    yield* Effect.sleep(options.after ?? "5 seconds")
    yield* Deferred.succeed(stop, undefined)
    yield* Fiber.join(running)
    return {
      plain: side(records.plain, stoppedAt, acceptedAt),
      sturdy: side(records.sturdy, stoppedAt, acceptedAt),
      outageMillis: acceptedAt - stoppedAt
    }
  })

/** One line per client, for a test's output or the demo. */
export const describe = (name: string, result: Result): string => {
  const line = (label: string, s: Side) =>
    `  ${label.padEnd(22)} calls ${String(s.calls).padStart(5)}  failed ${String(s.failed).padStart(4)}  first success ${
      s.firstSuccessAfterMillis === undefined ? "never" : `${(s.firstSuccessAfterMillis / 1000).toFixed(2)} s`
    } after it accepted  p99 ${(s.p99Millis / 1000).toFixed(2)} s  ${Object.entries(s.failuresByReason)
      .map(([reason, n]) => `${reason} ${n}`)
      .join(", ")}`
  return [
    `${name} (outage ${(result.outageMillis / 1000).toFixed(2)} s):`,
    line("plain @effect/sql-pg", result.plain),
    line("Sturdy, defaults", result.sturdy)
  ].join("\n")
}

/** Sturdy's first success no later than plain's + `slackMillis`, and no more failed calls. */
export const sturdyKeepsUp = (result: Result, slackMillis = 500): boolean =>
  result.sturdy.firstSuccessAfterMillis !== undefined &&
  result.plain.firstSuccessAfterMillis !== undefined &&
  result.sturdy.firstSuccessAfterMillis <= result.plain.firstSuccessAfterMillis + slackMillis &&
  result.sturdy.failed <= result.plain.failed
