/**
 * `pnpm --filter @sturdy/bench instructions`: the client's instructions per
 * statement, Sturdy against plain `@effect/sql-pg`, through a real
 * PostgreSQL, counted by valgrind's callgrind (decision 0024).
 *
 * Instruction counts repeat for the same binary and input whatever else the
 * machine does, where CPU time on a shared 2-core machine moves by several
 * per cent between two identical clients. Each client runs a fixed number of
 * sequential statements after a warm-up of both clients (both live in every
 * measured process, see `runOne`), under callgrind, twice: with `n` and
 * with `n + extra` statements; the difference over `extra` is what one
 * statement costs the client process (the server is another process, not
 * counted), with start-up, warm-up and shutdown cancelled out. The comparison
 * reads the instructions that run the statements: the garbage collector's and
 * the compilers' are shown beside them, but they land in whichever window
 * their heuristics pick (see `kindOf`).
 *
 * - `instructions.ts` (no argument): starts an embedded server, runs the eight
 *   callgrind runs (plain and Sturdy, `SELECT 1` and the primary-key read,
 *   `n` and `n + extra`) and prints the table.
 * - `instructions.ts run --client plain|sturdy --statement select1|pk --url URL --n N`:
 *   one run (what callgrind is given).
 * - `instructions.ts --driver=fake`: the same table without a server: both
 *   clients over a driver connection that answers at once, so what is counted
 *   is the client's own work (`@effect/sql` and Sturdy, no socket, no parser),
 *   which repeats to within about 5 % where the server path moves by 20 %.
 * - `instructions.ts serve`: starts the embedded server with the table, prints
 *   its URL and keeps it until interrupted, for runs by hand (callgrind_annotate,
 *   `--cpu-prof`).
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { ResilientPg, StatementStats } from "@sturdy/pg"
import { Breaker, DatabaseMetrics, Profile, RetryBudget } from "@sturdy/resilience"
import { PgServer } from "@sturdy/testing"
import { Context, Effect, Layer, Logger, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as SqlClient from "effect/sql/SqlClient"
import type { Borrower, Connection } from "effect/sql/SqlConnection"
// The stack is internal to @sturdy/pg; the fake-driver mode builds it directly, as `pnpm bench` does.
import * as Stack from "../../packages/pg/src/internal/stack.ts"
import { execFile } from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { format, table } from "./harness.ts"

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    client: { type: "string", default: "sturdy" },
    statement: { type: "string", default: "select1" },
    url: { type: "string" },
    n: { type: "string", default: "5000" },
    extra: { type: "string", default: "20000" },
    /** `fake`: no server; both clients over a driver connection whose query answers at once (see `fakeClient`). */
    driver: { type: "string", default: "pg" },
    warmup: { type: "string", default: "30000" },
    /** Fibers running the statements at once (each a loop of its share), as `pnpm bench`'s throughput cells do. */
    concurrency: { type: "string", default: "1" },
    /** `multiplex: true` for both clients: statements pipelined on shared connections. */
    multiplex: { type: "boolean", default: false },
    /** A directory to keep the callgrind files in, for `callgrind_annotate`. */
    keep: { type: "string" }
  }
})

type ClientName = "plain" | "sturdy"
type StatementName = "select1" | "pk"

/** The primary-key read's ids: a fixed sequence over the table's 10,000 rows, so every run sends the same statements. */
const idOf = (i: number) => 1 + ((i * 7919) % 10_000)

const statementOf = (name: StatementName, sql: SqlClient.SqlClient, i: number) =>
  name === "select1" ? sql`SELECT 1` : sql`SELECT v FROM bench_kv WHERE id = ${idOf(i)}`

/**
 * `--driver=fake`: the client's own work without a driver or a server, which repeats to the instruction. Both
 * clients are `@effect/sql`'s client (statements compiled, spans, the borrower) over a pool that lends a driver
 * connection whose `query` answers at once: plain with `@effect/sql-pg`'s connection wrapper (its `execute` is the
 * rows' map), Sturdy with its stack (production profile) and `WatchedConnection`, as `ResilientPg` builds them.
 */
