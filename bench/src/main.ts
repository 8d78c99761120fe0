/**
 * `pnpm bench`: Sturdy side by side with what users would otherwise choose,
 * measured in one run on one machine, written to BENCHMARKS.md.
 *
 * `pnpm bench --quick` runs a reduced version (fewer rounds, shorter
 * windows) in under a minute, so CI keeps the harness working; its numbers are
 * noisy and no threshold is checked.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { ResilientPg, StatementStats } from "@sturdy/pg"
// The stack is internal to @sturdy/pg; the benchmark measures it directly.
import * as Stack from "../../packages/pg/src/internal/stack.ts"
import { Breaker, DatabaseMetrics, Profile, RetryBudget } from "@sturdy/resilience"
import { PgServer } from "@sturdy/testing"
import {
  circuitBreaker,
  ConsecutiveBreaker,
  ExponentialBackoff,
  handleAll,
  retry,
  timeout,
  TimeoutStrategy,
  wrap
} from "cockatiel"
import { Context, Duration, Effect, Exit, Fiber, Layer, Logger, Schedule, type Scope } from "effect"
import * as CircuitBreaker from "effect/persistence/CircuitBreaker"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as SqlClient from "effect/sql/SqlClient"
import { ConnectionError, SqlError } from "effect/sql/SqlError"
import OpossumBreaker from "opossum"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { alternate, type Case, format, median, percentile, table } from "./harness.ts"

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    /**
     * `--only=throughput`: only the throughput table (`--mode=exclusive|multiplexed` for one mode's cells), printed
     * and not written to a file: for measuring a change to the hot path without the whole run.
     */
    only: { type: "string" },
    mode: { type: "string" }
  }
})
const quick = args.quick
const settings = quick
  ? {
      rounds: 3,
      overheadCalls: 50_000,
      throughputMillis: 250,
      throughputRounds: 3,
      rejections: 20_000,
      memoryStatements: 100_000,
      outageMillis: 1000,
      fixedOpen: "4 seconds"
    }
  : {
      rounds: 7,
      overheadCalls: 300_000,
      throughputMillis: 500,
      throughputRounds: 11,
      rejections: 200_000,
      memoryStatements: 1_000_000,
      outageMillis: 5000,
      fixedOpen: "60 seconds"
    }

const log = (line: string) => process.stderr.write(`${line}\n`)
const sections: Array<string> = []

// --- 1. Policy overhead, no database ---------------------------------------------------------------------------------

/** A connection the stack never touches: the statement under test ignores it. */
const fakeConnection = {} as PgConnection.PgConnection
const fakePool: Stack.PoolLike = { use: (f) => f(fakeConnection) }

/** Sturdy's production stack (retry, in-process breaker, attempt deadline, metrics) over `pool`, no database. */
const stackOver = (pool: Stack.PoolLike, openDuration: Duration.Input, profile: Profile.Profile = Profile.production) =>
  Effect.gen(function* () {
    const breaker = yield* Breaker.make({ tripPolicy: Breaker.consecutive(5), openDuration })
    return yield* Stack.make({
      pool,
      maxConnections: 10,
      statementsPerConnection: 1,
      profile,
      sentPhaseRetry: "safe",
      whenCircuitOpen: "fail-fast",
      // The default budget, as ResilientPg builds it: its deposit is on the success path measured here.
      retryBudget: RetryBudget.make(RetryBudget.defaults, Date.now()),
      breaker,
      key: "db",
      recorder: new DatabaseMetrics.Recorder(),
      statements: new StatementStats.Table(500),
      sessions: new Stack.Sessions({ retire: () => Effect.void }),
      idempotency: () => "auto"
    })
  })

/**
 * `calls` runs of the effect `make` returns, built for each run: a borrower's
 * effect is a call, run once (as `@effect/sql` builds and runs it per
 * statement), so every case is built and run in the loop.
 */
const runEffectLoop = (make: () => Effect.Effect<unknown, unknown>, calls: number) => async () => {
  const loop = Effect.gen(function* () {
    for (let i = 0; i < calls; i++) yield* make()
  })
  const started = performance.now()
  await Effect.runPromise(loop)
  return ((performance.now() - started) * 1e6) / calls
}

