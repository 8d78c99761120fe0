/**
 * One process of the fleet scenario (`Fleet.ts` forks four): `callers` open-loop
 * readers through a resilient client, until the parent sends "stop"; then it
 * sends back what its callers saw and what its client counted.
 *
 * Configured by the parent through the environment: FLEET_URL (the endpoint),
 * FLEET_CALLERS, FLEET_PER_CALLER (reads per second per caller), FLEET_CLIENT
 * (`plain`: `@effect/sql-pg` alone; `sturdy`: `ResilientPg` with its defaults
 * but for what follows), FLEET_SHARE (`1`: the breaker and the retry budget
 * shared through the Redis at FLEET_REDIS), FLEET_BUDGET (`0`: no retry
 * budget), FLEET_BREAKER (`never`: a breaker that does not open, to show what
 * the budget alone does).
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { ResilientPg } from "@sturdy/pg"
import { Context, Deferred, Effect, Layer, Logger, Option, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as FleetSharing from "./FleetSharing.ts"
import * as Runner from "./Runner.ts"
import * as Workload from "./Workload.ts"

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`fleetWorker: ${name} is not set`)
  return value
}

const client = env("FLEET_CLIENT") as "plain" | "sturdy"
const share = env("FLEET_SHARE") === "1"
const callers = Number(env("FLEET_CALLERS"))
const perCaller = Number(env("FLEET_PER_CALLER"))

const program = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const context = yield* Effect.context<never>()
  const service = Context.getOption(context, ResilientPg.ResilientPg)
  const stop = yield* Deferred.make<void>()
  process.on("message", (message) => {
    if (message === "stop") Deferred.doneUnsafe(stop, Effect.void)
  })
  const records: Array<Runner.CallRecord> = []
  process.send?.("ready")
  yield* Runner.runOpenLoop({
    workload: Workload.reads,
    sql,
    context: context as Context.Context<ResilientPg.ResilientPg>,
    perSecond: callers * perCaller,
    stop: Deferred.await(stop),
    deadline: "60 seconds",
    record: (call) => records.push(call)
  })
  // A plain client counts nothing: every call is one attempt, never retried.
  const stats = Option.isSome(service)
    ? yield* service.value.stats
    : { attempts: records.length, retries: 0, rejections: 0, connectionsOpened: undefined }
  const failuresByReason: Record<string, number> = {}
  for (const r of records) if (r.ended !== "ok") failuresByReason[r.ended] = (failuresByReason[r.ended] ?? 0) + 1
  process.send?.({
    calls: records.length,
    failed: records.filter((r) => r.ended !== "ok").length,
    failuresByReason,
    attempts: stats.attempts,
    retries: stats.retries,
    rejections: stats.rejections,
    connectionsOpened: stats.connectionsOpened ?? 0
  })
})

const url = Redacted.make(env("FLEET_URL"))
const applicationName = `sturdy-fleet-${process.pid}`
const resilient = ResilientPg.layer({
  url,
  applicationName,
  ...(env("FLEET_BUDGET") === "0" && { retryBudget: false as const }),
  ...(env("FLEET_BREAKER") === "never" && { breakerFailures: 1_000_000_000 })
})
const layer: Layer.Layer<SqlClient.SqlClient, unknown> =
  client === "plain"
    ? PgClient.layer({ url, applicationName, maxConnections: 10 })
    : share
      ? resilient.pipe(Layer.provide(FleetSharing.breaker(env("FLEET_REDIS"), env("FLEET_BREAKER") === "never")))
      : resilient

program.pipe(Effect.provide(layer), Effect.provide(Logger.layer([])), Effect.scoped, Effect.runPromise).then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`fleetWorker: ${String(error)}\n`)
    process.exit(1)
  }
)
