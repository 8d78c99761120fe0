import { assert, describe, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import * as PgMigrator from "@effect/sql-pg/PgMigrator"
import { ResilientPg } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { Cause, Effect, Exit, FileSystem, Layer, Logger, Option, Path, Queue, Schema, type Scope, Stream } from "effect"
import { ChildProcessSpawner } from "effect/process"
import { Model } from "effect/schema"
import { Migrator, SqlClient, SqlModel, SqlResolver, SqlSchema } from "effect/sql"
import { randomBytes } from "node:crypto"
import { appName } from "./helpers.ts"

// Parity with @effect/sql-pg (issue 13, item 3): one table of operations, each run through PgClient.layer and
// through ResilientPg.layer on a fresh client and fresh tables, and held to the same expected result; failures are
// compared by the error's reason tag and message and the server's SQLSTATE and text. Where Sturdy differs, the
// operation pins what Sturdy returns instead, with a DIFFERENCE comment that says why. The last test compares the
// two runs' results with each other.

/** The same operations through plain `PgClient.layer` and `ResilientPg.layer`. */
const clients = (server: PgServer.PgServerService) =>
  [
    ["plain", PgClient.layer({ url: server.url, applicationName: appName() })],
    ["sturdy", ResilientPg.layer({ url: server.url, applicationName: appName() }).pipe(Layer.provide(Logger.layer([])))]
  ] as const

type ClientName = ReturnType<typeof clients>[number][0]

const clientLayer = (
  server: PgServer.PgServerService,
  name: ClientName
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, unknown> => {
  const [plain, sturdy] = clients(server)
  return name === "plain" ? plain[1] : sturdy[1]
}

const failureMessage = (exit: Exit.Exit<unknown, unknown>) => {
  if (Exit.isSuccess(exit)) return "success"
  const error = Cause.findErrorOption(exit.cause)
  const reason = Option.isSome(error)
    ? (error.value as { readonly reason?: { readonly _tag: string; readonly message: string } }).reason
    : undefined
  return `${reason?._tag}: ${reason?.message}`
}

// --- What the suite compares --------------------------------------------------------------------------------------

interface ErrorShape {
  readonly _tag?: string
  readonly reason?: {
    readonly _tag: string
    readonly message: string
    readonly constraint?: string
    readonly cause?: { readonly code?: string; readonly message?: string }
  }
}

/**
 * A failure as callers see it: a `SqlError`'s reason tag and message, with the
 * server's SQLSTATE and text (the reason's message is the driver's generic
 * "Query failed"; the server's text is what tells two failures apart).
 */
const describeFailure = (error: unknown) => {
  if (typeof error !== "object" || error === null) return { failed: error }
  const { _tag, reason } = error as ErrorShape
  if (reason === undefined) return { error: _tag }
  return {
    error: _tag,
    reason: reason._tag,
    message: reason.message,
    ...(reason.constraint !== undefined && { constraint: reason.constraint }),
    sqlState: reason.cause?.code ?? null,
    serverMessage: reason.cause?.message ?? null
  }
}

/** Runs an effect that may fail, and returns what it succeeded with or how it failed. */
const outcome = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return { success: exit.value }
    const error = Cause.findErrorOption(exit.cause)
    return Option.isSome(error) ? describeFailure(error.value) : { defect: Cause.pretty(exit.cause) }
  })

/** Replaces the run's suffix in every string of a result, so both runs can be compared. */
const scrub = (value: unknown, suffix: string): unknown => {
  if (typeof value === "string") return value.replaceAll(suffix, "")
  if (Array.isArray(value)) return value.map((item) => scrub(item, suffix))
  if (typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, scrub(item, suffix)]))
  }
  return value
}

/** The names one run may create: its own tables (and channels), so both runs start from the same state. */
interface Names {
  readonly table: (base: string) => string
}

interface Operation {
  readonly name: string
  readonly run: (names: Names) => Effect.Effect<unknown, unknown, SqlClient.SqlClient | PgClient.PgClient | Scope.Scope>
  /** What both layers return. */
  readonly expected: unknown
  /** What Sturdy returns instead, where it differs; a DIFFERENCE comment beside it says why. */
  readonly difference?: { readonly sturdy: unknown }
}

