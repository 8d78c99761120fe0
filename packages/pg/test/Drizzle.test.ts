import { assert, describe, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { ResilientPg } from "@sturdy/pg"
import { Eventually, PgServer } from "@sturdy/testing"
import { eq, sql as raw } from "drizzle-orm"
import * as PgDrizzle from "drizzle-orm/effect-postgres"
import { integer, pgTable, text, uuid } from "drizzle-orm/pg-core"
import { Deferred, Effect, Fiber, Layer, Logger } from "effect"
import { randomBytes, randomUUID } from "node:crypto"
import { appName } from "./helpers.ts"

const quiet = Layer.provide(Logger.layer([]))

describe("drizzle-orm's Effect driver on ResilientPg", () => {
  layer(PgServer.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("CRUD and a relational read give the same results through PgClient.layer and ResilientPg.layer", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        // A table per client, so both runs start from the same state.
        const tableFor = (client: string) =>
          Effect.gen(function* () {
            const name = `drizzle_notes_${client}_${randomBytes(4).toString("hex")}`
            yield* server.admin.unsafe(
              `CREATE TABLE ${name} (id uuid PRIMARY KEY, title text NOT NULL, n int NOT NULL)`
            )
            return pgTable(name, {
              id: uuid("id").primaryKey(),
              title: text("title").notNull(),
              n: integer("n").notNull()
            })
          })
        const crud = (client: string) =>
          Effect.gen(function* () {
            const notes = yield* tableFor(client)
            const db = yield* PgDrizzle.makeWithDefaults()
            const ids = [randomUUID(), randomUUID()]
            yield* db.insert(notes).values([
              { id: ids[0]!, title: "one", n: 1 },
              { id: ids[1]!, title: "two", n: 2 }
            ])
            yield* db.update(notes).set({ n: 20 }).where(eq(notes.id, ids[1]!))
            yield* db.delete(notes).where(eq(notes.id, ids[0]!))
            const rows = yield* db.select({ title: notes.title, n: notes.n }).from(notes).where(eq(notes.id, ids[1]!))
            const inTransaction = yield* db.transaction((tx) =>
              tx.select({ count: raw<number>`count(*)::int` }).from(notes)
            )
            return { rows, inTransaction }
          })
        const plain = yield* crud("plain").pipe(Effect.provide(PgClient.layer({ url: server.url })))
        const sturdy = yield* crud("sturdy").pipe(
          Effect.provide(ResilientPg.layer({ url: server.url, applicationName: appName() }).pipe(quiet))
        )
        assert.deepStrictEqual(plain, { rows: [{ title: "two", n: 20 }], inTransaction: [{ count: 1 }] })
        assert.deepStrictEqual(sturdy, plain)
      })
    )

    it.effect("an INSERT whose connection dies mid-statement is caught as OutcomeUnknown through drizzle's error", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const name = `drizzle_lost_${randomBytes(4).toString("hex")}`
        yield* server.admin.unsafe(`CREATE TABLE ${name} (id uuid PRIMARY KEY, title text NOT NULL)`)
        const table = pgTable(name, { id: uuid("id").primaryKey(), title: text("title").notNull() })
        const applicationName = appName()
        const caught = yield* Effect.gen(function* () {
          const db = yield* PgDrizzle.makeWithDefaults()
          const insert = yield* Effect.forkChild(
            db
              .insert(table)
              .values({ id: randomUUID(), title: raw`(SELECT pg_sleep(3)::text || 'slow')` })
              .pipe(
                ResilientPg.unwrapFailures,
                Effect.map(() => "inserted"),
                Effect.catchTag("OutcomeUnknown", (e) => Effect.succeed(`OutcomeUnknown: ${e.reason._tag}`))
              ),
            { startImmediately: true }
          )
          // Kill the backend while the statement runs.
          yield* Eventually.until(server.terminateBackends(applicationName), {
            what: "the INSERT's backend to be terminated",
            accept: (killed) => killed > 0,
            timeout: "5 seconds"
          })
          return yield* Fiber.join(insert)
        }).pipe(Effect.provide(ResilientPg.layer({ url: server.url, applicationName }).pipe(quiet)))
        assert.match(caught, /^OutcomeUnknown: (ConnectionClosed|AdminShutdown|ConnectionReset)$/)
      })
    )

    it.effect(
      "a SERIALIZABLE conflict between two fibers, drizzle statements and db.transaction inside, is retried by withTransaction: the counter ends at 2",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const name = `drizzle_counter_${randomBytes(4).toString("hex")}`
          yield* server.admin.unsafe(`CREATE TABLE ${name} (id int PRIMARY KEY, n int NOT NULL)`)
          yield* server.admin.unsafe(`INSERT INTO ${name} VALUES (1, 0)`)
          const counter = pgTable(name, { id: integer("id").primaryKey(), n: integer("n").notNull() })
          const final = yield* Effect.gen(function* () {
            const db = yield* PgDrizzle.makeWithDefaults()
            const bothRead = yield* Deferred.make<void>()
            let readers = 0
            const increment = (nested: boolean) =>
              ResilientPg.withTransaction(
                Effect.gen(function* () {
                  const body = Effect.gen(function* () {
                    const [row] = yield* db.select({ n: counter.n }).from(counter).where(eq(counter.id, 1))
                    // Both transactions read before either writes, so one of them must fail with 40001.
                    if (++readers === 2) yield* Deferred.succeed(bothRead, undefined)
                    yield* Deferred.await(bothRead).pipe(Effect.timeoutOption("500 millis"))
                    yield* db
                      .update(counter)
                      .set({ n: row!.n + 1 })
                      .where(eq(counter.id, 1))
                  })
                  yield* nested ? db.transaction(() => body) : body
                }),
                { isolation: "serializable" }
              )
            yield* Effect.all([increment(false), increment(true)], { concurrency: 2 })
            const [row] = yield* db.select({ n: counter.n }).from(counter).where(eq(counter.id, 1))
            return row!.n
          }).pipe(Effect.provide(ResilientPg.layer({ url: server.url, applicationName: appName() }).pipe(quiet)))
          assert.strictEqual(final, 2)
        })
    )
  })
})
