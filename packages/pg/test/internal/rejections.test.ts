import { assert, describe, it } from "@effect/vitest"
import { DatabaseMetrics } from "@sturdy/resilience"
import { Duration, Effect, Exit } from "effect"
import * as PgFailure from "../../src/PgFailure.ts"
import { type Rejected, Rejections, stackless } from "../../src/internal/rejections.ts"

const rejected = (retryAfterMillis: number, probing = false): Rejected =>
  ({ _tag: "Rejected", retryAfterMillis, probing }) as Rejected

describe("Rejections", () => {
  it("reuses the rejection while retryAfter and probing stay the same, and counts every one", () => {
    const recorder = new DatabaseMetrics.Recorder()
    const rejections = new Rejections("db", recorder)
    const first = rejections.of(rejected(1000))
    const again = rejections.of(rejected(1000))
    const shorter = rejections.of(rejected(900))
    const probing = rejections.of(rejected(900, true))
    const back = rejections.of(rejected(1000))
    assert.deepStrictEqual(
      [again === first, shorter === first, probing === shorter, back === first, recorder.rejections],
      [true, false, false, false, 5]
    )
    assert.deepStrictEqual(
      [
        first.error._tag,
        first.error.key,
        first.error._tag === "CircuitOpen" && Duration.toMillis(first.error.retryAfter),
        probing.error._tag,
        probing.error.key
      ],
      ["CircuitOpen", "db", 1000, "CircuitHalfOpen", "db"]
    )
  })

  it("a statement fails with the rejection wrapped in a SqlError for execute", () => {
    const rejection = new Rejections("db", new DatabaseMetrics.Recorder()).of(rejected(250))
    const exit = Effect.runSyncExit(rejection.statementFailure)
    assert.isTrue(Exit.isFailure(exit))
    const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
    const sqlError =
      error !== undefined && "error" in error
        ? (error.error as { reason: { cause: unknown; operation?: string } })
        : undefined
    assert.strictEqual(sqlError?.reason.cause, rejection.error)
    assert.strictEqual(sqlError?.reason.operation, "execute")
  })

  it("surfaces each rejection as one SqlError, built with the first operation that asked", () => {
    const rejections = new Rejections("db", new DatabaseMetrics.Recorder())
    const rejection = rejections.of(rejected(250)).error
    const surfaced = rejections.sqlError(rejection, "acquire")
    assert.strictEqual(rejections.sqlError(rejection, "execute"), surfaced)
    assert.strictEqual(PgFailure.fromSqlError(surfaced), rejection)
    assert.strictEqual(surfaced.reason.operation, "acquire")
    const other = rejections.of(rejected(500)).error
    assert.notStrictEqual(rejections.sqlError(other, "acquire"), surfaced)
  })

  it("builds errors without a stack, and restores the stack limit even when the builder throws", () => {
    const limit = Error.stackTraceLimit
    const withStack = new Error("with")
    const without = stackless(() => new Error("without"))
    assert.include(withStack.stack ?? "", "\n    at ")
    assert.notInclude(without.stack ?? "", "\n    at ")
    assert.throws(() =>
      stackless(() => {
        throw new Error("boom")
      })
    )
    assert.strictEqual(Error.stackTraceLimit, limit)
  })
})