const services = Effect.gen(function* () {
  return { sql: yield* SqlClient.SqlClient, pg: yield* PgClient.PgClient }
})

const Item = Schema.Struct({ id: Schema.Number, name: Schema.String })

class Note extends Model.Class<Note>("Note")({
  // Generated by the database, and the key an update names.
  id: Model.Field({ select: Schema.Number, update: Schema.Number, json: Schema.Number }),
  title: Schema.String,
  stars: Schema.Number
}) {}

const noteFields = (note: Note) => ({ model: note instanceof Note, id: note.id, title: note.title, stars: note.stars })

/** PgMigrator asks for these to dump the schema with pg_dump; without `schemaDirectory` it never uses them. */
const noSchemaDump = Layer.mergeAll(
  FileSystem.layerNoop({}),
  Path.layer,
  Layer.succeed(ChildProcessSpawner.ChildProcessSpawner)(
    ChildProcessSpawner.make(() => Effect.die("the parity suite runs no pg_dump"))
  )
)

const queryFailed = "PgConnection: Query failed"

const syntaxError = {
  error: "SqlError",
  reason: "SqlSyntaxError",
  message: queryFailed,
  sqlState: "42601",
  serverMessage: 'syntax error at or near "SELEC"'
}

const missingTable = {
  error: "SqlError",
  reason: "SqlSyntaxError",
  message: queryFailed,
  sqlState: "42P01",
  serverMessage: 'relation "parity_missing" does not exist'
}

const transactionAborted = {
  error: "SqlError",
  reason: "UnknownError",
  message: queryFailed,
  sqlState: "25P02",
  serverMessage: "current transaction is aborted, commands ignored until end of transaction block"
}

const uniqueViolation = (table: string) => ({
  error: "SqlError",
  reason: "UniqueViolation",
  message: queryFailed,
  constraint: `${table}_pkey`,
  sqlState: "23505",
  serverMessage: `duplicate key value violates unique constraint "${table}_pkey"`
})

/** Whether a statement run on a reserved session is kept as a named prepared statement there. */
const preparesStatements = (marker: string) =>
  Effect.scoped(
    Effect.gen(function* () {
      const { pg } = yield* services
      const connection = yield* pg.reserve
      const statement = `SELECT 1 AS ${marker}`
      yield* connection.execute(statement, [], undefined)
      const rows = yield* connection.execute(
        "SELECT count(*)::int AS n FROM pg_prepared_statements WHERE statement = $1",
        [statement],
        undefined
      )
      return (rows[0] as { readonly n: number }).n === 1
    })
  )

