/**
 * A small notes API over ResilientPg, with Sturdy's admin routes and alerts,
 * served by NodeHttpServer. `main.ts` runs it; the tests build it on port 0.
 *
 * | route | |
 * |---|---|
 * | `POST /notes` `{"title": "...", "body": "..."}` | 201 and the note |
 * | `GET /notes?limit=20` | the latest notes |
 * | `GET /notes/:id` | the note, or 404 |
 *
 * A database failure becomes 503 with `Retry-After` when the failure is
 * transient (the breaker is open, the server is restarting), never a hang
 * and never a connection string in the body.
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Admin, Alerts } from "@sturdy/admin"
import { PgFailure, ResilientPg } from "@sturdy/pg"
import { Context, Deferred, Duration, Effect, Layer, type Redacted, Schedule, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { createServer } from "node:http"

/**
 * @since 0.1.0
 */
export interface Options {
  readonly databaseUrl: Redacted.Redacted<string>
  /** 0 picks a free port. */
  readonly port: number
  readonly host?: string | undefined
  /** Without it the admin routes are off. */
  readonly adminToken: Redacted.Redacted<string> | undefined
  /** ResilientPg options over the example's defaults (the environment's `STURDY_*` variables apply first). */
  readonly database?: Partial<ResilientPg.Options> | undefined
  /** Alerts options over the environment's `STURDY_ALERT_*` (see `Alerts.layerConfig`). */
  readonly alerts?: Alerts.Options | undefined
  /** How long in-flight requests may take to finish on shutdown. Default 10 seconds. */
  readonly gracefulShutdownTimeout?: Duration.Input | undefined
}

const NoteInput = Schema.Struct({
  title: Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(200)),
  body: Schema.String.check(Schema.isMaxLength(10_000))
})

const NoteId = Schema.Struct({ id: Schema.String.check(Schema.isUUID()) })

interface Note {
  readonly id: string
  readonly title: string
  readonly body: string
  readonly created_at: Date
}

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers })

/**
 * Turns the database's typed failures into HTTP answers: transient ones are
 * 503 with `Retry-After`, everything else is a 500 whose details go to the log.
 */
const respondTo = <E, R>(
  handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  ResilientPg.unwrapFailures(handler).pipe(
    Effect.catch((error: unknown) => {
      if (PgFailure.isPolicyFailure(error)) {
        if (error._tag === "CircuitOpen") {
          const seconds = Math.max(1, Math.ceil(Duration.toSeconds(error.retryAfter)))
          return Effect.succeed(
            json({ error: "database unavailable", retryAfterSeconds: seconds }, 503, { "retry-after": `${seconds}` })
          )
        }
        if (error._tag === "CircuitHalfOpen" || error._tag === "TransientError") {
          return Effect.succeed(
            json(
              {
                error: "database unavailable",
                reason: error._tag === "TransientError" ? error.reason._tag : error._tag
              },
              503,
              {
                "retry-after": "1"
              }
            )
          )
        }
      }
      return Effect.as(
        Effect.logError("Request failed", error).pipe(Effect.annotateLogs({ "app.event": "request-failed" })),
        json({ error: "internal error" }, 500)
      )
    })
  )

/** Whether the schema is in place; the notes routes answer 503 until it is. */
class SchemaReady extends Context.Service<SchemaReady, { readonly ready: Effect.Effect<boolean> }>()(
  "@sturdy/example-server/SchemaReady"
) {}

const NotesRoutes = HttpRouter.use(
  Effect.fnUntraced(function* (router) {
    const sql = yield* SqlClient.SqlClient
    const schema = yield* SchemaReady
    const respond = <E, R>(
      handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
    ): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
      Effect.flatMap(schema.ready, (ready) =>
        ready
          ? respondTo(handler)
          : Effect.succeed(json({ error: "starting: the database is not reachable yet" }, 503, { "retry-after": "1" }))
      )

    yield* router.add(
      "POST",
      "/notes",
      respond(
        Effect.gen(function* () {
          const input = yield* HttpServerRequest.schemaBodyJson(NoteInput).pipe(Effect.option)
          if (input._tag === "None") {
            return json(
              { error: "invalid body: expected {title: string (1-200 characters), body: string (up to 10000)}" },
              400
            )
          }
          // The id is chosen before the first attempt, so a retry after a lost answer finds the row
          // instead of writing a second one: that is what makes the INSERT safe to mark idempotent.
          const id = randomUUID()
          const { title, body } = input.value
          const inserted = yield* ResilientPg.idempotent(sql<Note>`
            INSERT INTO notes (id, title, body) VALUES (${id}, ${title}, ${body})
            ON CONFLICT (id) DO NOTHING
            RETURNING id, title, body, created_at`)
          const note =
            inserted[0] ?? (yield* sql<Note>`SELECT id, title, body, created_at FROM notes WHERE id = ${id}`)[0]
          return json(note, 201, { location: `/notes/${id}` })
        })
      )
    )

    yield* router.add(
      "GET",
      "/notes",
      respond(
        Effect.gen(function* () {
          const request = yield* HttpServerRequest.HttpServerRequest
          const limitParam = new URL(request.url, "http://localhost").searchParams.get("limit")
          const limit = limitParam === null ? 20 : Number(limitParam)
          if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
            return json({ error: "limit must be an integer from 1 to 100" }, 400)
          }
          const notes = yield* sql<Note>`
            SELECT id, title, body, created_at FROM notes ORDER BY created_at DESC, id LIMIT ${limit}`
          return json(notes)
        })
      )
    )

    yield* router.add(
      "GET",
      "/notes/:id",
      respond(
        Effect.gen(function* () {
          const params = yield* HttpRouter.schemaPathParams(NoteId).pipe(Effect.option)
          if (params._tag === "None") return json({ error: "id must be a UUID" }, 400)
          const rows = yield* sql<Note>`SELECT id, title, body, created_at FROM notes WHERE id = ${params.value.id}`
          return rows[0] === undefined ? json({ error: "not found" }, 404) : json(rows[0])
        })
      )
    )
  })
)

