/**
 * drizzle on Sturdy: drizzle-orm's own Effect driver (`drizzle-orm/effect-postgres`) reads `PgClient` from
 * the context, so providing `ResilientPg.layer` instead of `PgClient.layer` puts every drizzle query
 * behind Sturdy's policies, with no change to the queries.
 *
 * On an embedded PostgreSQL unless DATABASE_URL is set: creates a table, writes and reads notes through
 * drizzle, runs a transaction with `ResilientPg.withTransaction`, and handles Sturdy's typed failures
 * through drizzle's own error wrapper.
 */
import { NodeRuntime } from "@effect/platform-node"
import { ResilientPg } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { desc, eq, sql } from "drizzle-orm"
import * as PgDrizzle from "drizzle-orm/effect-postgres"
import { pgTable, text, timestamp, uuid } from "drizzle-orm/pg-core"
import { Config, Effect, Layer, Logger, Option } from "effect"
import { randomUUID } from "node:crypto"

// drizzle's schema, as in any drizzle app.
const notes = pgTable("drizzle_example_notes", {
  id: uuid("id").primaryKey(),
  title: text("title").notNull(),
  createdAt: timestamp("created_at").notNull().defaultNow()
})

const program = Effect.gen(function* () {
  const db = yield* PgDrizzle.makeWithDefaults()
  yield* db.execute(
    sql`CREATE TABLE IF NOT EXISTS drizzle_example_notes (id uuid PRIMARY KEY, title text NOT NULL, created_at timestamp NOT NULL DEFAULT now())`
  )

  // A write that is safe to run twice: Sturdy may retry it even after a connection lost mid-statement.
  const id = randomUUID()
  yield* ResilientPg.idempotent(db.insert(notes).values({ id, title: "written through drizzle" }).onConflictDoNothing())

  // A transaction run again as a whole on a serialization conflict, drizzle statements inside.
  const latest = yield* ResilientPg.withTransaction(
    Effect.gen(function* () {
      yield* db.update(notes).set({ title: "renamed in a transaction" }).where(eq(notes.id, id))
      return yield* db.select({ id: notes.id, title: notes.title }).from(notes).orderBy(desc(notes.createdAt)).limit(3)
    }),
    { isolation: "serializable" }
  )
  yield* Effect.sync(() => process.stdout.write(`latest notes: ${JSON.stringify(latest)}\n`))
}).pipe(
  // drizzle wraps the driver's error in its own; unwrapFailures finds Sturdy's typed failure inside it.
  ResilientPg.unwrapFailures,
  Effect.catchTag("OutcomeUnknown", (e) => Effect.logError(`a write may or may not have happened: ${e.message}`)),
  Effect.catchTag("TransientError", (e) => Effect.logError(`database unavailable after retries: ${e.reason._tag}`))
)

const main = Effect.gen(function* () {
  const fromEnv = yield* Config.option(Config.Redacted("DATABASE_URL"))
  const url = Option.isSome(fromEnv) ? fromEnv.value : (yield* PgServer.makeEmbedded).url
  yield* Effect.sync(() => process.stdout.write(`drizzle on Sturdy, against ${ResilientPg.describeUrl(url)}\n`))
  // Before: PgClient.layer({ url }). After: the same drizzle code, behind Sturdy's policies.
  yield* program.pipe(
    Effect.provide(ResilientPg.layer({ url, applicationName: "drizzle-example" }).pipe(Layer.provide(Logger.layer([]))))
  )
})

NodeRuntime.runMain(Effect.scoped(main))
