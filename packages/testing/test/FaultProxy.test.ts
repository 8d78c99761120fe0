import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, it, layer } from "@effect/vitest"
import { Eventually, FaultProxy, PgServer } from "@sturdy/testing"
import { Cause, Clock, Effect, Exit, Fiber, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { isSqlError } from "effect/sql/SqlError"
import { randomUUID } from "node:crypto"

let clients = 0
/** A unique application name, so a test can find its own backends. */
const appName = () => `fault-proxy-${process.pid}-${++clients}`

/** A plain driver client (no resilience layer) that reaches the server through the proxy. */
const clientThrough = (url: Redacted.Redacted<string>, options: Partial<PgClient.PgPoolConfig> = {}) =>
  PgClient.make({ url, applicationName: appName(), connectTimeout: "5 seconds", ...options }).pipe(
    Effect.provide(Reactivity.layer)
  )

/** What a caller sees of a failed call: the `SqlError`'s reason, its operation, and the cause's code. */
interface Observed {
  readonly reason: string
  readonly operation: string | undefined
  readonly message: string
  readonly code: unknown
  readonly causeMessage: unknown
}

const observed = (exit: Exit.Exit<unknown, unknown>): Observed => {
  assert.isTrue(Exit.isFailure(exit), "expected the call to fail")
  const error = Exit.isFailure(exit) ? exit.cause.reasons.find(Cause.isFailReason)?.error : undefined
  if (!isSqlError(error))
    return assert.fail(`expected a SqlError, got ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "success"}`)
  const cause = error.reason.cause as { readonly code?: unknown; readonly message?: unknown } | undefined
  return {
    reason: error.reason._tag,
    operation: error.reason.operation,
    message: error.reason.message,
    code: cause?.code,
    causeMessage: cause?.message
  }
}

const elapsedMillis = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const start = yield* Clock.currentTimeMillis
    const result = yield* effect
    return { result, millis: (yield* Clock.currentTimeMillis) - start }
  })

const connectionReset: Observed = {
  reason: "ConnectionError",
  operation: "query",
  message: "PgConnection: Socket error",
  code: "ECONNRESET",
  causeMessage: "read ECONNRESET"
}

describe("FaultProxy constructors", () => {
  const cases = [
    { build: () => FaultProxy.latency(-1), message: "FaultProxy.latency: millis must be a finite number >= 0, got -1" },
    {
      build: () => FaultProxy.latency(Number.POSITIVE_INFINITY),
      message: "FaultProxy.latency: millis must be a finite number >= 0, got Infinity"
    },
    {
      build: () => FaultProxy.resetAfterBytes(1.5, "toServer"),
      message: "FaultProxy.resetAfterBytes: bytes must be an integer >= 0, got 1.5"
    },
    {
      build: () => FaultProxy.resetAfterBytes(10, "sideways" as FaultProxy.Direction),
      message: `FaultProxy.resetAfterBytes: direction must be "toServer" or "toClient", got "sideways"`
    },
    {
      build: () => FaultProxy.bandwidth(0),
      message: "FaultProxy.bandwidth: bytesPerSecond must be a finite number >= 1, got 0"
    },
    {
      build: () => FaultProxy.startupError("57p03", "starting up"),
      message: `FaultProxy.startupError: sqlState must be 5 digits or upper-case letters, got "57p03"`
    },
    {
      build: () => FaultProxy.startupError("57P03", "a\0b"),
      message: `FaultProxy.startupError: message must be a string without NUL, got "a\\u0000b"`
    },
    {
      build: () => FaultProxy.resetOnMessage("  ", "before-server"),
      message: `FaultProxy.resetOnMessage: sql must be a non-empty statement, got "  "`
    },
    {
      build: () => FaultProxy.resetOnMessage("COMMIT", "later" as "before-server"),
      message: `FaultProxy.resetOnMessage: when must be "before-server" or "after-server-answers", got "later"`
    }
  ] as const satisfies ReadonlyArray<{ readonly build: () => FaultProxy.Fault; readonly message: string }>

  it("throw a RangeError naming the function, the rule and the value", () => {
    const messages = cases.map(({ build }) => {
      try {
        build()
        return "no error"
      } catch (error) {
        return error instanceof RangeError ? error.message : `not a RangeError: ${String(error)}`
      }
    })
    assert.deepStrictEqual(
      messages,
      cases.map(({ message }) => message)
    )
  })

  it("build plain data", () => {
    assert.deepStrictEqual(
      [
        FaultProxy.latency(0),
        FaultProxy.refuse,
        FaultProxy.resetAfterBytes(0, "toClient"),
        FaultProxy.blackhole,
        FaultProxy.bandwidth(1),
        FaultProxy.startupError("57P03", "starting up"),
        FaultProxy.resetOnMessage("COMMIT", "after-server-answers")
      ],
      [
        { _tag: "Latency", millis: 0 },
        { _tag: "Refuse" },
        { _tag: "ResetAfterBytes", bytes: 0, direction: "toClient" },
        { _tag: "Blackhole" },
        { _tag: "Bandwidth", bytesPerSecond: 1 },
        { _tag: "StartupError", sqlState: "57P03", message: "starting up" },
        { _tag: "ResetOnMessage", sql: "COMMIT", when: "after-server-answers" }
      ]
    )
  })
})