const runPromiseLoop = (call: () => Promise<unknown>, calls: number) => async () => {
  const started = performance.now()
  for (let i = 0; i < calls; i++) await call()
  return ((performance.now() - started) * 1e6) / calls
}

const overhead = Effect.gen(function* () {
  log("1/5 policy overhead, no database")
  const calls = settings.overheadCalls
  const bare = Effect.succeed(1)

  const stack = yield* stackOver(fakePool, "60 seconds")
  const statement = () => bare
  const sturdy = () => stack.borrower(statement)

  // effect's own composite of the same three policies.
  const effectBreaker = yield* CircuitBreaker.make({
    tripPolicy: CircuitBreaker.consecutive(5),
    openDuration: "60 seconds"
  }).pipe(Effect.provide(CircuitBreaker.layerStoreMemory()))
  const composite = bare.pipe(
    Effect.timeout(Duration.seconds(30)),
    (effect) => effectBreaker.execute(effect, { key: "db" }),
    Effect.retry(Schedule.exponential("1 second").pipe(Schedule.upTo({ times: 5 })))
  )

  const resolved = () => Promise.resolve(1)
  const cockatiel = wrap(
    retry(handleAll, { maxAttempts: 5, backoff: new ExponentialBackoff() }),
    circuitBreaker(handleAll, { halfOpenAfter: 60_000, breaker: new ConsecutiveBreaker(5) }),
    timeout(30_000, TimeoutStrategy.Cooperative)
  )
  const opossum = new OpossumBreaker(resolved, { timeout: 30_000, resetTimeout: 60_000 })

  const cases: ReadonlyArray<Case> = [
    { name: "bare Effect", run: runEffectLoop(() => bare, calls) },
    { name: "Sturdy full stack", run: runEffectLoop(sturdy, calls) },
    {
      name: "effect: Effect.retry + CircuitBreaker.execute + Effect.timeout",
      run: runEffectLoop(() => composite, calls)
    },
    { name: "bare await", run: runPromiseLoop(resolved, calls) },
    {
      name: "cockatiel: wrap(retry, circuitBreaker, timeout)",
      run: runPromiseLoop(() => cockatiel.execute(resolved), calls)
    },
    { name: "opossum (with timeout)", run: runPromiseLoop(() => opossum.fire(), calls) }
  ]
  const results = yield* Effect.promise(() => alternate(cases, settings.rounds))
  const nsOf = (name: string) => median(results.get(name)!)
  const baselineOf = (name: string) =>
    name.startsWith("cockatiel") || name.startsWith("opossum") || name === "bare await" ? "bare await" : "bare Effect"
  const rows = cases.map((c) => {
    const baseline = baselineOf(c.name)
    const added = c.name === baseline ? "-" : format(nsOf(c.name) - nsOf(baseline))
    const ratios =
      c.name === baseline
        ? "-"
        : results
            .get(c.name)!
            .map((ns, i) => format(ns / results.get(baseline)![i]!, 1))
            .join(" ")
    return [c.name, format(nsOf(c.name)), added, ratios]
  })
  opossum.shutdown()
  sections.push(
    "## 1. Policy overhead on the success path, no database\n\n" +
      `Per call, median of ${settings.rounds} alternating rounds of ${format(calls)} calls each. The Effect cases wrap \`Effect.succeed(1)\`, the promise cases a resolved promise; "added" is the difference with the bare call of the same kind. Sturdy's case is its production path (\`internal/stack.ts\`: retry, in-process breaker, attempt deadline, metrics) over a pool lending a fake connection.\n\n` +
      table(["case", "ns per call", "added ns", "ratio to bare, per round"], rows) +
      "\n"
  )
  return { sturdyAdded: nsOf("Sturdy full stack") - nsOf("bare Effect") }
})

// --- 2. Throughput through the database -------------------------------------------------------------------------------

