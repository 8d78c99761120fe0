/**
 * `pnpm demo`: the same concurrent workload, twice, under the same scripted
 * faults: once through plain `@effect/sql-pg`, once through Sturdy. Ends with
 * a side-by-side summary.
 *
 * Sturdy runs with the library's default options: what a user who adds it
 * and changes nothing gets.
 *
 * Options: --duration SECONDS (per run, default 30), --concurrency N (default
 * 8: N x 10 requests per second, arriving at a fixed rate), --scenario NAME
 * (mixed, latency, resets, restart, restart-3s, pgbouncer-restart, 57P03,
 * blackhole, failover, fleet), --when-circuit-open (wait-and-retry, the library's default, or
 * fail-fast), --json (a machine-readable summary instead of the table).
 */
import { NodeRuntime } from "@effect/platform-node"
import * as PgClient from "@effect/sql-pg/PgClient"
import { ResilientPg } from "@sturdy/pg"
import { FaultProxy, PgBouncer, PgCluster, PgServer, RedisServer, ServerFaults } from "@sturdy/testing"
import {
  Config,
  Context,
  Deferred,
  Duration,
  Effect,
  Fiber,
  Layer,
  Logger,
  Option,
  Redacted,
  Schedule,
  type Scope
} from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { SqlClient } from "effect/sql"
import { parseArgs } from "node:util"
import * as Failover from "./Failover.ts"
import * as Fleet from "./Fleet.ts"
import * as Runner from "./Runner.ts"
import * as Workload from "./Workload.ts"

// --- Options -------------------------------------------------------------------

const { values: args } = parseArgs({
  options: {
    duration: { type: "string", default: "30" },
    concurrency: { type: "string", default: "8" },
    scenario: { type: "string", default: "mixed" },
    "when-circuit-open": { type: "string", default: "wait-and-retry" },
    json: { type: "boolean", default: false }
  }
})
const fail = (message: string): never => {
  process.stderr.write(`pnpm demo: ${message}\n`)
  process.exit(2)
}
const durationSeconds = Number(args.duration)
if (!Number.isFinite(durationSeconds) || durationSeconds < 5 || durationSeconds > 600) {
  fail(`--duration must be a number of seconds between 5 and 600, got ${JSON.stringify(args.duration)}`)
}
const whenCircuitOpen = args["when-circuit-open"]
if (whenCircuitOpen !== "fail-fast" && whenCircuitOpen !== "wait-and-retry") {
  fail(`--when-circuit-open must be fail-fast or wait-and-retry, got ${JSON.stringify(whenCircuitOpen)}`)
}
const concurrency = Number(args.concurrency)
if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) {
  fail(`--concurrency must be an integer between 1 and 256, got ${JSON.stringify(args.concurrency)}`)
}

// --- The script --------------------------------------------------------------

interface Env {
  readonly server: PgServer.PgServerService | undefined
  readonly proxy: FaultProxy.FaultProxyService
  /** A real PgBouncer (transaction pooling) in front of the proxy, for the scenario that restarts it. */
  readonly bouncer: PgBouncer.PgBouncerService | undefined
  /** Set when the server has come back from the restart phase. */
  readonly serverReturned: (at: number) => void
}

interface Phase {
  readonly name: string
  /** Fractions of the run. */
  readonly from: number
  readonly to: number
  /** A fixed length instead of `to`, for outages whose length is the point (a 3 s restart). */
  readonly seconds?: number
  readonly inject: (env: Env) => Effect.Effect<void, unknown, Scope.Scope>
}

const proxyFault = (fault: FaultProxy.Fault, resetFirst: boolean) => (env: Env) =>
  Effect.acquireRelease(
    Effect.andThen(env.proxy.set(fault), resetFirst ? Effect.asVoid(env.proxy.resetAll) : Effect.void),
    () => env.proxy.clear
  )