const fakeClient = (client: ClientName) =>
  Effect.gen(function* () {
    const result = { rows: [{ v: "x" }], command: "SELECT" }
    const connection = { query: () => Effect.succeed(result) } as unknown as PgConnection.PgConnection
    const pool: Stack.PoolLike = { use: (f) => f(connection) }
    let borrower: Borrower
    if (client === "plain") {
      // `@effect/sql-pg`'s `ConnectionImpl` (not exported), for the one method a statement calls.
      const plainConnection = (native: PgConnection.PgConnection) =>
        ({
          execute: (sql: string, params: ReadonlyArray<unknown>) =>
            Effect.map(native.query(sql, params, true), (answer) => answer.rows)
        }) as unknown as Connection
      borrower = (f) => pool.use((native) => f(plainConnection(native)))
    } else {
      const stack = yield* Stack.make({
        pool,
        maxConnections: 10,
        statementsPerConnection: 1,
        profile: Profile.production,
        sentPhaseRetry: "safe",
        whenCircuitOpen: "fail-fast",
        retryBudget: RetryBudget.make(RetryBudget.defaults, Date.now()),
        breaker: yield* Breaker.make({ tripPolicy: Breaker.consecutive(5), openDuration: "1 second" }),
        key: "db",
        recorder: new DatabaseMetrics.Recorder(),
        statements: new StatementStats.Table(500),
        sessions: new Stack.Sessions({ retire: () => Effect.void }),
        idempotency: () => "auto"
      })
      borrower = stack.borrower
    }
    return yield* SqlClient.make({
      acquirer: Effect.die("instructions: statements are borrowed"),
      borrower,
      driver: "pg",
      compiler: PgClient.makeCompiler(),
      spanAttributes: [["db.system.name", "postgresql"]]
    })
  })

/**
 * One client's `n` statements, after `warmup` statements through each of the two clients: what one callgrind run
 * measures. Both clients live in every measured process, and both are warmed up, so that the process the two runs
 * count is the same but for the client that runs the `n` statements. Effect's run loop is shared by every fiber,
 * and its inline caches by every effect: in a process that only ever ran plain's statements, the run loop's
 * optimized `makeExit` and `mapCont` read frames through polymorphic caches, where in Sturdy's process (its
 * watchdog and breaker fibers too) they called V8's megamorphic load (fake driver: plain 1,546 instructions a
 * statement in it, Sturdy 4,066, and still 3,226 with both of Sturdy's failure handlers removed). No application
 * runs only plain's statements.
 */
const runOne = (client: ClientName, statement: StatementName, url: string, warmup: number, n: number) => {
  const common = { url: Redacted.make(url), maxConnections: 10, multiplex: args.multiplex }
  const layerOf = (name: ClientName) =>
    name === "plain"
      ? PgClient.layer({ ...common, applicationName: "instructions-plain" })
      : ResilientPg.layer({ ...common, applicationName: "instructions-sturdy", profile: "production" })
  const clientOf = (name: ClientName) =>
    args.driver === "fake"
      ? fakeClient(name)
      : Effect.map(Layer.build(layerOf(name)), (context) => Context.get(context, PgClient.PgClient))
  const concurrency = Number(args.concurrency)
  const statements = (sql: SqlClient.SqlClient, total: number) =>
    Effect.forEach(
      Array.from({ length: concurrency }, (_, worker) => worker),
      (worker) =>
        Effect.gen(function* () {
          for (let i = worker; i < total; i += concurrency) yield* statementOf(statement, sql, i)
        }),
      { concurrency, discard: true }
    )
  return Effect.scoped(
    Effect.gen(function* () {
      const plain = yield* clientOf("plain")
      const sturdy = yield* clientOf("sturdy")
      // The warm-up alternates between the clients in tenths, so neither is compiled for alone.
      for (let part = 0; part < 10; part++) {
        yield* statements(plain, warmup / 10)
        yield* statements(sturdy, warmup / 10)
      }
      yield* statements(client === "plain" ? plain : sturdy, n)
    })
  ).pipe(Effect.provide(Layer.merge(Reactivity.layer, Logger.layer([]))))
}