const throughput = (server: PgServer.PgServerService) =>
  Effect.gen(function* () {
    log("2/5 throughput through the database")
    yield* server.admin`CREATE TABLE IF NOT EXISTS bench_kv (id int PRIMARY KEY, v text NOT NULL)`
    yield* server.admin`INSERT INTO bench_kv SELECT i, md5(i::text) FROM generate_series(1, 10000) i ON CONFLICT DO NOTHING`
    const rows: Array<Array<string>> = []
    const ratios: Array<number> = []
    const noise: Array<number> = []
    /** Sturdy/plain CPU per statement, one per cell; the same for the two identical plain clients. */
    const cpuRatios: Array<number> = []
    const cpuNoise: Array<number> = []
    const modes = args.mode === undefined ? [false, true] : [args.mode === "multiplexed"]
    for (const multiplex of modes) {
      const common = { url: server.url, maxConnections: 10, multiplex }
      const plain = yield* PgClient.make({ ...common, applicationName: "bench-plain" })
      // A second plain client: comparing it with the first shows how much of a difference is noise.
      const plainAgain = yield* PgClient.make({ ...common, applicationName: "bench-plain-again" })
      const sturdyContext = yield* Layer.build(
        ResilientPg.layer({ ...common, applicationName: "bench-sturdy", profile: "production" })
      )
      const sturdy = Context.get(sturdyContext, PgClient.PgClient)
      const compare = (
        query: "SELECT 1" | "primary-key read",
        concurrency: number,
        other: SqlClient.SqlClient,
        label: string
      ) =>
        Effect.gen(function* () {
          const statement = (sql: SqlClient.SqlClient) =>
            query === "SELECT 1"
              ? sql`SELECT 1`
              : Effect.suspend(() => sql`SELECT v FROM bench_kv WHERE id = ${1 + Math.floor(Math.random() * 10000)}`)
          // The client process's CPU per statement (user + system, GC threads included), per round: where a
          // throughput ratio comes from when the server is not the bottleneck.
          const cpu = { plain: [] as Array<number>, other: [] as Array<number> }
          const measure = (sql: SqlClient.SqlClient, cpuPerStatement: Array<number>) => async () => {
            let done = 0
            let stop = false
            const worker = Effect.gen(function* () {
              while (!stop) {
                yield* statement(sql)
                done++
              }
            })
            const started = performance.now()
            const cpuBefore = process.cpuUsage()
            const fiber = Effect.runFork(
              Effect.all(
                Array.from({ length: concurrency }, () => worker),
                { concurrency: "unbounded" }
              )
            )
            await new Promise((resolve) => setTimeout(resolve, settings.throughputMillis))
            stop = true
            await Effect.runPromise(Fiber.join(fiber))
            const used = process.cpuUsage(cpuBefore)
            cpuPerStatement.push((used.user + used.system) / done)
            return (done * 1000) / (performance.now() - started)
          }
          const results = yield* Effect.promise(() =>
            alternate(
              [
                { name: "plain", run: measure(plain, cpu.plain) },
                { name: "other", run: measure(other, cpu.other) }
              ],
              settings.throughputRounds
            )
          )
          const perRound = results.get("other")!.map((rate, i) => rate / results.get("plain")![i]!)
          const ratio = median(perRound)
          // The warm-up round is the first of each list.
          const cpuPlain = median(cpu.plain.slice(1))
          const cpuOther = median(cpu.other.slice(1))
          // Paired like the rates: each round's CPU ratio against the plain round next to it, then the median.
          const cpuRatio = median(cpu.other.slice(1).map((used, i) => used / cpu.plain[i + 1]!))
          rows.push([
            multiplex ? "multiplexed" : "exclusive",
            label === "Sturdy" ? query : `${query} (plain vs plain: the noise)`,
            String(concurrency),
            format(median(results.get("plain")!)),
            format(median(results.get("other")!)),
            format(ratio, 2),
            perRound.map((r) => format(r, 2)).join(" "),
            format(cpuPlain, 1),
            format(cpuOther, 1),
            format(cpuRatio, 2)
          ])
          log(`  ${[...rows.at(-1)!.slice(0, 6), ...rows.at(-1)!.slice(7)].join("  ")}`)
          return { ratio, cpuRatio }
        })
      const noiseRow = yield* compare("SELECT 1", 16, plainAgain, "plain")
      noise.push(noiseRow.ratio)
      cpuNoise.push(noiseRow.cpuRatio)
      for (const query of ["SELECT 1", "primary-key read"] as const) {
        for (const concurrency of [1, 16, 64]) {
          const cell = yield* compare(query, concurrency, sturdy, "Sturdy")
          ratios.push(cell.ratio)
          cpuRatios.push(cell.cpuRatio)
        }
      }
    }
    sections.push(
      "## 2. Throughput through the database\n\n" +
        `Statements per second, embedded PostgreSQL 18 on the same machine (client and server share the 2 cores), pool of 10, ${settings.throughputRounds} alternating rounds of ${settings.throughputMillis} ms; rates are medians, the ratio is the median of the per-round ratios; the CPU columns are the client process's CPU time (user + system, GC threads included) per statement, median over the rounds, and the CPU ratio is the median of the per-round ratios of the second client's over plain's (the targets take its median and worst over the Sturdy rows). Plain is \`PgClient.make\`, Sturdy is \`ResilientPg.layer\` (production profile) with the same pool options. The first row of each mode compares two identical plain clients: its spread is the measurement's noise. "Multiplexed" is \`multiplex: true\`: statements from many fibers pipelined on shared connections, where the server-side \`statement_timeout\` (not the client) is what cancels a statement.\n\n` +
        table(
          [
            "connections",
            "statement",
            "concurrency",
            "plain /s",
            "Sturdy /s",
            "ratio",
            "per round",
            "plain CPU µs/stmt",
            "Sturdy CPU µs/stmt",
            "CPU ratio"
          ],
          rows
        ) +
        "\n"
    )
    return {
      worstRatio: Math.min(...ratios),
      worstNoise: Math.min(...noise, ...noise.map((r) => 1 / r)),
      cpuMedian: median(cpuRatios),
      cpuWorst: Math.max(...cpuRatios),
      cpuCells: cpuRatios.length,
      cpuNoise
    }
  })

