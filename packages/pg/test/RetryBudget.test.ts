import { assert, describe, layer } from "@effect/vitest"
import { ResilientPg } from "@sturdy/pg"
import { Eventually, PgServer } from "@sturdy/testing"
import { Clock, Effect, Fiber, Layer, Logger } from "effect"
import { SqlClient } from "effect/sql"
import { fast, resilient } from "./helpers.ts"

const tagOf = (error: unknown) => (error as { readonly _tag?: string })?._tag ?? "other"

/**
 * 50 callers, each calling in a loop for 2 s while the server is stopped, on a
 * breaker that never opens (so the budget alone bounds the retries): first
 * attempts (calls), attempts and connections opened over the outage, and how
 * the calls ended.
 */
const outage = (server: PgServer.PgServerService, retryBudget: ResilientPg.Options["retryBudget"]) =>
  Effect.gen(function* () {
    const { layer: client } = resilient(server, {
      ...fast,
      retriesAfterFirst: 3,
      breakerFailures: 1_000_000,
      retryBudget
    })
    return yield* Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const service = yield* ResilientPg.ResilientPg
      yield* sql`SELECT 1`
      yield* server.stop
      const before = yield* service.stats
      const started = yield* Clock.currentTimeMillis
      const until = started + 2000
      const ended: Record<string, number> = {}
      const caller = Effect.gen(function* () {
        while ((yield* Clock.currentTimeMillis) < until) {
          const exit = yield* Effect.exit(ResilientPg.unwrapFailures(sql`SELECT 1`))
          const tag =
            exit._tag === "Success"
              ? "Success"
              : tagOf(exit.cause.reasons[0]?._tag === "Fail" ? exit.cause.reasons[0].error : undefined)
          ended[tag] = (ended[tag] ?? 0) + 1
        }
      })
      yield* Effect.forEach(Array.from({ length: 50 }), () => caller, { concurrency: "unbounded", discard: true })
      const after = yield* service.stats
      const seconds = ((yield* Clock.currentTimeMillis) - started) / 1000
      const first = after.statements - before.statements
      const attempts = after.attempts - before.attempts
      const connections = (after.connectionsOpened ?? 0) - (before.connectionsOpened ?? 0)
      return { first, attempts, connections, ratio: attempts / first, seconds, ended }
    }).pipe(Effect.provide(Layer.provide(client, Logger.layer([]))), Effect.ensuring(Effect.orDie(server.start)))
  })

describe("the retry budget inside ResilientPg, against a real server", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect(
      "server stopped, 50 callers for 2 s: attempts stay within 1.1 x first attempts with the budget; about 4 x without",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const budgeted = yield* outage(server, undefined)
          const unbudgeted = yield* outage(server, false)
          // The figures, for the record (docs/decisions/0023-retry-budget.md).
          yield* Effect.sync(() => {
            process.stdout.write(
              `retry budget, server stopped 2 s, 50 callers: with ${JSON.stringify(budgeted)}; without ${JSON.stringify(unbudgeted)}\n`
            )
          })
          // Enough calls that the budget has to bind: without it, each of them would retry 3 times, far above the
          // budget's 102. (An idle machine makes 1,200-1,500; the floor stays well below, for a loaded CI machine.)
          assert.isAtLeast(budgeted.first, 200)
          // The budget's own bound, whatever the machine's speed: retries <= its capacity (100) + its floor (1 a
          // second) x the time. (How many first attempts fit in 2 s, and so the ratio, depends on the machine's load.)
          assert.isAtMost(budgeted.attempts - budgeted.first, 100 + Math.ceil(budgeted.seconds))
          assert.isAbove(budgeted.ended["RetryBudgetExhausted"] ?? 0, 0)
          // Every attempt that reached the stopped server was a connection attempt.
          assert.isAtMost(budgeted.connections, budgeted.attempts)
          assert.isAtLeast(unbudgeted.ratio, 3.5)
          assert.strictEqual(unbudgeted.ended["RetryBudgetExhausted"], undefined)
        }),
      { timeout: 60_000 }
    )

    it.effect("healthy: an isolated transient failure (a SELECT whose backend is killed) is still retried", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const { applicationName, layer: client } = resilient(server, fast)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          for (let i = 0; i < 20; i++) yield* sql`SELECT 1`
          const call = yield* Effect.forkChild(sql<{ done: string }>`SELECT 'done' AS done FROM pg_sleep(0.5)`)
          yield* Eventually.until(server.activeQueries(applicationName), {
            what: "the SELECT running on the server",
            accept: (queries) => queries.some((q) => q.includes("pg_sleep")),
            timeout: "5 seconds"
          })
          assert.strictEqual(yield* server.terminateBackends(applicationName), 1)
          assert.deepStrictEqual(yield* Fiber.join(call), [{ done: "done" }])
          const stats = yield* (yield* ResilientPg.ResilientPg).stats
          assert.strictEqual(stats.retries, 1)
        }).pipe(Effect.provide(client))
      })
    )
  })
})
