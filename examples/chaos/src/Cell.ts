/**
 * One cell of the chaos suite: a fault, the four workloads running against it
 * through Sturdy, and the invariants checked afterwards.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { ResilientPg } from "@sturdy/pg"
import { FaultProxy, PgBouncer, type PgServer, ServerFaults } from "@sturdy/testing"
import { Context, Deferred, Duration, Effect, Fiber, Layer, Redacted, Schedule, type Scope } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import * as Runner from "./Runner.ts"
import * as Workload from "./Workload.ts"

/** What a fault can act on. */
export interface Env {
  readonly server: PgServer.PgServerService
  readonly proxy: FaultProxy.FaultProxyService
  readonly database: { readonly name: string; readonly role: string; readonly url: Redacted.Redacted<string> }
  /** The application names of the clients under test. */
  readonly applicationNames: ReadonlyArray<string>
  /** The PgBouncer the clients connect through, for faults whose route is `"pgbouncer"`. */
  readonly bouncer: PgBouncer.PgBouncerService | undefined
}

export interface Fault {
  readonly name: string
  /**
   * `"unresolvable"`: the clients use a host name that does not resolve, for the whole cell. `"pgbouncer"`: they
   * connect through a real PgBouncer (transaction pooling, its default configuration) in front of the proxy.
   */
  readonly route?: "proxy" | "unresolvable" | "pgbouncer"
  /** Puts the fault in place; it is lifted when the scope closes. */
  readonly inject: (env: Env) => Effect.Effect<void, unknown, Scope.Scope>
}

const terminateAll = (env: Env) => Effect.forEach(env.applicationNames, env.server.terminateBackends, { discard: true })

/** Runs `effect` every `interval` until the scope closes. */
const repeatedly = <E>(effect: Effect.Effect<unknown, E>, interval: Duration.Input) =>
  Effect.asVoid(Effect.forkScoped(Effect.repeat(Effect.ignore(effect), Schedule.spaced(interval))))

const proxyFault = (
  name: string,
  faults: (proxy: FaultProxy.FaultProxyService) => Effect.Effect<void>,
  reset = true
): Fault => ({
  name,
  inject: (env) =>
    Effect.acquireRelease(
      Effect.andThen(faults(env.proxy), reset ? Effect.asVoid(env.proxy.resetAll) : Effect.void),
      () => env.proxy.clear
    )
})