// --- 3. Fail-fast -------------------------------------------------------------------------------------------------------

/** Times each run of `effect` on its own; returns the per-call latencies in ns and how many failed. */
const timeEach = (make: () => Effect.Effect<unknown, unknown>, calls: number) =>
  Effect.gen(function* () {
    const latencies = new Float64Array(calls)
    let failed = 0
    for (let i = 0; i < calls; i++) {
      const started = performance.now()
      const exit = yield* Effect.exit(make())
      latencies[i] = (performance.now() - started) * 1e6
      if (Exit.isFailure(exit)) failed++
    }
    return { latencies: Array.from(latencies), failed }
  })

const failFast = (server: PgServer.PgServerService) =>
  Effect.gen(function* () {
    log("3/5 fail-fast with the breaker open")
    const calls = settings.rejections

    // (a) The stack alone: its in-process breaker opened by 5 refused connections, then rejections.
    const refused = new SqlError({
      reason: new ConnectionError({
        cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }),
        message: "PgConnection: Failed to connect",
        operation: "connect"
      })
    })
    const refusingPool: Stack.PoolLike = { use: () => Effect.fail(refused) }
    const stack = yield* stackOver(
      refusingPool,
      "1 hour",
      Profile.override(Profile.production, { retriesAfterFirst: 0 })
    )
    const one = Effect.succeed(1)
    const call = () => stack.borrower(() => one)
    for (let i = 0; i < 5; i++) yield* Effect.exit(call())
    const timer = yield* timeEach(() => one, calls)
    const stackOnly = yield* timeEach(call, calls)

    // (b) End to end: `sql`SELECT 1`` through ResilientPg with the server stopped, against the same failing
    // statement through @effect/sql without Sturdy (a client whose borrower fails at once).
    const noSturdy = yield* SqlClient.make({
      acquirer: Effect.fail(refused),
      borrower: () => Effect.fail(refused),
      compiler: PgClient.makeCompiler(),
      driver: "pg",
      spanAttributes: []
    })
    yield* server.stop
    const context = yield* Layer.build(
      ResilientPg.layer({
        url: server.url,
        applicationName: "bench-failfast",
        profile: "production",
        retriesAfterFirst: 0,
        whenCircuitOpen: "fail-fast",
        breakerOpenDuration: "1 hour"
      })
    )
    const sql = Context.get(context, PgClient.PgClient)
    const service = Context.get(context, ResilientPg.ResilientPg)
    for (let i = 0; i < 5; i++) yield* Effect.exit(sql`SELECT 1`)
    const state = (yield* service.breakerState)._tag
    const before = (yield* service.stats).connectionsOpened ?? 0
    const select = sql`SELECT 1`
    const selectWithout = noSturdy`SELECT 1`
    const endToEnd = yield* timeEach(() => select, calls)
    const after = (yield* service.stats).connectionsOpened ?? 0
    const statementOnly = yield* timeEach(() => selectWithout, calls)
    yield* server.start

    const row = (name: string, measured: { readonly latencies: ReadonlyArray<number>; readonly failed: number }) => [
      name,
      `${format(measured.failed)} of ${format(calls)}`,
      `${format(percentile(measured.latencies, 0.5))} ns`,
      `${format(percentile(measured.latencies, 0.99))} ns`
    ]
    sections.push(
      "## 3. Fail-fast with the breaker open\n\n" +
        `The breaker opened by 5 refused connections (state: ${state}), then ${format(calls)} calls in a row, each timed on its own. (a) is Sturdy's stack alone, the figure the target is about; (b) is what a caller of \`sql\`SELECT 1\`\` sees with the server stopped, including \`@effect/sql\`'s own cost for a failing statement, shown in the last row for a client whose connection fails at once without any policy. The first row is the cost of the timing itself.\n\n` +
        table(
          ["calls", "failed", "p50", "p99"],
          [
            row("timing an `Effect.succeed` (the clock's own cost)", timer),
            row("(a) rejection by Sturdy's stack", stackOnly),
            row("(b) rejected `sql`SELECT 1`` through ResilientPg", endToEnd),
            row("a failing `sql`SELECT 1`` without Sturdy", statementOnly)
          ]
        ) +
        `\n\nConnections opened while the breaker was open: ${after - before}.\n`
    )
    return {
      p50: percentile(stackOnly.latencies, 0.5),
      p99: percentile(stackOnly.latencies, 0.99),
      connectionAttempts: after - before
    }
  })