/**
 * The schema, created in the background: a database that is down at start-up
 * leaves the service up and not ready (the notes routes and readiness answer
 * 503) instead of crash-looping. Each try goes through the resilient client,
 * and a failed one is tried again, 1 s doubling to 30 s apart, until it lands.
 */
const Migrations = Layer.effect(
  SchemaReady,
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const done = yield* Deferred.make<void>()
    const migrate = ResilientPg.unwrapFailures(
      ResilientPg.idempotent(sql`
        CREATE TABLE IF NOT EXISTS notes (
          id uuid PRIMARY KEY,
          title text NOT NULL,
          body text NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now()
        )`)
    ).pipe(
      Effect.tapError((error) =>
        Effect.logWarning("The schema could not be created yet; trying again", error).pipe(
          Effect.annotateLogs({ "app.event": "migration-retry" })
        )
      ),
      Effect.retry(Schedule.min([Schedule.exponential("1 second"), Schedule.spaced("30 seconds")])),
      Effect.andThen(Deferred.succeed(done, undefined)),
      Effect.andThen(Effect.logInfo("Schema ready").pipe(Effect.annotateLogs({ "app.event": "migrated" })))
    )
    yield* Effect.forkScoped(migrate, { startImmediately: true })
    return { ready: Deferred.isDone(done) }
  })
)

/**
 * The whole service: database client, schema, notes and admin routes on a
 * Node HTTP server, and alerts.
 *
 * @since 0.1.0
 */
export const layer = (options: Options) => {
  const database = ResilientPg.layerConfig({
    url: options.databaseUrl,
    applicationName: "sturdy-example-server",
    ...options.database
  })
  const admin = Layer.unwrap(
    Effect.map(SchemaReady, (schema) => Admin.layer({ token: options.adminToken, readiness: schema.ready }))
  )
  const routes = Layer.mergeAll(NotesRoutes, admin)
  const server = HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true }).pipe(
    Layer.provideMerge(
      NodeHttpServer.layer(() => createServer(), {
        port: options.port,
        host: options.host ?? "127.0.0.1",
        gracefulShutdownTimeout: options.gracefulShutdownTimeout ?? "10 seconds"
      })
    )
  )
  return Layer.mergeAll(server, Alerts.layerConfig(options.alerts)).pipe(
    Layer.provide(Migrations),
    Layer.provideMerge(database)
  )
}
