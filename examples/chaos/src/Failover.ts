/**
 * An unplanned failover on a real primary + synchronous standby, side by
 * side: plain `@effect/sql-pg` pointed at the primary (one host, as users
 * have it today) and Sturdy with its default options and the multi-host URL
 * (`target_session_attrs=read-write`), both writing at a fixed rate while the
 * primary is killed (`pg_ctl stop -m immediate`) or stopped for a switchover
 * (`-m fast`) and the standby promoted.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { ResilientPg } from "@sturdy/pg"
import type { PgCluster } from "@sturdy/testing"
import { Context, Deferred, Effect, Fiber, Layer, Logger, Redacted, type Scope } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { SqlClient } from "effect/sql"
import * as Runner from "./Runner.ts"
import * as Workload from "./Workload.ts"

export interface Side {
  readonly calls: number
  readonly acknowledged: number
  readonly failuresByReason: Readonly<Record<string, number>>
  /** From the promote command returning to the end of the first write acknowledged after it. */
  readonly firstAckAfterPromoteMillis: number | undefined
  readonly lost: number
  readonly duplicated: number
  /** The reads run beside the writes, at the same rate: how many, and how they failed. */
  readonly reads: number
  readonly readFailuresByReason: Readonly<Record<string, number>>
}

export interface Result {
  readonly plain: Side
  readonly sturdy: Side
  /** From the kill to the promote command returning. */
  readonly promoteMillis: number
}

const quiet = Logger.layer([])

/** The cluster's multi-host URL, asking for the primary, as a failover-aware libpq user writes it. */
export const readWriteUrl = (cluster: PgCluster.PgClusterService) =>
  Redacted.make(`${Redacted.value(cluster.multiHostUrl)}?target_session_attrs=read-write`)

export const run = (
  cluster: PgCluster.PgClusterService,
  options: {
    readonly perSecond?: number
    readonly beforeMillis?: number
    readonly afterMillis?: number
    /** `"immediate"`: the primary dies (unplanned); `"fast"`: a planned switchover. */
    readonly stop?: "immediate" | "fast"
  } = {}
): Effect.Effect<Result, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const [first, second] = cluster.nodes
    const admin = yield* PgClient.make({ url: first.url, maxConnections: 1 }).pipe(Effect.provide(Reactivity.layer))
    yield* Workload.inserts.setup(admin)
    yield* Workload.reads.setup(admin)
    const plain = yield* Layer.build(
      PgClient.layer({ url: first.url, applicationName: "sturdy-failover-plain" }).pipe(Layer.provide(quiet))
    )
    const sturdy = yield* Layer.build(
      ResilientPg.layer({ url: readWriteUrl(cluster), applicationName: "sturdy-failover-sturdy" }).pipe(
        Layer.provide(quiet)
      )
    )
    const records = { plain: [] as Array<Runner.CallRecord>, sturdy: [] as Array<Runner.CallRecord> }
    const reads = { plain: [] as Array<Runner.CallRecord>, sturdy: [] as Array<Runner.CallRecord> }
    const stop = yield* Deferred.make<void>()
    const writer = (name: "plain" | "sturdy", context: Context.Context<never>, workload = Workload.inserts) =>
      Runner.runOpenLoop({
        workload,
        sql: Context.get(context as Context.Context<SqlClient.SqlClient>, SqlClient.SqlClient),
        context: context as unknown as Context.Context<ResilientPg.ResilientPg>,
        perSecond: options.perSecond ?? 20,
        stop: Deferred.await(stop),
        deadline: "60 seconds",
        record: (call) => (workload === Workload.inserts ? records : reads)[name].push(call)
      }).pipe(Effect.provide(quiet))
    const writing = yield* Effect.forkChild(
      Effect.all(
        [
          writer("plain", plain as Context.Context<never>),
          writer("sturdy", sturdy as Context.Context<never>),
          writer("plain", plain as Context.Context<never>, Workload.reads),
          writer("sturdy", sturdy as Context.Context<never>, Workload.reads)
        ],
        {
          concurrency: "unbounded",
          discard: true
        }
      )
    )
    yield* Effect.sleep(options.beforeMillis ?? 2000)
    const killedAt = performance.now()
    yield* first.stop(options.stop ?? "immediate")
    yield* second.promote
    const promotedAt = performance.now()
    yield* Effect.sleep(options.afterMillis ?? 5000)
    yield* Deferred.succeed(stop, undefined)
    yield* Fiber.join(writing)

    const verify = yield* PgClient.make({ url: second.url, maxConnections: 1 }).pipe(Effect.provide(Reactivity.layer))
    const rows = yield* verify<{ readonly id: string; readonly n: number }>`
      SELECT client_id::text AS id, count(*)::int AS n FROM chaos_inserts GROUP BY client_id`
    const counts = new Map(rows.map((row) => [row.id, row.n]))
    const side = (mine: ReadonlyArray<Runner.CallRecord>, myReads: ReadonlyArray<Runner.CallRecord>): Side => {
      const acknowledged = mine.filter((r) => r.ended === "ok")
      const failuresByReason: Record<string, number> = {}
      for (const r of mine) if (r.ended !== "ok") failuresByReason[r.ended] = (failuresByReason[r.ended] ?? 0) + 1
      const firstAck = acknowledged
        .filter((r) => r.startedAt + r.millis >= promotedAt)
        .map((r) => r.startedAt + r.millis)
        .sort((a, b) => a - b)[0]
      return {
        calls: mine.length,
        acknowledged: acknowledged.length,
        failuresByReason,
        firstAckAfterPromoteMillis: firstAck === undefined ? undefined : firstAck - promotedAt,
        lost: acknowledged.filter((r) => (counts.get(r.id) ?? 0) === 0).length,
        duplicated: mine.reduce((n, r) => n + Math.max(0, (counts.get(r.id) ?? 0) - 1), 0),
        reads: myReads.length,
        readFailuresByReason: Object.fromEntries(
          [...new Set(myReads.filter((r) => r.ended !== "ok").map((r) => r.ended))].map((ended) => [
            ended,
            myReads.filter((r) => r.ended === ended).length
          ])
        )
      }
    }
    return {
      plain: side(records.plain, reads.plain),
      sturdy: side(records.sturdy, reads.sturdy),
      promoteMillis: promotedAt - killedAt
    }
  })

/** Two lines, one per client. */
export const describe = (result: Result): string => {
  const line = (label: string, s: Side) =>
    `  ${label.padEnd(34)} calls ${String(s.calls).padStart(4)}  acknowledged ${String(s.acknowledged).padStart(4)}  lost ${s.lost}  duplicated ${s.duplicated}  first acknowledged write ${
      s.firstAckAfterPromoteMillis === undefined ? "never" : `${(s.firstAckAfterPromoteMillis / 1000).toFixed(2)} s`
    } after the promotion  ${Object.entries(s.failuresByReason)
      .map(([reason, n]) => `${reason} ${n}`)
      .join(", ")}; reads ${s.reads}, failed ${Object.values(s.readFailuresByReason).reduce((a, b) => a + b, 0)}`
  return [
    `failover (stop to promotion ${(result.promoteMillis / 1000).toFixed(2)} s):`,
    line("plain @effect/sql-pg, one host", result.plain),
    line("Sturdy, defaults, multi-host URL", result.sturdy)
  ].join("\n")
}
