/**
 * One process of the fleet scenario (`Fleet.ts` forks four): `callers` open-loop
 * readers through a resilient client, until the parent sends "stop"; then it
 * sends back what its callers saw and what its client counted.
 *
 * Configured by the parent through the environment: FLEET_URL (the endpoint),
 * FLEET_CALLERS, FLEET_PER_CALLER (reads per second per caller), FLEET_MODE
 * (`local`: each process on its own, no retry budget; `fleet`: the breaker
 * shared through Redis at FLEET_REDIS, and the retry budget).
 */
import { ResilientPg } from "@sturdy/pg"
import { Deferred, Effect, Layer, Logger, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as FleetSharing from "./FleetSharing.ts"
import * as Runner from "./Runner.ts"
import * as Workload from "./Workload.ts"

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`fleetWorker: ${name} is not set`)
  return value
}

const mode = env("FLEET_MODE") as "local" | "fleet"
const callers = Number(env("FLEET_CALLERS"))
const perCaller = Number(env("FLEET_PER_CALLER"))

const program = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const service = yield* ResilientPg.ResilientPg
  const stop = yield* Deferred.make<void>()
  process.on("message", (message) => {
    if (message === "stop") Deferred.doneUnsafe(stop, Effect.void)
  })
  const records: Array<Runner.CallRecord> = []
  process.send?.("ready")
  yield* Runner.runOpenLoop({
    workload: Workload.reads,
    sql,
    context: yield* Effect.context<ResilientPg.ResilientPg>(),
    perSecond: callers * perCaller,
    stop: Deferred.await(stop),
    deadline: "60 seconds",
    record: (call) => records.push(call)
  })
  const stats = yield* service.stats
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

const client = ResilientPg.layer({
  url: Redacted.make(env("FLEET_URL")),
  applicationName: `sturdy-fleet-${process.pid}`,
  ...(mode === "local" && { retryBudget: false as const })
})

program
  .pipe(
    Effect.provide(mode === "fleet" ? client.pipe(Layer.provide(FleetSharing.breaker(env("FLEET_REDIS")))) : client),
    Effect.provide(Logger.layer([])),
    Effect.scoped,
    Effect.runPromise
  )
  .then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`fleetWorker: ${String(error)}\n`)
      process.exit(1)
    }
  )
