import { assert, describe, layer } from "@effect/vitest"
import { type PgFailure, ResilientPg } from "@sturdy/pg"
import { FaultProxy, PgServer, ServerFaults } from "@sturdy/testing"
import { Context, Deferred, Effect, Fiber, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { failureOf, fast } from "./helpers.ts"

const tagOf = (error: unknown) => (error as { readonly _tag: string })._tag

describe("ResilientPg.withTransaction against a real server", () => {
  layer(PgServer.layer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect(
      "bank transfers under SERIALIZABLE: each applied exactly once, the total unchanged, 40001 retried",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const db = yield* ServerFaults.database(server)
          yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const service = yield* ResilientPg.ResilientPg
            yield* sql`CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)`
            yield* sql`CREATE TABLE ledger (transfer_id uuid PRIMARY KEY, from_id int NOT NULL, to_id int NOT NULL, amount bigint NOT NULL)`
            yield* sql`INSERT INTO accounts SELECT i, 1000 FROM generate_series(1, 20) AS i`
            const transfers = Array.from({ length: 500 }, () => ({
              id: randomUUID(),
              from: 1 + Math.floor(Math.random() * 20),
              to: 1 + Math.floor(Math.random() * 20),
              amount: 1 + Math.floor(Math.random() * 50)
            }))
            let runs = 0
            const transfer = (t: (typeof transfers)[number]) =>
              ResilientPg.withTransaction(
                Effect.gen(function* () {
                  runs++
                  // Read, then write what was read: the pattern SERIALIZABLE has to protect.
                  const [from] = yield* sql<{ balance: string }>`SELECT balance FROM accounts WHERE id = ${t.from}`
                  yield* sql`UPDATE accounts SET balance = ${BigInt(from!.balance) - BigInt(t.amount)} WHERE id = ${t.from}`
                  yield* sql`UPDATE accounts SET balance = balance + ${t.amount} WHERE id = ${t.to}`
                  yield* sql`INSERT INTO ledger VALUES (${t.id}, ${t.from}, ${t.to}, ${t.amount})`
                }),
                {
                  isolation: "serializable",
                  retriesAfterFirst: 30,
                  backoffBase: "5 millis",
                  backoffJitter: "20 millis"
                }
              )
            yield* Effect.forEach(transfers, transfer, { concurrency: 8, discard: true })
            const [ledger] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ledger`
            const [total] = yield* sql<{ total: string }>`SELECT sum(balance)::text AS total FROM accounts`
            const [applied] = yield* sql<{ n: number }>`
              SELECT count(*)::int AS n FROM ledger WHERE transfer_id = ANY(${transfers.map((t) => t.id)}::uuid[])`
            assert.strictEqual(ledger!.n, 500)
            assert.strictEqual(applied!.n, 500)
            assert.strictEqual(total!.total, "20000")
            assert.isAtLeast(service.transactions.conflictRetries, 1, "no serialization failure was retried")
            assert.strictEqual(runs, 500 + service.transactions.retries)
          }).pipe(
            Effect.provide(ResilientPg.layer({ url: db.url, applicationName: "bank", maxConnections: 8, ...fast }))
          )
        }).pipe(Effect.scoped),
      // 500 SERIALIZABLE transfers with their retries: 3 s on an idle machine, 5-7 s measured on a loaded one,
      // past vitest's default 5 s.
      30_000
    )

    it.effect("a deadlock between two transactions is retried, and both complete", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const db = yield* ServerFaults.database(server)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const service = yield* ResilientPg.ResilientPg
          yield* sql`CREATE TABLE rows (id int PRIMARY KEY, v int NOT NULL)`
          yield* sql`INSERT INTO rows VALUES (1, 0), (2, 0)`
          const firstLocked = yield* Deferred.make<void>()
          const secondLocked = yield* Deferred.make<void>()
          // Each takes one row, waits for the other to take the other row, then reaches for it: a cycle.
          const crossing = (
            mine: number,
            theirs: number,
            locked: Deferred.Deferred<void>,
            other: Deferred.Deferred<void>
          ) =>
            ResilientPg.withTransaction(
              Effect.gen(function* () {
                yield* sql`UPDATE rows SET v = v + 1 WHERE id = ${mine}`
                yield* Deferred.succeed(locked, undefined)
                yield* Deferred.await(other)
                yield* sql`UPDATE rows SET v = v + 10 WHERE id = ${theirs}`
              }),
              { backoffBase: "10 millis" }
            )
          yield* Effect.all([crossing(1, 2, firstLocked, secondLocked), crossing(2, 1, secondLocked, firstLocked)], {
            concurrency: 2
          })
          const rows = yield* sql<{ id: number; v: number }>`SELECT id, v FROM rows ORDER BY id`
          assert.deepStrictEqual(rows, [
            { id: 1, v: 11 },
            { id: 2, v: 11 }
          ])
          // One cycle, one victim (40P01), retried once: its second run meets no cycle, the other having its rows.
          assert.deepStrictEqual(
            [service.transactions.started, service.transactions.retries, service.transactions.conflictRetries],
            [2, 1, 1]
          )
        }).pipe(Effect.provide(ResilientPg.layer({ url: db.url, applicationName: "deadlock", ...fast })))
      }).pipe(Effect.scoped)
    )
  })

  // The COMMIT faults need the proxy between the client and the server.
  layer(PgServer.layer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    const withProxy = (
      f: (env: {
        readonly proxy: FaultProxy.FaultProxyService
        readonly sql: SqlClient.SqlClient
        readonly service: ResilientPg.Service
        readonly verify: SqlClient.SqlClient
      }) => Effect.Effect<void, unknown, SqlClient.SqlClient | ResilientPg.ResilientPg>
    ) =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const db = yield* ServerFaults.database(server)
        const proxy = yield* FaultProxy.make({ host: server.host, port: server.port, url: db.url })
        // Straight to the server, around the proxy and its faults.
        const verifyContext = Context.get(
          yield* Layer.build(ResilientPg.layer({ url: db.url, applicationName: "verify" })),
          SqlClient.SqlClient
        )
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const service = yield* ResilientPg.ResilientPg
          yield* sql`CREATE TABLE IF NOT EXISTS notes (id uuid PRIMARY KEY)`
          // Warm the only pooled connection, so the transaction runs on it.
          yield* sql`SELECT 1`
          yield* f({ proxy, sql, service, verify: verifyContext })
        }).pipe(
          Effect.provide(ResilientPg.layer({ url: proxy.url, applicationName: "in-doubt", maxConnections: 1, ...fast }))
        )
      }).pipe(Effect.scoped)

    const countOf = (sql: SqlClient.SqlClient, id: string) =>
      Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM notes WHERE id = ${id}`, (rows) => rows[0]!.n)

    it.effect(
      "the COMMIT reaches the server and its answer is lost: success, without running again, the row once",
      () =>
        withProxy(({ proxy, sql, service, verify }) =>
          Effect.gen(function* () {
            const id = randomUUID()
            let runs = 0
            yield* proxy.set(FaultProxy.resetOnMessage("COMMIT", "after-server-answers"))
            const result = yield* ResilientPg.withTransaction(
              Effect.gen(function* () {
                runs++
                yield* sql`INSERT INTO notes (id) VALUES (${id})`
                return "saved"
              })
            )
            assert.strictEqual(result, "saved")
            assert.strictEqual(yield* proxy.messageFaultsFired, 1)
            assert.strictEqual(runs, 1)
            assert.strictEqual(yield* countOf(verify, id), 1)
            assert.strictEqual(service.transactions.commitsFoundCommitted, 1)
          })
        )
    )

    it.effect("the COMMIT never reaches the server: the transaction runs again, the row once", () =>
      withProxy(({ proxy, sql, service, verify }) =>
        Effect.gen(function* () {
          const id = randomUUID()
          let runs = 0
          yield* proxy.set(FaultProxy.resetOnMessage("COMMIT", "before-server"))
          // One lost COMMIT is the fault; the retry's must get through.
          const lift = yield* Effect.forkChild(Effect.andThen(proxy.messageFaultsFired, proxy.clear), {
            startImmediately: true
          })
          const result = yield* ResilientPg.withTransaction(
            Effect.gen(function* () {
              runs++
              yield* sql`INSERT INTO notes (id) VALUES (${id})`
              return "saved"
            }),
            { backoffBase: "200 millis" }
          )
          yield* Fiber.join(lift)
          assert.strictEqual(result, "saved")
          assert.strictEqual(runs, 2)
          assert.strictEqual(yield* countOf(verify, id), 1)
          assert.strictEqual(service.transactions.commitsFoundAborted, 1)
        })
      )
    )

    it.effect("the outcome cannot be determined in time (no fresh connection): CommitOutcomeUnknown with the id", () =>
      withProxy(({ proxy, sql, service, verify }) =>
        Effect.gen(function* () {
          const id = randomUUID()
          // The answer to COMMIT is lost, and every new connection (the one that would ask) is refused.
          yield* proxy.set(FaultProxy.resetOnMessage("COMMIT", "after-server-answers"), FaultProxy.refuse)
          const exit = yield* Effect.exit(
            ResilientPg.withTransaction(sql`INSERT INTO notes (id) VALUES (${id})`, { resolveCommitWithin: "1 second" })
          )
          const error = failureOf(exit) as PgFailure.CommitOutcomeUnknown
          assert.strictEqual(tagOf(error), "CommitOutcomeUnknown")
          assert.match(error.transactionId, /^\d+$/)
          assert.include(error.detail, "could not be asked")
          assert.strictEqual(service.transactions.commitsUnresolved, 1)
          yield* proxy.clear
          // It had committed: the id is what tells the caller.
          assert.strictEqual(yield* countOf(verify, id), 1)
          const [status] = yield* verify<{
            status: string
          }>`SELECT pg_xact_status(${error.transactionId}::xid8)::text AS status`
          assert.strictEqual(status!.status, "committed")
        })
      )
    )

    it.effect("a read-only transaction skips the id round trip, and a write in it fails at once", () =>
      withProxy(({ sql, service }) =>
        Effect.gen(function* () {
          const rows = yield* ResilientPg.withTransaction(sql<{ one: number }>`SELECT 1 AS one`, {
            access: "read only"
          })
          assert.deepStrictEqual(rows, [{ one: 1 }])
          const exit = yield* Effect.exit(
            ResilientPg.withTransaction(sql`INSERT INTO notes (id) VALUES (${randomUUID()})`, { access: "read only" })
          )
          assert.strictEqual(tagOf(failureOf(exit)), "SqlError")
          assert.strictEqual(service.transactions.retries, 0)
        })
      )
    )
  })
})