// --- 4. Recovery ----------------------------------------------------------------------------------------------------------

const recovery = (server: PgServer.PgServerService) =>
  Effect.gen(function* () {
    log("4/5 recovery after a restart")
    const measure = (name: string, client: Layer.Layer<PgClient.PgClient, unknown>) =>
      Effect.scoped(
        Effect.gen(function* () {
          const context = yield* Layer.build(client.pipe(Layer.provide(Logger.layer([]))))
          const sql = Context.get(context, PgClient.PgClient)
          let firstSuccessAfter: number | undefined
          let returnedAt: number | undefined
          // Each caller issues a call every 5 ms, in a fiber of its own, so a call that waits holds no one up.
          const caller = Effect.gen(function* () {
            while (firstSuccessAfter === undefined) {
              yield* Effect.forkChild(
                Effect.exit(sql`SELECT 1`).pipe(
                  Effect.map((exit) => {
                    if (Exit.isSuccess(exit) && returnedAt !== undefined) firstSuccessAfter ??= performance.now()
                  })
                )
              )
              yield* Effect.sleep("5 millis")
            }
          }).pipe(Effect.provide(Logger.layer([])))
          const callers = yield* Effect.forkChild(
            Effect.all(
              Array.from({ length: 10 }, () => caller),
              { concurrency: "unbounded" }
            )
          )
          yield* Effect.sleep("200 millis")
          yield* server.stop
          yield* Effect.sleep(Duration.millis(settings.outageMillis))
          yield* server.start
          returnedAt = performance.now()
          yield* Fiber.join(callers)
          log(`  ${name}: first success ${format((firstSuccessAfter! - returnedAt) / 1000, 2)} s after the start`)
          return firstSuccessAfter! - returnedAt
        })
      )
    const resilient = (name: string, options: Partial<ResilientPg.Options>) =>
      ResilientPg.layer({ url: server.url, applicationName: `bench-recovery-${name}`, ...options }) as Layer.Layer<
        PgClient.PgClient,
        unknown
      >
    const plain = yield* measure("plain", PgClient.layer({ url: server.url, applicationName: "bench-recovery-plain" }))
    const defaults = yield* measure("defaults", resilient("defaults", {}))
    const fixed = yield* measure(
      "fixed",
      resilient("fixed", { breakerOpenDuration: settings.fixedOpen as Duration.Input })
    )
    sections.push(
      "## 4. Recovery after a restart\n\n" +
        `Ten callers each issue \`SELECT 1\` every 5 ms; the server stops for ${settings.outageMillis / 1000} s and starts again. Time from the server accepting connections (\`start\` resolved) to the first successful call. Sturdy with its default options, and with a fixed open duration (the breaker's ceiling, with no doubling) for comparison.\n\n` +
        table(
          ["client", "recovery"],
          [
            ["plain `@effect/sql-pg`", `${format(plain / 1000, 2)} s`],
            [
              "Sturdy, defaults (open 1 s doubling to 60 s, closed by the health probe)",
              `${format(defaults / 1000, 2)} s`
            ],
            [`Sturdy, a fixed ${settings.fixedOpen} open duration`, `${format(fixed / 1000, 2)} s`]
          ]
        ) +
        "\n"
    )
    return { plain, defaults, fixed }
  })