const operations: ReadonlyArray<Operation> = [
  {
    name: "listen and notify: a notification reaches the listener",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { pg } = yield* services
        const channel = table("channel")
        const queue = yield* pg.listen(channel)
        yield* pg.notify(channel, "hello")
        const received = yield* Queue.take(queue).pipe(Effect.timeoutOption("5 seconds"))
        return Option.match(received, {
          onNone: () => "nothing within 5 seconds",
          onSome: (notification) => ({ channel: notification.channel, payload: notification.payload })
        })
      }),
    expected: { channel: "parity_channel", payload: "hello" }
  },
  {
    name: "listen: a channel name over 63 bytes fails locally",
    run: () => Effect.flatMap(services, ({ pg }) => outcome(Effect.scoped(pg.listen("x".repeat(64))))),
    expected: {
      error: "SqlError",
      reason: "UnknownError",
      message: "PostgreSQL channel names must not exceed 63 UTF-8 bytes",
      sqlState: null,
      serverMessage: "PostgreSQL channel names must not exceed 63 UTF-8 bytes"
    }
  },
  {
    name: "json: pg.json parameters, jsonb and json results",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql, pg } = yield* services
        const doc = { name: "parity", tags: ["a", "b"], nested: { n: 1.5, ok: true, none: null } }
        const documents = table("json")
        yield* sql`CREATE TABLE ${sql(documents)} (id int PRIMARY KEY, doc jsonb NOT NULL)`
        yield* sql`INSERT INTO ${sql(documents)} (id, doc) VALUES (1, ${pg.json(doc)}), (2, ${pg.json([1, "two"])})`
        return {
          echoed: yield* sql`SELECT ${pg.json(doc)}::jsonb AS doc`,
          stored:
            yield* sql`SELECT id, doc, doc->'tags' AS tags, doc->>'name' AS name FROM ${sql(documents)} ORDER BY id`,
          json: yield* sql`SELECT '{"a": [1, 2]}'::json AS j`
        }
      }),
    expected: {
      echoed: [{ doc: { name: "parity", tags: ["a", "b"], nested: { n: 1.5, ok: true, none: null } } }],
      stored: [
        {
          id: 1,
          doc: { name: "parity", tags: ["a", "b"], nested: { n: 1.5, ok: true, none: null } },
          tags: ["a", "b"],
          name: "parity"
        },
        { id: 2, doc: [1, "two"], tags: null, name: null }
      ],
      json: [{ j: { a: [1, 2] } }]
    }
  },
  {
    name: "arrays: int[] and text[] parameters and results",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const texts = ["a", "b,c", '"quoted"', "", "ü", "NULL"]
        const arrays = table("arrays")
        yield* sql`CREATE TABLE ${sql(arrays)} (id int PRIMARY KEY, ints int[] NOT NULL, texts text[] NOT NULL)`
        yield* sql`INSERT INTO ${sql(arrays)} (id, ints, texts) VALUES (1, ${[1, 2, 3]}, ${texts}), (2, ${[]}, ${[]})`
        return {
          echoed:
            yield* sql`SELECT ${[1, 2, 3]}::int[] AS ints, ${texts}::text[] AS texts, ${[1, null, 3]}::int[] AS with_null`,
          stored: yield* sql`SELECT id, ints, texts FROM ${sql(arrays)} ORDER BY id`,
          any: yield* sql`SELECT id FROM ${sql(arrays)} WHERE ${2} = ANY(ints) ORDER BY id`,
          unnested:
            yield* sql`SELECT x FROM unnest(${[5, 6, 7]}::int[]) AS x WHERE x = ANY(${[6, 7]}::int[]) ORDER BY x`
        }
      }),
    expected: {
      echoed: [{ ints: [1, 2, 3], texts: ["a", "b,c", '"quoted"', "", "ü", "NULL"], with_null: [1, null, 3] }],
      stored: [
        { id: 1, ints: [1, 2, 3], texts: ["a", "b,c", '"quoted"', "", "ü", "NULL"] },
        { id: 2, ints: [], texts: [] }
      ],
      any: [{ id: 1 }],
      unnested: [{ x: 6 }, { x: 7 }]
    }
  },
  {
    name: "streams: collected, cut short, and inside a transaction",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const counted = table("streamed")
        yield* sql`CREATE TABLE ${sql(counted)} (n int NOT NULL)`
        return {
          collected: yield* Stream.runCollect(sql`SELECT g AS n FROM generate_series(1, 5) g`.stream),
          cutShort: yield* Stream.runCollect(
            Stream.take(sql`SELECT g AS n FROM generate_series(1, 100000) g`.stream, 3)
          ),
          afterCutShort: yield* sql`SELECT 1 AS one`,
          // Sees the transaction's own uncommitted rows: the stream runs on the transaction's connection.
          inTransaction: yield* sql.withTransaction(
            Effect.andThen(
              sql`INSERT INTO ${sql(counted)} (n) VALUES (1), (2)`,
              Stream.runCollect(sql`SELECT n FROM ${sql(counted)} ORDER BY n`.stream)
            )
          )
        }
      }),
    expected: {
      collected: [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }, { n: 5 }],
      cutShort: [{ n: 1 }, { n: 2 }, { n: 3 }],
      afterCutShort: [{ one: 1 }],
      inTransaction: [{ n: 1 }, { n: 2 }]
    }
  },
  {
    name: "reserve: statements on a reserved connection share one session",
    run: () =>
      Effect.gen(function* () {
        const { pg } = yield* services
        const connection = yield* pg.reserve
        const session = (statement: string) =>
          Effect.map(
            connection.execute(statement, [], undefined),
            (rows) => rows[0] as { readonly pid: number; readonly marker: string }
          )
        const first = yield* session(
          "SELECT pg_backend_pid() AS pid, set_config('parity.marker', 'reserved', false) AS marker"
        )
        const second = yield* session("SELECT pg_backend_pid() AS pid, current_setting('parity.marker') AS marker")
        const values = yield* connection.executeValues("SELECT 1, $1::text", ["one"])
        const failure = yield* outcome(connection.execute("SELEC 1", [], undefined))
        yield* connection.executeRaw("RESET parity.marker", [])
        return { samePid: first.pid === second.pid, markers: [first.marker, second.marker], values, failure }
      }),
    expected: { samePid: true, markers: ["reserved", "reserved"], values: [[1, "one"]], failure: syntaxError }
  },
  {
    name: "nested transactions: a failed savepoint is rolled back, the outer transaction commits",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const ledger = table("ledger")
        yield* sql`CREATE TABLE ${sql(ledger)} (id int PRIMARY KEY)`
        const insert = (id: number) => sql`INSERT INTO ${sql(ledger)} (id) VALUES (${id})`
        const ids = Effect.map(sql<{ readonly id: number }>`SELECT id FROM ${sql(ledger)} ORDER BY id`, (rows) =>
          rows.map((row) => row.id)
        )
        const inside = yield* sql.withTransaction(
          Effect.gen(function* () {
            yield* insert(1)
            const failedInEffect = yield* outcome(sql.withTransaction(Effect.andThen(insert(2), Effect.fail("inner"))))
            // The duplicate fails in SQL: only the savepoint is rolled back, and the transaction goes on.
            const failedInSql = yield* outcome(sql.withTransaction(Effect.andThen(insert(3), insert(1))))
            yield* sql.withTransaction(insert(4))
            const seen = yield* ids
            yield* insert(5)
            return { failedInEffect, failedInSql, seen }
          })
        )
        const outerFailed = yield* outcome(sql.withTransaction(Effect.andThen(insert(6), Effect.fail("outer"))))
        return { ...inside, outerFailed, committed: yield* ids }
      }),
    expected: {
      failedInEffect: { failed: "inner" },
      failedInSql: uniqueViolation("parity_ledger"),
      seen: [1, 4],
      outerFailed: { failed: "outer" },
      committed: [1, 4, 5]
    }
  },
  {
    name: "transactions: a statement after a failed one fails as aborted",
    run: () =>
      Effect.flatMap(services, ({ sql }) =>
        outcome(sql.withTransaction(Effect.andThen(Effect.exit(sql`SELECT 1/0 AS x`), sql`SELECT 1 AS one`)))
      ),
    expected: transactionAborted
  },
  {
    name: "transactions: COMMIT after a failed statement rolls back, and says so",
    run: () =>
      Effect.flatMap(services, ({ sql }) =>
        outcome(sql.withTransaction(Effect.as(Effect.exit(sql`SELECT 1/0 AS x`), "caught")))
      ),
    expected: {
      error: "SqlError",
      reason: "UnknownError",
      message: "PgClient: COMMIT rolled back an aborted transaction",
      sqlState: null,
      serverMessage: "COMMIT rolled back an aborted transaction"
    }
  },
  {
    name: "transactions: a statement after a failed stream fails as aborted",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const preparedBefore = yield* preparesStatements(table("before"))
        const statement = yield* outcome(
          sql.withTransaction(
            Effect.andThen(Effect.exit(Stream.runCollect(sql`SELECT 1/0 AS x`.stream)), sql`SELECT 1 AS one`)
          )
        )
        const preparedAfter = yield* preparesStatements(table("after"))
        return { preparedBefore, statement, preparedAfter }
      }),
    expected: { preparedBefore: true, statement: transactionAborted, preparedAfter: true }
    // Sturdy counts a failed stream as the transaction's first failure, so the 25P02 after it is the server's
    // answer, not taken for a prepared statement lost behind a pooler (a bug this suite found).
  },
  {
    name: "executeValues: rows as arrays, prepared and unprepared",
    run: () =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const query = sql`SELECT a, b FROM (VALUES (1, 'x'), (2, ${"y"})) AS v(a, b) ORDER BY a`
        return { values: yield* query.values, valuesUnprepared: yield* query.valuesUnprepared }
      }),
    expected: {
      values: [
        [1, "x"],
        [2, "y"]
      ],
      valuesUnprepared: [
        [1, "x"],
        [2, "y"]
      ]
    }
  },
  {
    name: "unsafe: raw SQL with parameters, unprepared, raw results and literals",
    run: () =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const raw = (yield* sql.unsafe("SELECT 1 AS one").raw) as PgConnection.Result
        return {
          sum: yield* sql.unsafe("SELECT $1::int + $2::int AS sum", [1, 2]),
          unprepared: yield* sql.unsafe("SELECT $1::text AS echoed", ["hi"]).unprepared,
          raw: { command: raw.command, rowCount: raw.rowCount, rows: raw.rows, fields: raw.fields },
          literal: yield* sql`SELECT ${sql.literal("42")} AS answer`
        }
      }),
    expected: {
      sum: [{ sum: 3 }],
      unprepared: [{ echoed: "hi" }],
      raw: { command: "SELECT", rowCount: 1, rows: [{ one: 1 }], fields: [{ name: "one", dataTypeId: 23 }] },
      literal: [{ answer: 42 }]
    }
  },
  {
    name: "helpers: sql.insert, sql.update, sql.updateValues and sql.in",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const items = table("items")
        yield* sql`CREATE TABLE ${sql(items)} (id int PRIMARY KEY, name text NOT NULL, n int NOT NULL)`
        const byId = (rows: ReadonlyArray<{ readonly id: number }>) => [...rows].sort((a, b) => a.id - b.id)
        const inserted = yield* sql`INSERT INTO ${sql(items)} ${sql
          .insert([
            { id: 1, name: "one", n: 1 },
            { id: 2, name: "two", n: 2 },
            { id: 3, name: "three", n: 3 }
          ])
          .returning("*")}`
        const insertedOne =
          yield* sql`INSERT INTO ${sql(items)} ${sql.insert({ id: 4, name: "four", n: 4 }).returning("id")}`
        const updated =
          yield* sql`UPDATE ${sql(items)} SET ${sql.update({ id: 2, name: "TWO", n: 20 }, ["id"])} WHERE id = 2 RETURNING *`
        const updatedMany = yield* sql<{
          readonly id: number
        }>`UPDATE ${sql(items)} SET name = data.name FROM ${sql.updateValues(
          [
            { id: 1, name: "ONE" },
            { id: 3, name: "THREE" }
          ],
          "data"
        )} WHERE ${sql(items)}.id = data.id::int RETURNING ${sql(items)}.id, ${sql(items)}.name`
        return {
          inserted: byId(inserted as ReadonlyArray<{ readonly id: number }>),
          insertedOne,
          updated,
          updatedMany: byId(updatedMany),
          in: yield* sql`SELECT id, name FROM ${sql(items)} WHERE id IN ${sql.in([1, 3])} ORDER BY id`,
          inColumn: yield* sql`SELECT id FROM ${sql(items)} WHERE ${sql.in("id", [2, 4])} ORDER BY id`,
          inEmpty: yield* sql`SELECT id FROM ${sql(items)} WHERE ${sql.in("id", [])}`
        }
      }),
    expected: {
      inserted: [
        { id: 1, name: "one", n: 1 },
        { id: 2, name: "two", n: 2 },
        { id: 3, name: "three", n: 3 }
      ],
      insertedOne: [{ id: 4 }],
      updated: [{ id: 2, name: "TWO", n: 20 }],
      updatedMany: [
        { id: 1, name: "ONE" },
        { id: 3, name: "THREE" }
      ],
      in: [
        { id: 1, name: "ONE" },
        { id: 3, name: "THREE" }
      ],
      inColumn: [{ id: 2 }, { id: 4 }],
      inEmpty: []
    }
  },
  {
    name: "SqlResolver: findById batches concurrent requests into one query",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const items = table("resolved")
        yield* sql`CREATE TABLE ${sql(items)} (id int PRIMARY KEY, name text NOT NULL)`
        yield* sql`INSERT INTO ${sql(items)} ${sql.insert([
          { id: 1, name: "one" },
          { id: 2, name: "two" },
          { id: 3, name: "three" }
        ])}`
        const batches: Array<ReadonlyArray<number>> = []
        const resolver = SqlResolver.findById({
          Id: Schema.Number,
          Result: Item,
          ResultId: (item) => item.id,
          execute: (ids) =>
            Effect.suspend(() => {
              batches.push(ids)
              return sql`SELECT id, name FROM ${sql(items)} WHERE ${sql.in("id", ids)}`
            })
        })
        const found = yield* Effect.forEach([3, 1, 99, 2], (id) => outcome(SqlResolver.request(id, resolver)), {
          concurrency: "unbounded"
        })
        return { found, batches }
      }),
    expected: {
      found: [
        { success: { id: 3, name: "three" } },
        { success: { id: 1, name: "one" } },
        { error: "NoSuchElementError" },
        { success: { id: 2, name: "two" } }
      ],
      batches: [[3, 1, 99, 2]]
    }
  },
  {
    name: "SqlSchema: findAll, findOne, findOneOption, findNonEmpty and void",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const items = table("schema")
        yield* sql`CREATE TABLE ${sql(items)} (id int PRIMARY KEY, name text NOT NULL)`
        const insert = SqlSchema.void({
          Request: Item,
          execute: (item) => sql`INSERT INTO ${sql(items)} ${sql.insert(item)}`
        })
        const from = (id: number) => sql`SELECT id, name FROM ${sql(items)} WHERE id >= ${id} ORDER BY id`
        const findAll = SqlSchema.findAll({ Request: Schema.Number, Result: Item, execute: from })
        const findOne = SqlSchema.findOne({ Request: Schema.Number, Result: Item, execute: from })
        const findOneOption = SqlSchema.findOneOption({ Request: Schema.Number, Result: Item, execute: from })
        const findNonEmpty = SqlSchema.findNonEmpty({ Request: Schema.Number, Result: Item, execute: from })
        const wrongShape = SqlSchema.findAll({
          Request: Schema.Number,
          Result: Schema.Struct({ id: Schema.String }),
          execute: from
        })
        yield* insert({ id: 1, name: "one" })
        yield* insert({ id: 2, name: "two" })
        return {
          duplicate: yield* outcome(insert({ id: 1, name: "again" })),
          all: yield* findAll(1),
          allNone: yield* findAll(10),
          one: yield* findOne(2),
          oneMissing: yield* outcome(findOne(10)),
          option: Option.getOrNull(yield* findOneOption(2)),
          optionMissing: Option.getOrNull(yield* findOneOption(10)),
          nonEmptyMissing: yield* outcome(findNonEmpty(10)),
          wrongShape: yield* outcome(wrongShape(1))
        }
      }),
    expected: {
      duplicate: uniqueViolation("parity_schema"),
      all: [
        { id: 1, name: "one" },
        { id: 2, name: "two" }
      ],
      allNone: [],
      one: { id: 2, name: "two" },
      oneMissing: { error: "NoSuchElementError" },
      option: { id: 2, name: "two" },
      optionMissing: null,
      nonEmptyMissing: { error: "NoSuchElementError" },
      wrongShape: { error: "SchemaError" }
    }
  },
  {
    name: "Model: SqlModel.makeRepository inserts, updates, finds and deletes",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const notes = table("notes")
        yield* sql`CREATE TABLE ${sql(notes)} (id serial PRIMARY KEY, title text NOT NULL, stars int NOT NULL)`
        const repository = yield* SqlModel.makeRepository(Note, {
          tableName: notes,
          spanPrefix: "Notes",
          idColumn: "id"
        })
        const first = yield* repository.insert({ title: "first", stars: 1 })
        const second = yield* repository.insert({ title: "second", stars: 2 })
        yield* repository.insertVoid({ title: "third", stars: 3 })
        const updated = yield* repository.update({ id: second.id, title: "second, edited", stars: 5 })
        yield* repository.updateVoid({ id: first.id, title: "first, edited", stars: 4 })
        const found = yield* repository.findById(first.id)
        yield* repository.delete(first.id)
        return {
          inserted: [first, second].map(noteFields),
          updated: noteFields(updated),
          found: noteFields(found),
          afterDelete: yield* outcome(repository.findById(first.id)),
          remaining: yield* sql`SELECT id, title, stars FROM ${sql(notes)} ORDER BY id`
        }
      }),
    expected: {
      inserted: [
        { model: true, id: 1, title: "first", stars: 1 },
        { model: true, id: 2, title: "second", stars: 2 }
      ],
      updated: { model: true, id: 2, title: "second, edited", stars: 5 },
      found: { model: true, id: 1, title: "first, edited", stars: 4 },
      afterDelete: { error: "NoSuchElementError" },
      remaining: [
        { id: 2, title: "second, edited", stars: 5 },
        { id: 3, title: "third", stars: 3 }
      ]
    }
  },
  {
    name: "migrator: PgMigrator applies a record of migrations once; the second run applies nothing",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const migrations = table("migrations")
        const migrated = table("migrated")
        const loader = Migrator.fromRecord({
          "1_create_table": Effect.asVoid(sql`CREATE TABLE ${sql(migrated)} (id int PRIMARY KEY)`),
          "2_add_label": Effect.asVoid(sql`ALTER TABLE ${sql(migrated)} ADD COLUMN label text`)
        })
        const migrate = PgMigrator.run({ loader, table: migrations }).pipe(Effect.provide(noSchemaDump))
        const first = yield* migrate
        const second = yield* migrate
        return {
          first,
          second,
          recorded: yield* sql`SELECT migration_id, name FROM ${sql(migrations)} ORDER BY migration_id`,
          columns:
            yield* sql`SELECT column_name FROM information_schema.columns WHERE table_name = ${migrated} ORDER BY ordinal_position`
        }
      }),
    expected: {
      first: [
        [1, "create_table"],
        [2, "add_label"]
      ],
      second: [],
      recorded: [
        { migration_id: 1, name: "create_table" },
        { migration_id: 2, name: "add_label" }
      ],
      columns: [{ column_name: "id" }, { column_name: "label" }]
    }
  },
  {
    name: "failures: a syntax error",
    run: () => Effect.flatMap(services, ({ sql }) => outcome(sql`SELEC 1`)),
    expected: syntaxError
  },
  {
    name: "failures: a unique violation",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const unique = table("unique")
        yield* sql`CREATE TABLE ${sql(unique)} (id int PRIMARY KEY)`
        yield* sql`INSERT INTO ${sql(unique)} (id) VALUES (1)`
        return yield* outcome(sql`INSERT INTO ${sql(unique)} (id) VALUES (1)`)
      }),
    expected: uniqueViolation("parity_unique")
  },
  {
    name: "failures: a missing table, however the statement runs",
    run: ({ table }) =>
      Effect.gen(function* () {
        const { sql } = yield* services
        const query = sql`SELECT * FROM ${sql(table("missing"))}`
        return {
          execute: yield* outcome(query),
          unprepared: yield* outcome(query.unprepared),
          values: yield* outcome(query.values),
          stream: yield* outcome(Stream.runCollect(query.stream)),
          unsafe: yield* outcome(sql.unsafe(`SELECT * FROM ${table("missing")}`)),
          inTransaction: yield* outcome(sql.withTransaction(query))
        }
      }),
    expected: {
      execute: missingTable,
      unprepared: missingTable,
      values: missingTable,
      stream: missingTable,
      unsafe: missingTable,
      inTransaction: missingTable
    }
  },
  {
    name: "failures: a division by zero",
    run: () => Effect.flatMap(services, ({ sql }) => outcome(sql`SELECT 1/0 AS x`)),
    expected: {
      error: "SqlError",
      reason: "UnknownError",
      message: queryFailed,
      sqlState: "22012",
      serverMessage: "division by zero"
    }
  },
  {
    name: "the client: its dialect and driver",
    run: () =>
      Effect.map(services, ({ sql }) => ({
        dialect: sql.onDialectOrElse({ pg: () => "pg", orElse: () => "other" }),
        driver: sql.driver
      })),
    expected: { dialect: "pg", driver: undefined },
    // DIFFERENCE (a gap in plain, not in Sturdy): @effect/sql-pg 4.0.5's PgClient.make does not pass
    // `driver` to effect 4.1's SqlClient.make, so plain's is undefined; Sturdy passes "pg", the value SqlClient
    // documents for @effect/sql-pg drivers.
    difference: { sturdy: { dialect: "pg", driver: "pg" } }
  },
  {
    name: "statement_timeout: outside and inside a transaction",
    run: () =>
      Effect.gen(function* () {
        const { sql } = yield* services
        return {
          outside: yield* sql`SHOW statement_timeout`,
          inside: yield* sql.withTransaction(sql`SHOW statement_timeout`)
        }
      }),
    expected: { outside: [{ statement_timeout: "0" }], inside: [{ statement_timeout: "0" }] },
    // DIFFERENCE (on purpose, ResilientPg's module doc and `statementTimeoutVia`): every transaction's BEGIN is
    // followed by SET LOCAL statement_timeout, the attempt timeout (10 s in the default development profile), which
    // bounds the statements of a transaction, and which every pooler accepts.
    difference: { sturdy: { outside: [{ statement_timeout: "0" }], inside: [{ statement_timeout: "10s" }] } }
  }
]

