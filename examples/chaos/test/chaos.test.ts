/**
 * The chaos suite: every fault of issue 4 against the four workloads, each
 * cell checking that nothing acknowledged was lost, nothing duplicated, every
 * call ended within its bound, connections came back to the pool size, reads
 * work once the fault is lifted, and nothing died.
 *
 * Run it alone: `pnpm vitest run --project chaos`.
 */
import { assert, describe, layer } from "@effect/vitest"
import { PgServer } from "@sturdy/testing"
import { Effect } from "effect"
import * as Cell from "../src/Cell.ts"

const unhandled: Array<unknown> = []
process.on("unhandledRejection", (reason) => unhandled.push(reason))

describe("chaos: fault x workload", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect("every cell holds its invariants", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const rows: Array<Cell.Row> = []
        for (const [index, fault] of Cell.faults.entries()) {
          rows.push(...(yield* Effect.scoped(Cell.run(server, fault, index))))
        }
        process.stdout.write(`\n${Cell.table(rows)}\n\nbound per call: ${Cell.callBound} ms (+500 ms slack)\n`)
        for (const row of rows) {
          const cell = `${row.fault} x ${row.workload}`
          assert.isAbove(row.calls, 0, `${cell}: no calls ran`)
          assert.strictEqual(row.lost, 0, `${cell}: acknowledged writes lost`)
          assert.strictEqual(row.duplicated, 0, `${cell}: writes duplicated or half-applied`)
          assert.strictEqual(row.overBound, 0, `${cell}: calls over their bound (slowest ${row.slowestMillis} ms)`)
          assert.strictEqual(row.defects, 0, `${cell}: defects or hung calls`)
          assert.isAtMost(row.connectionsAfter, Cell.policy.maxConnections, `${cell}: connections after recovery`)
          assert.isTrue(row.readAfterLift, `${cell}: a read failed after the fault was lifted`)
        }
        assert.deepStrictEqual(unhandled, [])
      })
    )
  })
})