const phases = {
  latency: { name: "latency spike (400 ms)", inject: proxyFault(FaultProxy.latency(400), false) },
  resets: {
    name: "connection resets",
    inject: (env: Env) =>
      Effect.asVoid(Effect.forkScoped(Effect.repeat(env.proxy.resetAll, Schedule.spaced("300 millis"))))
  },
  restart: {
    name: "server restart",
    inject: (env: Env) =>
      env.server === undefined
        ? // A server we do not own: stand in for the restart at the proxy.
          Effect.acquireRelease(
            Effect.andThen(env.proxy.set(FaultProxy.refuse), Effect.asVoid(env.proxy.resetAll)),
            () =>
              Effect.andThen(
                env.proxy.clear,
                Effect.sync(() => env.serverReturned(performance.now()))
              )
          )
        : Effect.acquireRelease(env.server.stop, () =>
            Effect.andThen(
              Effect.orDie(env.server!.start),
              Effect.sync(() => env.serverReturned(performance.now()))
            )
          )
  },
  "pgbouncer-restart": {
    name: "PgBouncer restart (3 s)",
    inject: (env: Env) =>
      Effect.acquireRelease(Effect.orDie(env.bouncer!.stop), () =>
        Effect.andThen(
          Effect.orDie(env.bouncer!.start),
          Effect.sync(() => env.serverReturned(performance.now()))
        )
      )
  },
  "57P03": {
    name: "57P03 window (starting up)",
    inject: proxyFault(FaultProxy.startupError("57P03", "the database system is starting up"), true)
  },
  blackhole: { name: "blackhole (the network goes silent)", inject: proxyFault(FaultProxy.blackhole, true) }
} as const satisfies Record<string, Omit<Phase, "from" | "to">>

const scenarios: Record<string, ReadonlyArray<Phase>> = {
  mixed: [
    { ...phases.latency, from: 0.1, to: 0.2 },
    { ...phases.resets, from: 0.26, to: 0.34 },
    { ...phases.restart, from: 0.4, to: 0.55 },
    { ...phases["57P03"], from: 0.62, to: 0.72 },
    { ...phases.blackhole, from: 0.78, to: 0.9 }
  ],
  ...Object.fromEntries(
    Object.entries(phases)
      .filter(([key]) => key !== "pgbouncer-restart")
      .map(([key, phase]) => [key, [{ ...phase, from: 0.2, to: 0.7 }]])
  ),
  "restart-3s": [{ ...phases.restart, name: "server restart (3 s)", from: 0.3, to: 0.3, seconds: 3 }],
  "pgbouncer-restart": [{ ...phases["pgbouncer-restart"], from: 0.3, to: 0.3, seconds: 3 }]
}
const script =
  args.scenario === "failover" || args.scenario === "fleet"
    ? []
    : (scenarios[args.scenario] ??
      fail(
        `--scenario must be one of ${[...Object.keys(scenarios), "failover", "fleet"].join(", ")}, got ${JSON.stringify(args.scenario)}`
      ))

// --- The two clients ---------------------------------------------------------

const poolSize = 10

// Both with their defaults (a pool of 10 is both libraries' default); Sturdy's whenCircuitOpen only if asked.
const clients = {
  plain: (url: Redacted.Redacted<string>) =>
    PgClient.layer({ url, applicationName: "sturdy-demo-plain", maxConnections: poolSize }),
  sturdy: (url: Redacted.Redacted<string>) =>
    ResilientPg.layer({
      url,
      applicationName: "sturdy-demo-sturdy",
      maxConnections: poolSize,
      whenCircuitOpen: whenCircuitOpen as "fail-fast" | "wait-and-retry"
    })
}

// --- Running -------------------------------------------------------------------

interface Summary {
  readonly client: "plain" | "sturdy"
  readonly calls: number
  readonly succeeded: number
  readonly successRate: number
  readonly failuresByReason: Readonly<Record<string, number>>
  readonly lostWrites: number
  readonly duplicatedWrites: number
  readonly p50Millis: number
  readonly p99Millis: number
  /** From the server's return (end of the restart phase) to the first call that succeeded after it. */
  readonly recoveryMillis: number | undefined
}

const percentile = (sorted: ReadonlyArray<number>, q: number) =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!

const tty = process.stdout.isTTY === true && !args.json
const write = (text: string) => Effect.sync(() => process.stdout.write(text))

