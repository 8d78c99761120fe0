/**
 * One process of the fleet in SharedBreaker.test.ts: a ResilientPg client on
 * the test's PostgreSQL with a shared breaker on the test's Redis, driven over
 * the IPC channel (`fork`). Every breaker transition is reported as it
 * happens, with the wall-clock time, so the test can measure propagation.
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import { ResilientPg } from "@sturdy/pg"
import { Breaker, SharedBreaker } from "@sturdy/resilience"
import { LogCapture } from "@sturdy/testing"
import { Cause, Duration, Effect, Exit, Layer, Metric, Queue, Redacted, Stream } from "effect"
import { SqlClient } from "effect/sql"

export type Command =
  | { readonly type: "call"; readonly id: number; readonly count: number }
  | { readonly type: "report"; readonly id: number }
  | { readonly type: "exit"; readonly id: number }

export type Reply =
  | { readonly type: "ready" }
  | {
      readonly type: "transition"
      readonly from: string
      readonly to: string
      readonly at: number
      readonly retryAfterMillis: number | undefined
    }
  | { readonly type: "called"; readonly id: number; readonly outcomes: ReadonlyArray<string> }
  | { readonly type: "report"; readonly id: number; readonly report: Report }

export interface Report {
  readonly attempts: number
  readonly rejections: number
  readonly connectionsOpened: number | undefined
  readonly state: string
  readonly sharing: boolean
  readonly gauge: number
  readonly shared: SharedBreaker.Stats
  readonly sharingLogs: ReadonlyArray<{ readonly level: string; readonly sharing: unknown; readonly message: unknown }>
}

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`fleet worker: ${name} is not set`)
  return value
}
const id = env("FLEET_ID")
const send = (reply: Reply) => process.send?.(reply)

const outcomeOf = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return "ok"
  const failure = exit.cause.reasons.find(Cause.isFailReason)
  return failure === undefined ? "defect" : String((failure.error as { readonly _tag?: string })._tag)
}

const program = Effect.gen(function* () {
  const logs = yield* LogCapture.make
  const breaker = SharedBreaker.layer({
    tripPolicy: Breaker.consecutive(5),
    // Long enough that no half-open probe of a caller's comes due in the test: the health monitor closes the circuit.
    openDuration: "20 seconds",
    redis: NodeRedis.layer({ url: env("FLEET_REDIS_URL") }),
    checkInterval: "200 millis",
    origin: `fleet-${id}`
  })
  const database = ResilientPg.layer({
    url: Redacted.make(env("FLEET_PG_URL")),
    applicationName: `sturdy-fleet-${process.pid}`,
    retriesAfterFirst: 0,
    backoffBase: "20 millis",
    backoffJitter: "10 millis"
  }).pipe(Layer.provideMerge(breaker))

  yield* Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const pg = yield* ResilientPg.ResilientPg
    const shared = yield* SharedBreaker.SharedBreaker
    yield* Effect.forkScoped(
      Stream.runForEach(pg.transitions, (t) =>
        Effect.sync(() =>
          send({
            type: "transition",
            from: t.from,
            to: t.to,
            at: Date.now(),
            retryAfterMillis: t.to === "Open" ? Duration.toMillis(t.retryAfter) : undefined
          })
        )
      ),
      { startImmediately: true }
    )
    const commands = yield* Queue.unbounded<Command>()
    process.on("message", (command: Command) => Queue.offerUnsafe(commands, command))
    send({ type: "ready" })
    while (true) {
      const command = yield* Queue.take(commands)
      switch (command.type) {
        case "call": {
          const outcomes: Array<string> = []
          for (let i = 0; i < command.count; i++) {
            outcomes.push(outcomeOf(yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`))))
          }
          send({ type: "called", id: command.id, outcomes })
          break
        }
        case "report": {
          const stats = yield* pg.stats
          const entries = yield* logs.entries
          send({
            type: "report",
            id: command.id,
            report: {
              attempts: stats.attempts,
              rejections: stats.rejections,
              connectionsOpened: stats.connectionsOpened,
              state: (yield* pg.breakerState)._tag,
              sharing: yield* shared.sharing,
              gauge: (yield* Metric.value(SharedBreaker.sharedGauge)).value,
              shared: yield* shared.stats,
              sharingLogs: entries
                .filter((entry) => entry.annotations["sturdy.event"] === "breaker-sharing")
                .map((entry) => ({
                  level: entry.level,
                  sharing: entry.annotations["sturdy.sharing"],
                  message: entry.message
                }))
            }
          })
          break
        }
        case "exit":
          return
      }
    }
  }).pipe(Effect.provide(database), Effect.provide(logs.layer), Effect.scoped)
})

Effect.runPromise(program).then(
  () => process.exit(0),
  (error) => {
    console.error("fleet worker failed:", error)
    process.exit(1)
  }
)
