// The README's example, type-checked with the rest of the repository.
// Run it against your own server: DATABASE_URL=postgres://... node examples/quickstart/src/example.ts
import { NodeRuntime } from "@effect/platform-node"
import { ResilientPg } from "@sturdy/pg"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

// Unchanged application code: it only knows SqlClient.
const createNote = (id: string, title: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    // Safe to run twice, so Sturdy may retry it even after the connection was lost mid-statement.
    yield* ResilientPg.idempotent(
      sql`INSERT INTO notes (id, title) VALUES (${id}, ${title}) ON CONFLICT (id) DO NOTHING`
    )
    return yield* sql<{ id: string; title: string }>`SELECT id, title FROM notes WHERE id = ${id}`
  })

const program = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS notes (id uuid PRIMARY KEY, title text NOT NULL)`
  const [note] = yield* createNote(crypto.randomUUID(), "survives restarts")
  yield* Effect.log(`saved ${note?.title}`)
}).pipe(
  // Sturdy's typed failures travel inside SqlError; this moves them into the error channel.
  ResilientPg.unwrapFailures,
  Effect.catchTag("OutcomeUnknown", (e) => Effect.logError(`a write may or may not have happened: ${e.message}`)),
  Effect.catchTag("TransientError", (e) => Effect.logError(`database unavailable after retries: ${e.reason._tag}`))
)

// Before: PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })
// After: DATABASE_URL, the profile from NODE_ENV, overrides from STURDY_* variables.
program.pipe(Effect.provide(ResilientPg.layerConfig({ applicationName: "notes-api" })), NodeRuntime.runMain)