const runOnce = (
  name: "plain" | "sturdy",
  env: Omit<Env, "serverReturned">,
  verify: SqlClient.SqlClient,
  runIndex: number
) =>
  Effect.gen(function* () {
    // The status line tells the story; the clients' own logs would drown it.
    const context = yield* Layer.build(
      (clients[name](env.bouncer?.url ?? env.proxy.url) as Layer.Layer<SqlClient.SqlClient, unknown>).pipe(
        Layer.provide(Logger.layer([]))
      )
    )
    const sql = Context.get(context, SqlClient.SqlClient)
    const resilient = Context.getOption(context as Context.Context<never>, ResilientPg.ResilientPg)
    const breakerState = Option.match(resilient, {
      onNone: () => Effect.succeed("-"),
      onSome: (service) => Effect.map(service.breakerState, (state) => state._tag as string)
    })
    const records: Array<Runner.CallRecord> = []
    let returnedAt: number | undefined
    const runEnv: Env = { ...env, serverReturned: (at) => (returnedAt = at) }

    // Each run writes to tables of its own.
    const mixed: Workload.Workload = {
      name: "inserts",
      writes: true,
      setup: () => Effect.void,
      call: (sql, id) => byName[kindOf(id)].call(sql, id),
      verify: () => Effect.succeed({ lost: 0, duplicated: 0 })
    }

    const totalMillis = durationSeconds * 1000
    const started = performance.now()
    const stop = yield* Deferred.make<void>()
    const workload = yield* Effect.forkChild(
      Runner.runOpenLoop({
        workload: mixed,
        sql,
        // The mixed workload runs statements only, which need nothing but the client.
        context: context as unknown as Context.Context<ResilientPg.ResilientPg>,
        perSecond: concurrency * 10,
        stop: Deferred.await(stop),
        // Longer than any call can take with the defaults (4 attempts of 10 s plus about 10 s of backoff).
        deadline: "60 seconds",
        record: (call) => records.push(call)
      })
    )
    let current = "steady"
    const faults = yield* Effect.forkChild(
      Effect.forEach(
        script,
        (phase) =>
          Effect.gen(function* () {
            const wait = started + phase.from * totalMillis - performance.now()
            if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
            current = phase.name
            const end =
              phase.seconds === undefined ? started + phase.to * totalMillis : performance.now() + phase.seconds * 1000
            yield* Effect.scoped(
              Effect.andThen(phase.inject(runEnv), Effect.sleep(Duration.millis(Math.max(0, end - performance.now()))))
            )
            current = "steady"
          }),
        { discard: true }
      )
    )
    const ticker = yield* Effect.forkChild(
      Effect.repeat(
        Effect.gen(function* () {
          const elapsed = (performance.now() - started) / totalMillis
          const ok = records.filter((r) => r.ended === "ok").length
          const failed = records.length - ok
          const latencies = records
            .slice(-500)
            .map((r) => r.millis)
            .sort((a, b) => a - b)
          const breaker = yield* breakerState
          const bar = "#".repeat(Math.round(Math.min(1, elapsed) * 24)).padEnd(24, ".")
          const line = `[${bar}] ${String(Math.round(Math.min(1, elapsed) * 100)).padStart(3)}% run ${runIndex}/2 ${name.padEnd(6)} | ${current.padEnd(44)} | breaker ${breaker.padEnd(8)} | ok ${ok} failed ${failed} | last 500 calls p50 ${percentile(latencies, 0.5).toFixed(0)} ms p99 ${percentile(latencies, 0.99).toFixed(0)} ms`
          if (tty) yield* write(`\r${line.slice(0, (process.stdout.columns ?? 160) - 1)}`)
          else if (!args.json) yield* write(`${line}\n`)
        }),
        Schedule.spaced(tty ? "250 millis" : "2 seconds")
      )
    )
    yield* Fiber.join(faults)
    yield* Effect.sleep(Duration.millis(Math.max(0, started + totalMillis - performance.now())))
    yield* Deferred.succeed(stop, undefined)
    yield* Fiber.join(workload)
    yield* Fiber.interrupt(ticker)
    if (tty) yield* write("\n")

    const ok = records.filter((r) => r.ended === "ok")
    const writes = (workload: Workload.Workload) => {
      const mine = records.filter((r) => kindOf(r.id) === workload.name)
      return {
        acknowledged: new Set(mine.filter((r) => r.ended === "ok").map((r) => r.id)),
        attempted: new Set(mine.map((r) => r.id))
      }
    }
    let lost = 0
    let duplicated = 0
    for (const workload of [Workload.idempotentUpserts, Workload.inserts]) {
      const { acknowledged, attempted } = writes(workload)
      const checked = yield* workload.verify(verify, acknowledged, attempted)
      lost += checked.lost
      duplicated += checked.duplicated
    }
    const failuresByReason: Record<string, number> = {}
    for (const r of records) if (r.ended !== "ok") failuresByReason[r.ended] = (failuresByReason[r.ended] ?? 0) + 1
    const firstAfterReturn =
      returnedAt === undefined
        ? undefined
        : ok
            .map((r) => r.startedAt + r.millis)
            .filter((end) => end >= returnedAt!)
            .sort((a, b) => a - b)[0]
    const latencies = records.map((r) => r.millis).sort((a, b) => a - b)
    return {
      client: name,
      calls: records.length,
      succeeded: ok.length,
      successRate: records.length === 0 ? 0 : (ok.length / records.length) * 100,
      failuresByReason,
      lostWrites: lost,
      duplicatedWrites: duplicated,
      p50Millis: percentile(latencies, 0.5),
      p99Millis: percentile(latencies, 0.99),
      recoveryMillis:
        firstAfterReturn === undefined || returnedAt === undefined ? undefined : firstAfterReturn - returnedAt
    } satisfies Summary
  }).pipe(Effect.scoped)