// --- 5. Memory -------------------------------------------------------------------------------------------------------------

const memory = Effect.gen(function* () {
  log("5/5 memory over many statements")
  const gc = (globalThis as { gc?: () => void }).gc
  const stack = yield* stackOver(fakePool, "60 seconds")
  const one = Effect.succeed(1)
  const statement = () => stack.borrower(() => one)
  // Warm up so lazily built structures exist before the first measurement.
  for (let i = 0; i < 10_000; i++) yield* statement()
  gc?.()
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < settings.memoryStatements; i++) yield* statement()
  gc?.()
  const after = process.memoryUsage().heapUsed
  const growth = after - before
  sections.push(
    "## 5. Memory\n\n" +
      `${format(settings.memoryStatements)} statements through Sturdy's full stack (fake connection), heap after a forced GC before and after${gc === undefined ? " (run without --expose-gc: no forced GC, figures are indicative)" : ""}.\n\n` +
      table(
        ["statements", "heap before", "heap after", "growth"],
        [
          [
            format(settings.memoryStatements),
            `${format(before / 1e6, 1)} MB`,
            `${format(after / 1e6, 1)} MB`,
            `${format(growth / 1e6, 2)} MB`
          ]
        ]
      ) +
      "\n"
  )
  return { growth }
})

// --- Run -------------------------------------------------------------------------------------------------------------------

type Throughput = Effect.Success<ReturnType<typeof throughput>>
/** The throughput section's figures, as the targets table and `--only=throughput` print them. */
const throughputMeasured = (through: Throughput) =>
  `worst ${format(through.worstRatio, 2)} (two identical plain clients: ${format(through.worstNoise, 2)})`
const cpuMeasured = (through: Throughput) =>
  `median ${format(through.cpuMedian, 2)}, worst ${format(through.cpuWorst, 2)} over the ${through.cpuCells} cells (two identical plain clients: ${through.cpuNoise.map((r) => format(r, 2)).join(", ")})`

const throughputOnly: Effect.Effect<void, unknown, Scope.Scope | Reactivity.Reactivity> = Effect.gen(function* () {
  const through = yield* throughput(yield* PgServer.makeEmbedded)
  process.stdout.write(
    `${sections.join("\n")}\nCPU per statement, Sturdy/plain: ${cpuMeasured(through)}; throughput: ${throughputMeasured(through)}\n`
  )
})

