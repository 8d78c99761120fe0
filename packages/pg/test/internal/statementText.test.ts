import { assert, describe, it } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Effect, Stream } from "effect"
import type { Borrower, Connection } from "effect/sql/SqlConnection"
import * as Statement from "effect/sql/Statement"
import { type Builder, sqlOf } from "../../src/internal/statementText.ts"

describe("sqlOf", () => {
  it("learns the text from whichever execute method the builder calls, running nothing", () => {
    const builders: ReadonlyArray<Builder> = [
      (c) => c.execute("SELECT 1", [], undefined),
      (c) => c.executeRaw("SELECT 2", []),
      (c) => c.executeValues("SELECT 3", []),
      (c) => c.executeValuesUnprepared("SELECT 4", []),
      (c) => c.executeUnprepared("SELECT 5", [], undefined),
      (c) => Stream.runDrain(c.executeStream("SELECT 6", [], undefined))
    ]
    assert.deepStrictEqual(builders.map(sqlOf), [
      "SELECT 1",
      "SELECT 2",
      "SELECT 3",
      "SELECT 4",
      "SELECT 5",
      "SELECT 6"
    ])
  })

  it("leaves the text unknown when there is no builder, it throws, or it calls nothing at once", () => {
    const builders: ReadonlyArray<Builder | undefined> = [
      undefined,
      () => {
        throw new Error("not a statement")
      },
      (c) => Effect.suspend(() => c.execute("SELECT later", [], undefined))
    ]
    assert.deepStrictEqual(builders.map(sqlOf), [undefined, undefined, undefined])
  })

  it("forgets the previous statement's text", () => {
    const first = sqlOf((c) => c.execute("SELECT first", [], undefined))
    const throwing = sqlOf((c) => {
      c.execute("SELECT half", [], undefined)
      throw new Error("after the call")
    })
    const nothing = sqlOf(() => Effect.void)
    assert.deepStrictEqual([first, throwing, nothing], ["SELECT first", undefined, undefined])
  })

  it("reads the text @effect/sql compiled for a statement, from the builder it hands the borrower", () => {
    const builders: Array<(connection: Connection) => Effect.Effect<unknown, unknown, unknown>> = []
    const borrower: Borrower = (f) => {
      builders.push(f)
      return Effect.die("the test runs no statement")
    }
    const sql = Statement.make(Effect.die("no acquirer"), PgClient.makeCompiler(), [], undefined, borrower)
    Effect.runSyncExit(sql`SELECT ${1}::int AS one, ${"x"} AS two`)
    Effect.runSyncExit(sql`UPDATE t SET v = ${2}`.values)
    assert.deepStrictEqual(builders.map(sqlOf), ["SELECT $1::int AS one, $2 AS two", "UPDATE t SET v = $1"])
  })
})