describe("FaultProxy, against a real server", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("without faults it forwards faithfully, TLS negotiation included; url points at the proxy", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const proxy = yield* FaultProxy.FaultProxy
        const url = new URL(Redacted.value(proxy.url))
        const upstream = new URL(Redacted.value(server.url))
        assert.deepStrictEqual(
          [url.hostname, url.port, url.username, url.password, url.pathname],
          ["127.0.0.1", String(proxy.port), upstream.username, upstream.password, upstream.pathname]
        )
        assert.notInclude(String(proxy.url), Redacted.value(server.password))

        const plain = yield* clientThrough(proxy.url)
        const [row] = yield* plain<{ readonly sum: number; readonly text: string }>`
          SELECT 1 + 1 AS sum, repeat('ab', 50000) AS text`
        assert.deepStrictEqual({ sum: row!.sum, length: row!.text.length }, { sum: 2, length: 100_000 })
        // sslmode=prefer sends an SSLRequest first; the server answers "N" and start-up goes on in plaintext.
        const preferTls = yield* clientThrough(Redacted.make(`${Redacted.value(proxy.url)}?sslmode=prefer`))
        assert.deepStrictEqual(yield* preferTls<{ readonly one: number }>`SELECT 1 AS one`, [{ one: 1 }])
        assert.deepStrictEqual(yield* proxy.connections, { open: 2, accepted: 2 })
      }).pipe(Effect.provide(FaultProxy.layerFromPgServer))
    )

    it.effect("Latency delays each direction, keeps the order, and clear removes it", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const proxy = yield* FaultProxy.make(server)
        const sql = yield* clientThrough(proxy.url, { maxConnections: 1 })
        yield* sql`SELECT 1`
        yield* proxy.set(FaultProxy.latency(300))
        // One round trip crosses the proxy twice: at least 2 × 300 ms, however fast the machine.
        const delayed = yield* elapsedMillis(sql<{ readonly one: number }>`SELECT 1 AS one`)
        assert.deepStrictEqual(delayed.result, [{ one: 1 }])
        assert.isAtLeast(delayed.millis, 600)
        // A result spread over many chunks arrives whole and in order.
        const [big] = yield* sql<{ readonly text: string }>`SELECT string_agg(i::text, ',' ORDER BY i) AS text
          FROM generate_series(1, 50000) AS i`
        assert.deepStrictEqual(
          big!.text.split(",").map(Number),
          Array.from({ length: 50_000 }, (_, i) => i + 1)
        )
        yield* proxy.clear
        assert.deepStrictEqual(yield* sql<{ readonly one: number }>`SELECT 1 AS one`, [{ one: 1 }])
      })
    )

    it.effect("Bandwidth paces a large result near the limit", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const proxy = yield* FaultProxy.make(server)
        const sql = yield* clientThrough(proxy.url, { maxConnections: 1 })
        yield* sql`SELECT 1`
        yield* proxy.set(FaultProxy.bandwidth(100_000))
        // 200 kB at 100 kB/s cannot arrive in less than ~2 s (the first 1 kB slice goes at once).
        const slow = yield* elapsedMillis(sql<{ readonly text: string }>`SELECT repeat('x', 200000) AS text`)
        assert.strictEqual(slow.result[0]!.text.length, 200_000)
        assert.isAtLeast(slow.millis, 1_900)
      })
    )

    it.effect("Refuse: new connections get ECONNREFUSED, open ones go on; clear listens again on the same port", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const proxy = yield* FaultProxy.make(server)
        const before = yield* clientThrough(proxy.url, { maxConnections: 1 })
        yield* before`SELECT 1`
        yield* proxy.set(FaultProxy.refuse)
        const refused = yield* Effect.exit(Effect.flatMap(clientThrough(proxy.url), (sql) => sql`SELECT 1`))
        assert.deepStrictEqual(observed(refused), {
          reason: "ConnectionError",
          operation: "connect",
          message: "PgConnection: Failed to connect",
          code: "ECONNREFUSED",
          causeMessage: `connect ECONNREFUSED 127.0.0.1:${proxy.port}`
        })
        assert.deepStrictEqual(yield* before<{ readonly one: number }>`SELECT 1 AS one`, [{ one: 1 }])
        yield* proxy.clear
        const after = yield* clientThrough(proxy.url)
        assert.deepStrictEqual(yield* after<{ readonly one: number }>`SELECT 1 AS one`, [{ one: 1 }])
        assert.deepStrictEqual(yield* proxy.connections, { open: 2, accepted: 2 })
      })
    )

    it.effect("Blackhole: the connection is accepted and never answered, so the driver's connect timeout fires", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const proxy = yield* FaultProxy.make(server)
        yield* proxy.set(FaultProxy.blackhole)
        const hung = yield* elapsedMillis(
          Effect.exit(
            Effect.flatMap(clientThrough(proxy.url, { connectTimeout: "300 millis" }), (sql) => sql`SELECT 1`)
          )
        )
        assert.deepStrictEqual(observed(hung.result), {
          reason: "ConnectionError",
          operation: "connect",
          message: "PgConnection: Connection timed out",
          code: undefined,
          causeMessage: "Connection timed out"
        })
        assert.isAtLeast(hung.millis, 300)
        assert.strictEqual((yield* proxy.connections).accepted, 1)
      })
    )

    it.effect("StartupError: the start-up is answered with FATAL 57P03, with or without an SSLRequest first", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const proxy = yield* FaultProxy.make(server)
        yield* proxy.set(FaultProxy.startupError("57P03", "the database system is shutting down"))
        const urls = [proxy.url, Redacted.make(`${Redacted.value(proxy.url)}?sslmode=prefer`)]
        for (const url of urls) {
          const app = appName()
          const exit = yield* Effect.exit(
            Effect.flatMap(clientThrough(url, { applicationName: app }), (sql) => sql`SELECT 1`)
          )
          // The driver maps only 08xxx SQLSTATEs to ConnectionError: 57P03 is an UnknownError.
          assert.deepStrictEqual(observed(exit), {
            reason: "UnknownError",
            operation: "connect",
            message: "PgConnection: Failed to connect",
            code: "57P03",
            causeMessage: "the database system is shutting down"
          })
          assert.strictEqual(yield* server.connectionCount(app), 0)
        }
        yield* proxy.clear
        const sql = yield* clientThrough(proxy.url)
        assert.deepStrictEqual(yield* sql<{ readonly one: number }>`SELECT 1 AS one`, [{ one: 1 }])
      })
    )

    it.effect("ResetAfterBytes resets a connection mid-stream in either direction; the pool recovers after clear", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const proxy = yield* FaultProxy.make(server)
        const sql = yield* clientThrough(proxy.url, { maxConnections: 1 })
        for (const direction of ["toClient", "toServer"] as const) {
          yield* sql`SELECT 1`
          yield* proxy.set(FaultProxy.resetAfterBytes(direction === "toClient" ? 1000 : 10, direction))
          const exit = yield* Effect.exit(sql`SELECT repeat('x', 100000) AS text`)
          assert.deepStrictEqual(observed(exit), connectionReset, direction)
          yield* proxy.clear
          const [row] = yield* sql<{ readonly text: string }>`SELECT repeat('x', 100000) AS text`
          assert.strictEqual(row!.text.length, 100_000)
        }
      })
    )

    const lostCommits = [
      { when: "before-server", commit: "first", committed: false },
      { when: "before-server", commit: "later", committed: false },
      { when: "after-server-answers", commit: "first", committed: true },
      { when: "after-server-answers", commit: "later", committed: true }
    ] as const

    it.effect.each(lostCommits)(
      "ResetOnMessage COMMIT $when, on the $commit COMMIT of a connection: the client fails, committed = $committed",
      ({ when, commit, committed }) =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const proxy = yield* FaultProxy.make(server)
          const table = `lost_commit_${randomUUID().replaceAll("-", "")}`
          yield* server.admin.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
          const sql = yield* clientThrough(proxy.url, { maxConnections: 1 })
          // A first transaction prepares COMMIT as a named statement: the next COMMIT is a Bind of that name.
          if (commit === "later") yield* sql.withTransaction(sql`INSERT INTO ${sql(table)} (id) VALUES (1)`)
          yield* proxy.set(FaultProxy.resetOnMessage("commit", when))
          const fired = yield* Effect.forkChild(proxy.messageFaultsFired, { startImmediately: true })
          assert.isUndefined(fired.pollUnsafe(), "nothing has fired yet")
          const exit = yield* Effect.exit(sql.withTransaction(sql`INSERT INTO ${sql(table)} (id) VALUES (2)`))
          assert.deepStrictEqual(observed(exit), connectionReset)
          assert.strictEqual(yield* Fiber.join(fired), 1)
          const rows = yield* server.admin<{ readonly id: number }>`SELECT id FROM ${server.admin(table)} WHERE id = 2`
          assert.deepStrictEqual(rows, committed ? [{ id: 2 }] : [])
          // Only the connection that sent the COMMIT was reset.
          yield* proxy.clear
          yield* sql.withTransaction(sql`INSERT INTO ${sql(table)} (id) VALUES (3)`)
          assert.deepStrictEqual(yield* server.admin`SELECT id FROM ${server.admin(table)} WHERE id = 3`, [{ id: 3 }])
        })
    )

    it.effect("pause holds a query until resume", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const proxy = yield* FaultProxy.make(server)
        const app = appName()
        const sql = yield* clientThrough(proxy.url, { maxConnections: 1, applicationName: app })
        yield* sql`SELECT 1`
        yield* proxy.pause
        const query = yield* Effect.forkChild(sql<{ readonly one: number }>`SELECT 1 AS one`)
        // The query has reached the proxy, which holds it: the server has not seen it and the caller waits.
        yield* Eventually.until(proxy.held, {
          what: "the query to reach the paused proxy",
          accept: (held) => held.toServer > 0,
          timeout: "5 seconds"
        })
        assert.isUndefined(query.pollUnsafe())
        assert.deepStrictEqual(yield* server.activeQueries(app), [])
        assert.strictEqual((yield* proxy.held).toClient, 0)
        yield* proxy.resume
        assert.deepStrictEqual(yield* Fiber.join(query), [{ one: 1 }])
        assert.deepStrictEqual(yield* proxy.held, { toServer: 0, toClient: 0 })
      })
    )

    it.effect("resetAll resets every open connection, an in-flight query's included; a fresh one works", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const proxy = yield* FaultProxy.make(server)
        const busyApp = appName()
        const busy = yield* clientThrough(proxy.url, { maxConnections: 1, applicationName: busyApp })
        const idle = yield* clientThrough(proxy.url, { maxConnections: 1 })
        yield* idle`SELECT 1`
        const sleeping = yield* Effect.forkChild(Effect.exit(busy`SELECT pg_sleep(10)`))
        yield* Eventually.until(server.activeQueries(busyApp), {
          what: "the server to run pg_sleep",
          accept: (queries) => queries.length === 1,
          timeout: "5 seconds"
        })
        assert.deepStrictEqual(yield* proxy.connections, { open: 2, accepted: 2 })
        assert.strictEqual(yield* proxy.resetAll, 2)
        assert.deepStrictEqual(yield* proxy.connections, { open: 0, accepted: 2 })
        assert.deepStrictEqual(observed(yield* Fiber.join(sleeping)), connectionReset)
        const fresh = yield* clientThrough(proxy.url)
        assert.deepStrictEqual(yield* fresh<{ readonly one: number }>`SELECT 1 AS one`, [{ one: 1 }])
      })
    )
  })
})