/** Which workload a call of the mixed workload runs: half reads, a quarter upserts, a quarter plain inserts. */
const kindOf = (id: string): "reads" | "idempotent upserts" | "inserts" => {
  const dice = id.charCodeAt(0) % 4
  return dice < 2 ? "reads" : dice === 2 ? "idempotent upserts" : "inserts"
}
const byName = {
  reads: Workload.reads,
  "idempotent upserts": Workload.idempotentUpserts,
  inserts: Workload.inserts
} as const

const summaryTable = (summaries: ReadonlyArray<Summary>) => {
  const [plain, sturdy] = summaries as [Summary, Summary]
  const reasons = [...new Set(summaries.flatMap((s) => Object.keys(s.failuresByReason)))].sort()
  const rows: Array<[string, string, string]> = [
    ["", "plain @effect/sql-pg", "Sturdy"],
    ["calls", String(plain.calls), String(sturdy.calls)],
    ["success rate", `${plain.successRate.toFixed(1)} %`, `${sturdy.successRate.toFixed(1)} %`],
    ["lost writes", String(plain.lostWrites), String(sturdy.lostWrites)],
    ["duplicated writes", String(plain.duplicatedWrites), String(sturdy.duplicatedWrites)],
    [
      "server back -> first success",
      plain.recoveryMillis === undefined ? "-" : `${(plain.recoveryMillis / 1000).toFixed(2)} s`,
      sturdy.recoveryMillis === undefined ? "-" : `${(sturdy.recoveryMillis / 1000).toFixed(2)} s`
    ],
    [
      "latency p50 / p99",
      `${plain.p50Millis.toFixed(0)} / ${plain.p99Millis.toFixed(0)} ms`,
      `${sturdy.p50Millis.toFixed(0)} / ${sturdy.p99Millis.toFixed(0)} ms`
    ],
    ["failures surfaced to callers:", "", ""],
    ...reasons.map((reason): [string, string, string] => [
      `  ${reason}`,
      String(plain.failuresByReason[reason] ?? 0),
      String(sturdy.failuresByReason[reason] ?? 0)
    ])
  ]
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((row) => row[i]!.length)))
  return rows
    .map((row) => `${row[0].padEnd(widths[0]!)}   ${row[1].padStart(widths[1]!)}   ${row[2].padStart(widths[2]!)}`)
    .join("\n")
}

/**
 * `--scenario failover`: a real primary and synchronous standby (PgCluster); plain on the primary's address, Sturdy
 * on the multi-host URL, both writing; the primary is killed and the standby promoted.
 */
const failover: Effect.Effect<void, unknown, Scope.Scope> = Effect.gen(function* () {
  if (!args.json) {
    yield* write(
      "Starting a primary and a synchronous streaming standby (embedded PostgreSQL 18 binaries)...\n" +
        `Workload: ${concurrency * 10} inserts/s per client (--concurrency ${concurrency} x 10/s), plain inserts with client ids, both clients at once.\n` +
        `Script: the primary is killed (pg_ctl stop -m immediate) after ${Math.round(durationSeconds / 3)} s and the standby promoted; the run ends ${Math.round((durationSeconds * 2) / 3)} s later.\n` +
        "plain @effect/sql-pg: the primary's address, as users have it today. Sturdy: its default options and the multi-host URL with target_session_attrs=read-write.\n\n"
    )
  }
  const cluster = yield* PgCluster.make()
  yield* cluster.waitForStreaming
  const result = yield* Failover.run(cluster, {
    perSecond: concurrency * 10,
    beforeMillis: (durationSeconds * 1000) / 3,
    afterMillis: (durationSeconds * 2000) / 3
  })
  yield* write(args.json ? `${JSON.stringify(result, null, 2)}\n` : `${Failover.describe(result)}\n`)
})

/**
 * `--scenario fleet`: four processes on one embedded server through a 10 s outage, once per configuration (plain
 * `@effect/sql-pg`; Sturdy alone, without and with its retry budget; Sturdy as a fleet, the breaker and the budget
 * shared through a real Redis; the same with a breaker that never opens, for the budget alone): connection attempts
 * reaching the server's port during the outage and in the first second after it.
 */
