/**
 * The four workloads of the chaos suite and the demo, and how to check what
 * they left in the database.
 *
 * Each call uses a fresh client-generated id, so afterwards the tables say
 * exactly which writes landed and how many times: an acknowledged write that
 * is missing is lost, a write present twice is duplicated. Verification reads
 * the tables through a connection that bypasses the faults.
 */
import { ResilientPg } from "@sturdy/pg"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"

/**
 * @since 0.1.0
 */
export type Name = "reads" | "idempotent upserts" | "inserts" | "transactions"

/**
 * @since 0.1.0
 */
export interface Workload {
  readonly name: Name
  /** Whether its calls write. */
  readonly writes: boolean
  readonly setup: (sql: SqlClient.SqlClient) => Effect.Effect<void, SqlError>
  /** One call: a statement (or a transaction) under test, for the id. Transactions need the Sturdy client's service. */
  readonly call: (sql: SqlClient.SqlClient, id: string) => Effect.Effect<unknown, unknown, ResilientPg.ResilientPg>
  /**
   * Reads what landed. `acknowledged`: ids whose call succeeded; `attempted`: every id tried.
   * Returns acknowledged writes missing, and writes present more than once (or half-applied, for transactions).
   */
  readonly verify: (
    admin: SqlClient.SqlClient,
    acknowledged: ReadonlySet<string>,
    attempted: ReadonlySet<string>
  ) => Effect.Effect<{ readonly lost: number; readonly duplicated: number }, SqlError>
}

const countsById = (admin: SqlClient.SqlClient, table: string) =>
  Effect.map(
    admin<{ readonly id: string; readonly n: number }>`SELECT client_id::text AS id, count(*)::int AS n FROM ${admin(
      table
    )} GROUP BY client_id`,
    (rows) => new Map(rows.map((row) => [row.id, row.n]))
  )

const lostAndDuplicated = (counts: ReadonlyMap<string, number>, acknowledged: ReadonlySet<string>) => {
  let lost = 0
  let duplicated = 0
  for (const id of acknowledged) if ((counts.get(id) ?? 0) === 0) lost++
  for (const n of counts.values()) if (n > 1) duplicated += n - 1
  return { lost, duplicated }
}

/**
 * Reads of a seeded table: nothing to lose, and Sturdy may retry them after a
 * lost connection.
 *
 * @since 0.1.0
 */
export const reads: Workload = {
  name: "reads",
  writes: false,
  setup: (sql) =>
    Effect.andThen(
      sql`CREATE TABLE IF NOT EXISTS chaos_reads (id int PRIMARY KEY, value text NOT NULL)`,
      sql`INSERT INTO chaos_reads SELECT i, md5(i::text) FROM generate_series(1, 100) AS i ON CONFLICT DO NOTHING`
    ),
  call: (sql, id) => sql`SELECT value FROM chaos_reads WHERE id = ${(id.charCodeAt(0) % 100) + 1}`,
  verify: () => Effect.succeed({ lost: 0, duplicated: 0 })
}

/**
 * Upserts keyed by the client's id, marked idempotent: retried even after a
 * lost connection, and harmless twice.
 *
 * @since 0.1.0
 */
export const idempotentUpserts: Workload = {
  name: "idempotent upserts",
  writes: true,
  setup: (sql) =>
    sql`CREATE TABLE IF NOT EXISTS chaos_upserts (client_id uuid PRIMARY KEY, writes int NOT NULL DEFAULT 1)`.pipe(
      Effect.asVoid
    ),
  call: (sql, id) =>
    ResilientPg.idempotent(
      sql`INSERT INTO chaos_upserts (client_id) VALUES (${id}::uuid)
          ON CONFLICT (client_id) DO UPDATE SET writes = chaos_upserts.writes + 1`
    ),
  verify: (admin, acknowledged) =>
    Effect.map(countsById(admin, "chaos_upserts"), (counts) => ({
      lost: lostAndDuplicated(counts, acknowledged).lost,
      // The primary key makes a second row impossible; a second application of an upsert is by design.
      duplicated: 0
    }))
}

/**
 * Plain inserts with client-generated ids and no unique constraint: a retry
 * after the statement may have run would insert a second row.
 *
 * @since 0.1.0
 */
export const inserts: Workload = {
  name: "inserts",
  writes: true,
  setup: (sql) =>
    sql`CREATE TABLE IF NOT EXISTS chaos_inserts (seq bigserial PRIMARY KEY, client_id uuid NOT NULL)`.pipe(
      Effect.asVoid
    ),
  call: (sql, id) => sql`INSERT INTO chaos_inserts (client_id) VALUES (${id}::uuid)`,
  verify: (admin, acknowledged) =>
    Effect.map(countsById(admin, "chaos_inserts"), (counts) => lostAndDuplicated(counts, acknowledged))
}

/**
 * Two inserts in one transaction, through `ResilientPg.withTransaction`: both
 * land or neither, never twice, and a lost COMMIT is resolved.
 *
 * @since 0.1.0
 */
export const transactions: Workload = {
  name: "transactions",
  writes: true,
  setup: (sql) =>
    Effect.andThen(
      sql`CREATE TABLE IF NOT EXISTS chaos_tx_a (seq bigserial PRIMARY KEY, client_id uuid NOT NULL)`,
      sql`CREATE TABLE IF NOT EXISTS chaos_tx_b (seq bigserial PRIMARY KEY, client_id uuid NOT NULL)`
    ),
  call: (sql, id) =>
    ResilientPg.withTransaction(
      Effect.andThen(
        sql`INSERT INTO chaos_tx_a (client_id) VALUES (${id}::uuid)`,
        sql`INSERT INTO chaos_tx_b (client_id) VALUES (${id}::uuid)`
      )
    ).pipe(Effect.provideService(SqlClient.SqlClient, sql)),
  verify: (admin, acknowledged) =>
    Effect.gen(function* () {
      const a = yield* countsById(admin, "chaos_tx_a")
      const b = yield* countsById(admin, "chaos_tx_b")
      const fromA = lostAndDuplicated(a, acknowledged)
      let halfApplied = 0
      for (const id of new Set([...a.keys(), ...b.keys()])) if ((a.get(id) ?? 0) !== (b.get(id) ?? 0)) halfApplied++
      return { lost: fromA.lost, duplicated: fromA.duplicated + halfApplied }
    })
}

/**
 * @since 0.1.0
 */
export const all: ReadonlyArray<Workload> = [reads, idempotentUpserts, inserts, transactions]