const runThrough = (server: PgServer.PgServerService, client: ClientName, operation: Operation) => {
  const suffix = `_${randomBytes(4).toString("hex")}`
  const names: Names = { table: (base) => `parity_${base}${suffix}` }
  return operation.run(names).pipe(
    Effect.scoped,
    Effect.provide(clientLayer(server, client)),
    Effect.map((result) => scrub(result, suffix))
  )
}

const expectedThrough = (client: ClientName, operation: Operation) =>
  client === "sturdy" && operation.difference !== undefined ? operation.difference.sturdy : operation.expected

/** Each run's results, for the comparison of the two at the end. */
const resultsThrough: Record<ClientName, Map<string, unknown>> = { plain: new Map(), sturdy: new Map() }

describe("parity with @effect/sql-pg", () => {
  layer(PgServer.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    describe("listen and notify", () => {
      it.effect("a channel name over 63 bytes fails locally, with the same reason and message", () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const results: Array<string> = []
          for (const [, client] of clients(server)) {
            results.push(
              yield* Effect.gen(function* () {
                const pg = yield* PgClient.PgClient
                return failureMessage(yield* Effect.exit(pg.notify("x".repeat(64), "payload")))
              }).pipe(Effect.provide(client))
            )
          }
          assert.deepStrictEqual(results, [
            "UnknownError: PostgreSQL channel names must not exceed 63 UTF-8 bytes",
            "UnknownError: PostgreSQL channel names must not exceed 63 UTF-8 bytes"
          ])
        })
      )

      it.effect(
        "notify inside a transaction that rolls back is still delivered (it goes on a connection of its own)",
        () =>
          Effect.gen(function* () {
            const server = yield* PgServer.PgServer
            const delivered: Array<string> = []
            for (const [name, client] of clients(server)) {
              yield* Effect.scoped(
                Effect.gen(function* () {
                  const pg = yield* PgClient.PgClient
                  const channel = `parity_${name}`
                  const queue = yield* pg.listen(channel)
                  yield* Effect.exit(
                    pg.withTransaction(Effect.andThen(pg.notify(channel, "sent"), Effect.fail("rollback")))
                  )
                  const notification = yield* Queue.take(queue).pipe(Effect.timeoutOption("5 seconds"))
                  delivered.push(
                    `${name}: ${Option.match(notification, { onNone: () => "none", onSome: (n) => n.payload })}`
                  )
                })
              ).pipe(Effect.provide(client))
            }
            assert.deepStrictEqual(delivered, ["plain: sent", "sturdy: sent"])
          })
      )
    })

    for (const client of ["plain", "sturdy"] as const) {
      describe(`through ${client === "plain" ? "PgClient.layer" : "ResilientPg.layer"}`, () => {
        for (const operation of operations) {
          it.effect(operation.name, () =>
            Effect.gen(function* () {
              const server = yield* PgServer.PgServer
              const result = yield* runThrough(server, client, operation)
              resultsThrough[client].set(operation.name, result)
              assert.deepStrictEqual(result, expectedThrough(client, operation))
            })
          )
        }
      })
    }

    describe("both layers", () => {
      it.effect("returned the same for every operation, but for the differences pinned above", () =>
        Effect.sync(() => {
          const names = operations.map((operation) => operation.name)
          assert.deepStrictEqual([...resultsThrough.plain.keys()], names, "every operation ran through PgClient.layer")
          assert.deepStrictEqual(
            [...resultsThrough.sturdy.keys()],
            names,
            "every operation ran through ResilientPg.layer"
          )
          for (const operation of operations) {
            const plain = resultsThrough.plain.get(operation.name)
            const sturdy = resultsThrough.sturdy.get(operation.name)
            if (operation.difference === undefined) assert.deepStrictEqual(sturdy, plain, operation.name)
            else assert.notDeepEqual(sturdy, plain, `${operation.name}: the pinned DIFFERENCE is gone`)
          }
        })
      )
    })
  })
})