const fleet: Effect.Effect<void, unknown, Scope.Scope> = Effect.gen(function* () {
  if (!args.json) {
    yield* write(
      `Starting an embedded PostgreSQL 18 and a Redis (Debian's redis-server); 4 processes of 50 readers, 2 reads/s each, through a counting proxy; the server stops for 10 s, once for each of ${Fleet.configurations.length} configurations (about ${Fleet.configurations.length * 17} s)...\n\n`
    )
  }
  const server = yield* PgServer.makeEmbedded
  const redis = yield* RedisServer.make()
  const database = yield* ServerFaults.database(server)
  const verify = yield* PgClient.make({
    url: database.url,
    applicationName: "sturdy-demo-verify",
    maxConnections: 1
  }).pipe(Effect.provide(Reactivity.layer))
  yield* Workload.reads.setup(verify)
  const result = yield* Fleet.compare({ server: { ...server, url: database.url }, redisUrl: redis.url })
  yield* write(args.json ? `${JSON.stringify(result, null, 2)}\n` : `${Fleet.describe(result)}\n`)
})

const program: Effect.Effect<void, unknown, Scope.Scope> = Effect.gen(function* () {
  if (args.scenario === "failover") return yield* failover
  if (args.scenario === "fleet") return yield* fleet
  const databaseUrl = yield* Config.option(Config.Redacted("DATABASE_URL"))
  const server = Option.isSome(databaseUrl) ? undefined : yield* PgServer.makeEmbedded
  const external = Option.isSome(databaseUrl) ? yield* Layer.build(PgServer.layer) : undefined
  const target = server ?? Context.get(external!, PgServer.PgServer)
  const database = yield* ServerFaults.database(target)
  const verify = yield* PgClient.make({
    url: database.url,
    applicationName: "sturdy-demo-verify",
    maxConnections: 1
  }).pipe(Effect.provide(Reactivity.layer))
  const proxy = yield* FaultProxy.make({ host: target.host, port: target.port, url: database.url })
  const bouncer =
    args.scenario === "pgbouncer-restart"
      ? yield* PgBouncer.make(PgBouncer.upstreamOf(database.url, proxy), { poolMode: "transaction" })
      : undefined
  for (const workload of [Workload.reads, Workload.idempotentUpserts, Workload.inserts]) yield* workload.setup(verify)

  if (!args.json) {
    yield* write(
      `${server ? `Embedded PostgreSQL 18 on 127.0.0.1:${target.port}` : "DATABASE_URL's server (its restart is simulated at the proxy)"}; ` +
        `clients connect through a fault-injecting proxy on 127.0.0.1:${proxy.port}.\n` +
        `Workload: ${concurrency * 10} requests/s arriving at a fixed rate (--concurrency ${concurrency} x 10/s): half reads, a quarter idempotent upserts, a quarter plain inserts, for ${durationSeconds} s per run.\n` +
        `Script: ${script.map((p) => `${p.name} at ${Math.round(p.from * durationSeconds)}-${p.seconds === undefined ? Math.round(p.to * durationSeconds) : Math.round(p.from * durationSeconds + p.seconds)} s`).join("; ")}.\n` +
        `${bouncer === undefined ? "" : `Both clients connect through a real PgBouncer ${bouncer.poolMode} pool on 127.0.0.1:${bouncer.port} (its default configuration), in front of the proxy.\n`}` +
        `Both clients with their default options. Sturdy's: development profile (3 retries, backoff 1 s x 2^n + jitter in [0, 1 s)), attempt timeout 10 s, breaker opens after 5 failed attempts for 1 s doubling to 60 s and is closed by its health probe as soon as the server answers, rejected calls ${whenCircuitOpen === "wait-and-retry" ? "retry on their backoff (whenCircuitOpen wait-and-retry)" : "fail at once (--when-circuit-open fail-fast)"}.\n\n`
    )
  }
  const env = { server, proxy, bouncer }
  const plain = yield* runOnce("plain", env, verify, 1)
  const sturdy = yield* runOnce("sturdy", env, verify, 2)
  if (args.json) {
    yield* write(
      `${JSON.stringify({ durationSeconds, concurrency, scenario: args.scenario, plain, sturdy }, null, 2)}\n`
    )
  } else {
    yield* write(`\n${summaryTable([plain, sturdy])}\n`)
  }
})

NodeRuntime.runMain(Effect.scoped(program).pipe(Effect.provide(Logger.layer([]))))
