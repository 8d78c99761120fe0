import { assert, describe, it, layer } from "@effect/vitest"
import { ResilientPg, StatementStats } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { fast, resilient } from "./helpers.ts"

describe("StatementStats.fingerprint", () => {
  it("removes literals, parameters, lists and comments", () => {
    assert.strictEqual(
      StatementStats.fingerprint("SELECT * FROM notes -- by id\n WHERE id = $1 AND tag IN ('a', 'b''c', 3) /* x */"),
      "SELECT * FROM notes WHERE id = ? AND tag IN (?, ...)"
    )
    assert.strictEqual(
      StatementStats.fingerprint("SELECT $tag$it's$tag$, 1.5, t1.col2 FROM t1"),
      "SELECT ?, ?, t1.col2 FROM t1"
    )
    assert.strictEqual(
      StatementStats.fingerprint("INSERT INTO t (a, b) VALUES ('secret-value', 42)"),
      "INSERT INTO t (a, b) VALUES (?, ...)"
    )
  })

  it("bounds the length of a fingerprint", () => {
    const long = `SELECT ${Array.from({ length: 200 }, (_, i) => `c${i}`).join(", ")} FROM t`
    const result = StatementStats.fingerprint(long)
    assert.strictEqual(result.length, 303)
    assert.isTrue(result.endsWith("..."))
  })
})

describe("StatementStats.Table", () => {
  it("counts calls, errors, mean, p95 and the last error reason per fingerprint", () => {
    const table = new StatementStats.Table(10)
    for (let i = 1; i <= 20; i++) table.record(`SELECT ${i}`, i, undefined)
    table.record("SELECT 99", 100, "ConnectionRefused")
    table.record("SELEC 1", 1, "SqlSyntaxError")
    const [select, syntax] = table.snapshot()
    assert.strictEqual(select.fingerprint, "SELECT ?")
    assert.strictEqual(select.calls, 21)
    assert.strictEqual(select.errors, 1)
    assert.strictEqual(select.lastErrorReason, "ConnectionRefused")
    assert.closeTo(select.meanMillis, (210 + 100) / 21, 1e-9)
    // The 20th of 21 durations (20 ms), reported as the upper bound of its 5% bucket, (19.246, 20.208].
    assert.strictEqual(select.p95Millis, 20.208340686212942)
    assert.strictEqual(select.maxMillis, 100)
    assert.deepStrictEqual(
      { fingerprint: syntax.fingerprint, calls: syntax.calls, errors: syntax.errors, reason: syntax.lastErrorReason },
      { fingerprint: "SELEC ?", calls: 1, errors: 1, reason: "SqlSyntaxError" }
    )
  })

  it("counts a rejection as a call and an error without timing it", () => {
    const table = new StatementStats.Table(10)
    table.record("SELECT 1", 10, undefined)
    table.record("SELECT 1", 20, undefined)
    table.record("SELECT 1", undefined, "CircuitOpen")
    const [entry] = table.snapshot()
    assert.deepStrictEqual(
      [entry!.calls, entry!.errors, entry!.lastErrorReason, entry!.meanMillis, entry!.maxMillis],
      [3, 1, "CircuitOpen", 15, 20]
    )
  })

  it("keeps at most maxEntries fingerprints, evicting the least recently used", () => {
    const table = new StatementStats.Table(8)
    for (let i = 0; i < 8; i++) table.record(`SELECT * FROM t${String.fromCharCode(97 + i)}`, 1, undefined)
    // Keep the first one hot, then add 7 new statements: the hot one survives, the other old ones go.
    for (let round = 0; round < 7; round++) {
      table.record("SELECT * FROM ta", 1, undefined)
      table.record(`SELECT * FROM u${String.fromCharCode(97 + round)}`, 1, undefined)
    }
    assert.strictEqual(table.size, 8)
    const names = table.snapshot().map((entry) => entry.fingerprint)
    assert.include(names, "SELECT * FROM ta")
    assert.notInclude(names, "SELECT * FROM tb")
    assert.include(names, "SELECT * FROM ug")
  })

  it("counts texts built anew on every call, of the same length, and a text back after its entry was evicted", () => {
    const table = new StatementStats.Table(1)
    // As `@effect/sql` compiles a parameterized statement: a new string on each call.
    const text = (table_: string) => ["SELECT v FROM ", table_, " WHERE id = $1"].join("")
    for (let i = 0; i < 3; i++) table.record(text("ka"), 1, undefined)
    // Same length, another statement: the table keeps one entry, so this evicts "ka".
    table.record(text("kb"), 2, "SqlSyntaxError")
    table.record(text("ka"), 3, undefined)
    assert.deepStrictEqual(
      table.snapshot().map((entry) => [entry.fingerprint, entry.calls, entry.errors, entry.meanMillis]),
      [["SELECT v FROM ka WHERE id = ?", 1, 0, 3]]
    )
    const wider = new StatementStats.Table(8)
    for (let i = 0; i < 4; i++) {
      wider.record(text("ka"), 1, undefined)
      wider.record(text("kb"), 1, i === 3 ? "StatementTimeout" : undefined)
    }
    assert.deepStrictEqual(
      wider.snapshot().map((entry) => [entry.fingerprint, entry.calls, entry.errors, entry.lastErrorReason]),
      [
        ["SELECT v FROM ka WHERE id = ?", 4, 0, undefined],
        ["SELECT v FROM kb WHERE id = ?", 4, 1, "StatementTimeout"]
      ]
    )
  })

  it("records nothing with maxEntries 0 and rejects a bad size", () => {
    const table = new StatementStats.Table(0)
    table.record("SELECT 1", 1, undefined)
    assert.strictEqual(table.size, 0)
    assert.throws(() => new StatementStats.Table(-1), /maxEntries must be an integer >= 0, got -1/)
  })
})