/** Every fault the chaos suite injects, each for the length of the cell's window. */
export const faults: ReadonlyArray<Fault> = [
  proxyFault("latency 300 ms", (proxy) => proxy.set(FaultProxy.latency(300)), false),
  proxyFault("refuse new connections", (proxy) => proxy.set(FaultProxy.refuse)),
  {
    name: "reset every connection",
    inject: (env) => repeatedly(env.proxy.resetAll, "250 millis")
  },
  proxyFault("reset after 300 bytes to the server", (proxy) => proxy.set(FaultProxy.resetAfterBytes(300, "toServer"))),
  proxyFault("reset after 100 bytes to the client", (proxy) => proxy.set(FaultProxy.resetAfterBytes(100, "toClient"))),
  proxyFault("blackhole", (proxy) => proxy.set(FaultProxy.blackhole)),
  proxyFault("bandwidth 2 KB/s", (proxy) => proxy.set(FaultProxy.bandwidth(2048)), false),
  {
    name: "pause, then resume",
    inject: (env) => Effect.acquireRelease(env.proxy.pause, () => env.proxy.resume)
  },
  proxyFault("FATAL 57P03 at start-up (proxy)", (proxy) =>
    proxy.set(FaultProxy.startupError("57P03", "the database system is starting up"))
  ),
  {
    name: "terminate backends (57P01)",
    inject: (env) => repeatedly(terminateAll(env), "300 millis")
  },
  {
    name: "smart shutdown (57P03)",
    inject: (env) => env.server.smartShutdown
  },
  {
    name: "server stop and start",
    inject: (env) => Effect.asVoid(Effect.acquireRelease(env.server.stop, () => Effect.orDie(env.server.start)))
  },
  {
    name: "connection limit (53300)",
    inject: (env) => Effect.andThen(ServerFaults.connectionLimit(env.server, env.database.role, 1), terminateAll(env))
  },
  {
    name: "ALLOW_CONNECTIONS false (55000)",
    inject: (env) => Effect.andThen(ServerFaults.disallowConnections(env.server, env.database.name), terminateAll(env))
  },
  {
    name: "failover stand-in (25006)",
    inject: (env) =>
      Effect.forEach(env.applicationNames, (app) => ServerFaults.readOnly(env.server, env.database.name, app), {
        discard: true
      })
  },
  {
    name: "unresolvable host name",
    route: "unresolvable",
    inject: () => Effect.void
  },
  {
    name: "server restart (3 s)",
    inject: (env) =>
      Effect.asVoid(
        // Down 3 s in all: the cell's window plus the rest here.
        Effect.acquireRelease(
          Effect.andThen(env.server.stop, Effect.sleep(Duration.millis(3000 - Duration.toMillis(timing.window)))),
          () => Effect.orDie(env.server.start)
        )
      )
  },
  {
    name: "PgBouncer restart (transaction pooling)",
    route: "pgbouncer",
    inject: (env) =>
      Effect.asVoid(Effect.acquireRelease(Effect.orDie(env.bouncer!.stop), () => Effect.orDie(env.bouncer!.start)))
  },
  {
    name: "backends killed behind PgBouncer",
    route: "pgbouncer",
    // PgBouncer's server sessions carry the role, not the clients' application names.
    inject: (env) =>
      repeatedly(
        env.server.admin.unsafe(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '${env.database.role}' AND pid <> pg_backend_pid()`
        ),
        "300 millis"
      )
  }
]

/**
 * The policy the chaos clients run with: the development profile with its time scale shrunk so a cell takes
 * seconds (backoff, attempt timeout, pool size). Everything else is the library's default: the breaker's open
 * duration (1 s doubling to 60 s), `whenCircuitOpen`, the statement timeout, the health monitor.
 */
export const policy = {
  profile: "development",
  retriesAfterFirst: 3,
  backoffBase: Duration.millis(50),
  backoffJitter: Duration.millis(50),
  attemptTimeout: Duration.seconds(1),
  maxConnections: 4,
  connectTimeout: Duration.seconds(1)
} as const satisfies Partial<ResilientPg.Options>

/** The longest a call may take under `policy`: every attempt timing out, plus the longest backoff. */
export const callBound = (() => {
  let backoff = 0
  for (let n = 0; n < policy.retriesAfterFirst; n++) {
    backoff += Duration.toMillis(policy.backoffBase) * 2 ** n + Duration.toMillis(policy.backoffJitter)
  }
  return (policy.retriesAfterFirst + 1) * Duration.toMillis(policy.attemptTimeout) + backoff
})()

export interface Row {
  readonly fault: string
  readonly workload: Workload.Name
  readonly calls: number
  readonly succeeded: number
  readonly failures: Readonly<Record<string, number>>
  readonly retries: number
  readonly lost: number
  readonly duplicated: number
  readonly slowestMillis: number
  /** Calls slower than the bound their policy implies. */
  readonly overBound: number
  readonly defects: number
  /** Connections of the client after recovery, and the pool size. */
  readonly connectionsAfter: number
  /** Whether a read through the client succeeded once the fault was lifted. */
  readonly readAfterLift: boolean
}

const timing = { warmUp: "300 millis", window: "1500 millis", cooldown: "700 millis" } as const

/** A client for verification that goes straight to the server, around every fault. */
const direct = (url: Redacted.Redacted<string>) =>
  PgClient.make({ url, applicationName: "sturdy-chaos-verify", maxConnections: 1 }).pipe(
    Effect.provide(Reactivity.layer)
  )

/**
 * Runs one fault against the four workloads at once: each through its own
 * Sturdy client (its own pool and application name) behind the proxy.
 */
export const run = (
  server: PgServer.PgServerService,
  fault: Fault,
  index: number
): Effect.Effect<ReadonlyArray<Row>, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const database = yield* ServerFaults.database(server)
    const verify = yield* direct(database.url)
    const proxy = yield* FaultProxy.make({ host: server.host, port: server.port, url: database.url })
    for (const workload of Workload.all) yield* workload.setup(verify)

    const bouncer =
      fault.route === "pgbouncer"
        ? yield* PgBouncer.make(PgBouncer.upstreamOf(database.url, proxy), { poolMode: "transaction" })
        : undefined
    const url =
      fault.route === "unresolvable"
        ? Redacted.make(
            Redacted.value(proxy.url).replace(`${proxy.host}:${proxy.port}`, "sturdy-does-not-exist.invalid:5432")
          )
        : (bouncer?.url ?? proxy.url)
    const clients = yield* Effect.forEach(Workload.all, (workload) =>
      Effect.gen(function* () {
        const applicationName = `chaos-${index}-${workload.name.replaceAll(" ", "-")}`
        const context = yield* Layer.build(ResilientPg.layer({ ...policy, url, applicationName }))
        return {
          workload,
          applicationName,
          context: context as Context.Context<ResilientPg.ResilientPg>,
          sql: Context.get(context, SqlClient.SqlClient),
          service: Context.get(context, ResilientPg.ResilientPg)
        }
      })
    )
    const env: Env = { server, proxy, database, applicationNames: clients.map((c) => c.applicationName), bouncer }

    const records: Array<Runner.CallRecord> = []
    const stop = yield* Deferred.make<void>()
    const running = yield* Effect.forkChild(
      Effect.forEach(
        clients,
        (client) =>
          Runner.run({
            workload: client.workload,
            sql: client.sql,
            context: client.context,
            concurrency: 3,
            stop: Deferred.await(stop),
            deadline: Duration.millis(callBound * 3),
            pause: "20 millis",
            record: (call) => records.push(call)
          }),
        { concurrency: "unbounded", discard: true }
      )
    )
    yield* Effect.sleep(timing.warmUp)
    yield* Effect.scoped(Effect.andThen(fault.inject(env), Effect.sleep(timing.window)))
    yield* Effect.sleep(timing.cooldown)
    yield* Deferred.succeed(stop, undefined)
    yield* Fiber.join(running)

    return yield* Effect.forEach(clients, (client) =>
      Effect.gen(function* () {
        const calls = records.filter((call) => call.workload === client.workload.name)
        const acknowledged = new Set(calls.filter((call) => call.ended === "ok").map((call) => call.id))
        const attempted = new Set(calls.map((call) => call.id))
        const { lost, duplicated } = yield* client.workload.verify(verify, acknowledged, attempted)
        const failures: Record<string, number> = {}
        for (const call of calls) if (call.ended !== "ok") failures[call.ended] = (failures[call.ended] ?? 0) + 1
        const readAfterLift = fault.route === "unresolvable" ? true : yield* readSucceeds(client.sql)
        // Behind PgBouncer the server's sessions are the pooler's (it keeps its own pool): count the client's sockets.
        const connectionsAfter =
          bouncer === undefined
            ? yield* settledConnections(server, client.applicationName)
            : ((yield* client.service.pool).open ?? 0)
        const stats = yield* client.service.stats
        return {
          fault: fault.name,
          workload: client.workload.name,
          calls: calls.length,
          succeeded: acknowledged.size,
          failures,
          retries: stats.retries,
          lost,
          duplicated,
          slowestMillis: Math.max(0, ...calls.map((call) => call.millis)),
          overBound: calls.filter((call) => call.millis > boundFor(client.workload)).length,
          defects: calls.filter((call) => call.ended.startsWith("Defect") || call.ended === "Hung").length,
          connectionsAfter,
          readAfterLift
        } satisfies Row
      })
    )
  })

/** A transaction's statements run on its connection without an attempt timeout: they are bounded by the fault window. */
const boundFor = (workload: Workload.Workload) =>
  callBound + 500 + (workload.name === "transactions" ? Duration.toMillis(timing.window) + callBound : 0)

/** Once the fault is lifted, a read through the client succeeds within a few seconds (the breaker may need to probe). */
const readSucceeds = (sql: SqlClient.SqlClient): Effect.Effect<boolean> =>
  sql`SELECT 1`.pipe(
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo({ duration: "5 seconds" }))),
    Effect.as(true),
    Effect.catch(() => Effect.succeed(false))
  )

/** The client's connections as the server counts them, once they have settled (at most a few seconds). */
const settledConnections = (
  server: PgServer.PgServerService,
  applicationName: string
): Effect.Effect<number, SqlError> =>
  Effect.gen(function* () {
    let count = yield* server.connectionCount(applicationName)
    for (let i = 0; i < 50 && count > policy.maxConnections; i++) {
      yield* Effect.sleep("100 millis")
      count = yield* server.connectionCount(applicationName)
    }
    return count
  })

/** The table the suite prints: fault × workload. */
export const table = (rows: ReadonlyArray<Row>): string => {
  const header = ["fault", "workload", "calls", "ok", "typed failures by reason", "retries", "lost", "dup", "slowest"]
  const lines = rows.map((row) => [
    row.fault,
    row.workload,
    String(row.calls),
    String(row.succeeded),
    Object.entries(row.failures)
      .sort((a, b) => b[1] - a[1])
      .map(([reason, n]) => `${reason} ${n}`)
      .join(", ") || "-",
    String(row.retries),
    String(row.lost),
    String(row.duplicated),
    `${(row.slowestMillis / 1000).toFixed(2)} s`
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((line) => line[i]!.length)))
  const format = (cells: ReadonlyArray<string>) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`
  return [format(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...lines.map(format)].join("\n")
}