const run = (file: string, argv: ReadonlyArray<string>) =>
  new Promise<string>((resolve, reject) =>
    execFile(file, argv, { maxBuffer: 64 * 2 ** 20 }, (error, stdout, stderr) =>
      error === null ? resolve(stdout) : reject(new Error(`${file} failed: ${stderr || error.message}`))
    )
  )

/**
 * What a function's own instructions (callgrind's self cost, which adds up to the total) are spent on. The
 * garbage collector's and the compilers' work lands in whichever window their heuristics pick (one mark-compact
 * is about 150 million instructions here, the difference between a window that holds it and one that does not),
 * so the comparison reads the rest: the instructions that run the statements.
 */
const kindOf = (name: string): "gc" | "compile" | "run" =>
  /v8::internal::(Scavenger|ScavengerCollector|MinorGC|MarkCompact|Marking|MainMarkingVisitor|IncrementalMarking|ConcurrentMarking|Sweeper|ArrayBufferSweeper|Evacuat|RememberedSet|LiveObjectVisitor|BodyDescriptor|RecordMigratedSlot|Heap::|GCTracer|EphemeronHashTable|HeapObject::SizeFromMap|MemoryReducer|FreeList|PagedSpace|SemiSpace|NewSpace|WeakObjects|PointersUpdating|ObjectStats|JSFunction::NeedsResetDueToFlushedBytecode|\(anonymous namespace\)::(IterateObjectCache|RememberedSetUpdatingItem))|heap::base::|MarkingBarrier|IterateAndScavenge/.test(
    name
  )
    ? "gc"
    : /v8::internal::(compiler::|turboshaft::|maglev::|wasm::|Compiler::|Deoptimizer|Parser|Scanner|interpreter::|baseline::|Zone)|Builtins_CompileLazy|Builtins_InterpreterEntryTrampoline/.test(
          name
        )
      ? "compile"
      : "run"

interface Counts {
  readonly total: number
  readonly gc: number
  readonly compile: number
  readonly run: number
}

/** What each measured process runs with; the table's caption names them. */
const nodeFlags = [
  // No background threads (concurrent GC and compilation): their share of the work varies from run to run,
  // by about 15 million instructions here, against about 4 million on the main thread alone.
  "--single-threaded",
  // Hash seeds and heuristics fixed, a young generation large enough that the window holds few collections, and no
  // memory reducer (its timer starts collections by wall-clock time): two runs of the same client (fake driver,
  // 50,000 statements) then differed by 0.5 % of their instructions, against 2.6 % without these flags.
  "--predictable",
  "--max-semi-space-size=64",
  "--no-memory-reducer"
]

/** The instructions callgrind counted in one run of `runOne`, by kind. */
const instructions = async (
  dir: string,
  client: ClientName,
  statement: StatementName,
  url: string,
  n: number
): Promise<Counts> => {
  const out = Path.join(dir, `callgrind.${client}.${statement}.${n}`)
  await run("valgrind", [
    "--tool=callgrind",
    "--trace-children=no",
    `--callgrind-out-file=${out}`,
    process.execPath,
    ...nodeFlags,
    import.meta.filename,
    "run",
    `--client=${client}`,
    `--statement=${statement}`,
    `--url=${url}`,
    `--driver=${args.driver}`,
    `--warmup=${args.warmup}`,
    `--concurrency=${args.concurrency}`,
    ...(args.multiplex ? ["--multiplex"] : []),
    `--n=${n}`
  ])
  const annotated = await run("callgrind_annotate", ["--threshold=100", out])
  const counts = { total: 0, gc: 0, compile: 0, run: 0 }
  for (const line of annotated.split("\n")) {
    const match = /^\s*([\d,]+) \([^)]*\)\s+(.*)$/.exec(line)
    if (match === null || match[2]!.includes("PROGRAM TOTALS")) continue
    const self = Number(match[1]!.replaceAll(",", ""))
    counts.total += self
    counts[kindOf(match[2]!)] += self
  }
  return counts
}