const program: Effect.Effect<void, unknown, Scope.Scope | Reactivity.Reactivity> = Effect.gen(function* () {
  const started = Date.now()
  const over = yield* overhead
  const mem = yield* memory
  const server = yield* PgServer.makeEmbedded
  const through = yield* throughput(server)
  const fail = yield* failFast(server)
  const rec = yield* recovery(server)

  const targets = table(
    ["target", "measured", "status"],
    [
      [
        "added overhead of the full stack <= 1 µs per call",
        `${format(over.sturdyAdded)} ns`,
        over.sturdyAdded <= 1000 ? "met" : "missed"
      ],
      [
        "Sturdy/plain throughput >= 0.95 everywhere",
        throughputMeasured(through),
        through.worstRatio >= 0.95
          ? "met"
          : through.worstRatio >= through.worstNoise - 0.02
            ? "within the noise of this run"
            : "missed"
      ],
      [
        "Sturdy/plain CPU per statement: median <= 1.03, no cell > 1.10",
        cpuMeasured(through),
        through.cpuMedian <= 1.03 && through.cpuWorst <= 1.1 ? "met" : "missed"
      ],
      [
        "rejection by the stack: p50 <= 1 µs, p99 < 20 µs, 0 connections",
        `${format(fail.p50)} ns, ${format(fail.p99)} ns, ${fail.connectionAttempts}`,
        fail.p50 <= 1000 && fail.p99 < 20_000 && fail.connectionAttempts === 0 ? "met" : "missed"
      ],
      [
        "recovery with the defaults within plain's + 0.5 s",
        `${format(rec.defaults / 1000, 2)} s (plain ${format(rec.plain / 1000, 2)} s)`,
        rec.defaults <= rec.plain + 500 ? "met" : "missed"
      ],
      [
        `heap growth over ${format(settings.memoryStatements)} statements < 5 MB`,
        `${format(mem.growth / 1e6, 2)} MB`,
        mem.growth < 5e6 ? "met" : "missed"
      ]
    ]
  )
  const cpus = Os.cpus()
  const report = [
    "# Benchmarks",
    "",
    `Written by \`pnpm bench${quick ? " --quick" : ""}\` on ${new Date().toISOString().slice(0, 10)}: ${cpus.length} x ${cpus[0]?.model ?? "unknown CPU"}, ${Math.round(Os.totalmem() / 2 ** 30)} GiB, ${Os.type()} ${Os.release()}, Node ${process.version}, effect 4.1.0, @effect/sql-pg 4.0.5, PostgreSQL 18 (embedded). The whole run took ${Math.round((Date.now() - started) / 1000)} s.${quick ? " **Quick run: fewer rounds and shorter windows; the figures are indicative only.**" : ""}`,
    "",
    "Every comparison runs its cases alternately, round after round, after a warm-up, in the same process; the tables give medians and the per-round ratios, so a noisy neighbour shows as spread rather than as a false difference. Reproduce with `pnpm bench` (about 5 minutes) or `pnpm bench --quick` (under a minute).",
    "",
    "## Targets",
    "",
    targets,
    "",
    ...sections
  ].join("\n")
  const file = Path.join(import.meta.dirname, "..", "..", quick ? "BENCHMARKS.quick.md" : "BENCHMARKS.md")
  yield* Effect.promise(() => Fs.writeFile(file, `${report}\n`))
  process.stdout.write(`${report}\n`)
  log(`wrote ${file}`)
})

if (args.only !== undefined && args.only !== "throughput") {
  process.stderr.write(`pnpm bench: --only takes "throughput", got ${JSON.stringify(args.only)}\n`)
  process.exit(2)
}
if (args.mode !== undefined && args.mode !== "exclusive" && args.mode !== "multiplexed") {
  process.stderr.write(`pnpm bench: --mode takes "exclusive" or "multiplexed", got ${JSON.stringify(args.mode)}\n`)
  process.exit(2)
}

Effect.runPromise(
  Effect.scoped(args.only === undefined ? program : throughputOnly).pipe(
    Effect.provide(Layer.merge(Reactivity.layer, Logger.layer([])))
  )
).catch((error) => {
  process.stderr.write(`pnpm bench failed: ${error}\n`)
  process.exit(1)
})