describe("per-statement statistics of a ResilientPg client", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("fingerprints real statements, without their parameters", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const { layer } = resilient(server, { ...fast, statementStatsSize: 50 })
        const entries = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          for (const id of [1, 2, 3]) yield* sql`SELECT ${id}::int AS id, ${"private-value"}::text AS v`
          yield* Effect.exit(sql`SELEC 1`)
          return yield* (yield* ResilientPg.ResilientPg).statementStats
        }).pipe(Effect.provide(layer))
        const select = entries.find((entry) => entry.fingerprint === "SELECT ?::int AS id, ?::text AS v")
        assert.isDefined(select, JSON.stringify(entries))
        assert.strictEqual(select!.calls, 3)
        assert.strictEqual(select!.errors, 0)
        const failed = entries.find((entry) => entry.fingerprint === "SELEC ?")
        assert.deepStrictEqual([failed?.calls, failed?.errors, failed?.lastErrorReason], [1, 1, "SqlSyntaxError"])
        assert.notInclude(JSON.stringify(entries), "private-value")
      })
    )

    it.effect("records calls that never reached a connection: refused, then rejected by the open breaker", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const { layer } = resilient(server, {
          ...fast,
          statementStatsSize: 50,
          retriesAfterFirst: 0,
          breakerFailures: 2,
          breakerOpenDuration: "1 minute"
        })
        const { entries, stats } = yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* sql`SELECT ${0}::int AS outage_probe`
          yield* server.stop
          for (let i = 1; i <= 5; i++) yield* Effect.exit(sql`SELECT ${i}::int AS outage_probe`)
          const service = yield* ResilientPg.ResilientPg
          return { entries: yield* service.statementStats, stats: yield* service.stats }
        }).pipe(Effect.provide(layer), Effect.ensuring(Effect.orDie(server.start)))
        const probe = entries.find((entry) => entry.fingerprint === "SELECT ?::int AS outage_probe")
        assert.isDefined(probe, JSON.stringify(entries))
        // Every call is in the table, those that never had a connection included; the last ones were rejected.
        assert.deepStrictEqual([probe!.calls, probe!.errors, probe!.lastErrorReason], [6, 5, "CircuitOpen"])
        // Two refused calls open the breaker (breakerFailures 2, no retries): the other three are rejected.
        assert.strictEqual(stats.rejections, 3)
      })
    )
  })
})
