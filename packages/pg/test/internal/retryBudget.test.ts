import { assert, describe, it } from "@effect/vitest"
import { Breaker, DatabaseMetrics, Profile, RetryBudget } from "@sturdy/resilience"
import { Duration, Effect, Fiber } from "effect"
import { ConnectionError, SqlError } from "effect/sql/SqlError"
import { TestClock } from "effect/testing"
import * as PgFailure from "../../src/PgFailure.ts"
import * as Stack from "../../src/internal/stack.ts"
import * as StatementStats from "../../src/StatementStats.ts"

const refused = new SqlError({
  reason: new ConnectionError({
    cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }),
    message: "PgConnection: Failed to connect",
    operation: "connect"
  })
})

/** A pool whose server is down while `down()` says so; counts the connection attempts that reach it. */
const pool = (down: () => boolean) => {
  let reached = 0
  const like: Stack.PoolLike = {
    use: <A, E, R>(f: (connection: never) => Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
      Effect.suspend((): Effect.Effect<A, E | SqlError, R> => {
        reached++
        return down() ? Effect.fail(refused) : f({} as never)
      })
  }
  return { like, reached: () => reached }
}

const profile: Profile.Profile = {
  ...Profile.development,
  retriesAfterFirst: 3,
  backoffBase: Duration.seconds(1),
  backoffJitter: Duration.zero
}

/** The stack over `pool`, with a breaker that never opens: the budget alone bounds the retries. */
const stackOver = (like: Stack.PoolLike, retryBudget: RetryBudget.RetryBudget | undefined) =>
  Effect.gen(function* () {
    const breaker = yield* Breaker.make({ tripPolicy: Breaker.consecutive(1_000_000), openDuration: "1 second" })
    const recorder = new DatabaseMetrics.Recorder()
    const stack = yield* Stack.make({
      pool: like,
      maxConnections: 10,
      statementsPerConnection: 1,
      profile,
      sentPhaseRetry: "safe",
      whenCircuitOpen: "wait-and-retry",
      retryBudget,
      breaker,
      key: "db",
      recorder,
      statements: new StatementStats.Table(0),
      sessions: new Stack.Sessions({ retire: () => Effect.void }),
      idempotency: () => "auto"
    })
    return { stack, recorder }
  })

const statement = Effect.succeed("ok")

/** `calls` calls, one every 10 ms of virtual time, against a server that is down throughout; their failures' tags. */
const outage = (retryBudget: RetryBudget.RetryBudget | undefined, calls: number) =>
  Effect.gen(function* () {
    const server = pool(() => true)
    const { stack, recorder } = yield* stackOver(server.like, retryBudget)
    const fibers: Array<Fiber.Fiber<string, unknown>> = []
    for (let i = 0; i < calls; i++) {
      fibers.push(
        yield* Effect.forkChild(
          stack
            .borrower(() => statement)
            .pipe(Effect.catch((error) => Effect.succeed(PgFailure.fromSqlError(error as SqlError)?._tag ?? "other")))
        )
      )
      yield* TestClock.adjust("10 millis")
    }
    yield* TestClock.adjust("1 minute")
    const tags: Record<string, number> = {}
    for (const fiber of fibers) {
      const tag = yield* Fiber.join(fiber)
      tags[tag] = (tags[tag] ?? 0) + 1
    }
    return { tags, reached: server.reached(), attempts: recorder.attempts, first: calls }
  }).pipe(Effect.scoped, Effect.provide(TestClock.layer()))

describe("the stack's retry budget", () => {
  it.effect("server down: attempts stay within 1.1 x first attempts (the 100 starting tokens); 4 x without", () =>
    Effect.gen(function* () {
      const budgeted = yield* outage(RetryBudget.make({ ratio: 0.1, minRetriesPerSecond: 0 }, 0), 1000)
      const unbudgeted = yield* outage(undefined, 1000)
      assert.deepStrictEqual(unbudgeted, {
        tags: { TransientError: 1000 },
        reached: 4000,
        attempts: 4000,
        first: 1000
      })
      // Every call wanted 3 retries; the 100 starting tokens paid for 100, and nothing succeeded to pay for more.
      assert.deepStrictEqual(budgeted, {
        tags: { RetryBudgetExhausted: 1000 },
        reached: 1100,
        attempts: 1100,
        first: 1000
      })
      assert.isAtMost(budgeted.reached, 1.1 * 1000)
    })
  )

  it.effect("healthy, then one failure: it is retried, paid for by the successes before it", () =>
    Effect.gen(function* () {
      let down = false
      const server = pool(() => down)
      const budget = RetryBudget.make({ ratio: 0.1, minRetriesPerSecond: 1 }, 0)
      const { stack } = yield* stackOver(server.like, budget)
      while (budget.tryAcquire(0)) {}
      for (let i = 0; i < 10; i++) assert.strictEqual(yield* stack.borrower(() => statement), "ok")
      assert.isAtLeast(budget.available(0), 1 - 1e-9)
      down = true
      const fiber = yield* Effect.forkChild(stack.borrower(() => statement))
      yield* Effect.yieldNow
      down = false
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(fiber), "ok")
      assert.deepStrictEqual([server.reached(), budget.refused], [12, 1])
    }).pipe(Effect.scoped, Effect.provide(TestClock.layer()))
  )
})