const empty: Counts = { total: 0, gc: 0, compile: 0, run: 0 }

/** The embedded server with the primary-key read's table, as `pnpm bench` makes it. */
const serverWithTable = Effect.gen(function* () {
  const server = yield* PgServer.makeEmbedded
  yield* server.admin`CREATE TABLE IF NOT EXISTS bench_kv (id int PRIMARY KEY, v text NOT NULL)`
  yield* server.admin`INSERT INTO bench_kv SELECT i, md5(i::text) FROM generate_series(1, 10000) i ON CONFLICT DO NOTHING`
  return Redacted.value(server.url)
})

const measureAll = Effect.gen(function* () {
  // `--url`: a server started by `serve`, with the table.
  const url = args.url ?? (args.driver === "fake" ? "none" : yield* serverWithTable)
  const n = Number(args.n)
  const extra = Number(args.extra)
  const dir = args.keep ?? (yield* Effect.promise(() => Fs.mkdtemp(Path.join(Os.tmpdir(), "sturdy-callgrind-"))))
  const rows: Array<Array<string>> = []
  for (const statement of ["select1", "pk"] as const) {
    const perStatement: Record<ClientName, Counts> = { plain: empty, sturdy: empty }
    // Two runs at a time (callgrind is single-threaded; the counts do not depend on what else runs).
    yield* Effect.forEach(
      ["plain", "sturdy"] as const,
      (client) =>
        Effect.promise(async () => {
          const short = await instructions(dir, client, statement, url, n)
          const long = await instructions(dir, client, statement, url, n + extra)
          const per = (kind: keyof Counts) => (long[kind] - short[kind]) / extra
          perStatement[client] = { total: per("total"), gc: per("gc"), compile: per("compile"), run: per("run") }
          process.stderr.write(`${client} ${statement}: ${JSON.stringify(perStatement[client])}\n`)
        }),
      { concurrency: 2, discard: true }
    )
    const { plain, sturdy } = perStatement
    rows.push([
      statement === "select1" ? "SELECT 1" : "primary-key read",
      format(plain.run),
      format(sturdy.run),
      format(sturdy.run - plain.run),
      format(sturdy.run / plain.run, 3),
      `${format(plain.total)} / ${format(sturdy.total)}`,
      `${format(plain.gc)} / ${format(sturdy.gc)}`,
      `${format(plain.compile)} / ${format(sturdy.compile)}`
    ])
  }
  if (args.keep === undefined) yield* Effect.promise(() => Fs.rm(dir, { recursive: true, force: true }))
  process.stdout.write(
    `${table(
      [
        "statement",
        "plain instr/stmt",
        "Sturdy instr/stmt",
        "added",
        "Sturdy/plain",
        "total, plain / Sturdy",
        "of which GC",
        "of which compiling"
      ],
      rows
    )}\n\n` +
      `callgrind (node ${nodeFlags.join(" ")}), ${format(n)} and ${format(n + extra)} statements (${args.concurrency} at a time) after ${format(Number(args.warmup))} of warm-up through each client (both clients in each process), pool of 10, production profile, ${args.driver === "fake" ? "a fake driver connection (no server)" : "embedded PostgreSQL"}, Node ${process.version}.\n`
  )
})

const main: Effect.Effect<void, unknown> =
  positionals[0] === "run"
    ? runOne(args.client as ClientName, args.statement as StatementName, args.url!, Number(args.warmup), Number(args.n))
    : positionals[0] === "serve"
      ? Effect.scoped(
          Effect.andThen(
            Effect.tap(serverWithTable, (url) => Effect.sync(() => process.stdout.write(`${url}\n`))),
            Effect.never
          )
        )
      : Effect.scoped(measureAll)

Effect.runPromise(main).catch((error) => {
  process.stderr.write(`instructions failed: ${error}\n`)
  process.exit(1)
})
