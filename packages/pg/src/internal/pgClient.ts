/**
 * The `PgClient` service assembled around Sturdy's acquirers.
 *
 * This mirrors, in `@effect/sql-pg@4.0.5`: `makeImpl` (`src/PgClient.ts`
 * lines 218-281), `commit` (lines 344-359) and `validateChannelName`
 * (`src/internal/sqlError.ts`), none of them exported there, with their
 * messages.
 * Sturdy differs in what it passes in, never in what it builds: its own
 * acquirers, borrower and commit (the policies and in-doubt COMMIT), and
 * `isTransaction`, so a transaction whose session was lost is not rolled back
 * on the dead session. `test/Parity.test.ts` runs the same operations through
 * both clients; when `@effect/sql-pg` is upgraded, compare this file with the
 * new `makeImpl` first.
 *
 * @internal
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { Effect } from "effect"
import type * as Reactivity from "effect/reactivity/Reactivity"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import type { Borrower, Connection } from "effect/sql/SqlConnection"
import { SqlError, UnknownError } from "effect/sql/SqlError"
import * as Statement from "effect/sql/Statement"

const PgJson = Statement.custom<Statement.Custom<"PgJson", unknown>>("PgJson")

const channelNames = new TextEncoder()

/** `validateChannelName` of `@effect/sql-pg`, with its message: PostgreSQL truncates longer names. */
const channelNameError = (channel: string, operation: string): SqlError | undefined => {
  if (channelNames.encode(channel).byteLength <= 63) return undefined
  const message = "PostgreSQL channel names must not exceed 63 UTF-8 bytes"
  return new SqlError({ reason: new UnknownError({ cause: new Error(message), message, operation }) })
}

/** PgClient's COMMIT: PostgreSQL answers `COMMIT` of an aborted transaction with `ROLLBACK`. */
export const commit = (conn: Connection): Effect.Effect<void, SqlError> =>
  Effect.flatMap(conn.executeRaw("COMMIT", []) as Effect.Effect<PgConnection.Result, SqlError>, (result) =>
    result.command === "ROLLBACK"
      ? Effect.fail(
          new SqlError({
            reason: new UnknownError({
              cause: new Error("COMMIT rolled back an aborted transaction"),
              message: "PgClient: COMMIT rolled back an aborted transaction",
              operation: "commit"
            })
          })
        )
      : Effect.void
  )

/** What Sturdy hands to the assembly. */
export interface Parts {
  readonly config: PgClient.PgClientConfig
  readonly acquirer: Effect.Effect<Connection, SqlError, Scope.Scope>
  readonly borrower: Borrower
  readonly transactionAcquirer: Effect.Effect<Connection, SqlError, Scope.Scope>
  readonly listenAcquirer: Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope>
  readonly commit: (connection: Connection) => Effect.Effect<void, SqlError>
  readonly isTransaction: (connection: Connection) => boolean
  /** The server the statements' spans name (`server.address`, `server.port`) and the database (`db.namespace`). */
  readonly server: { readonly address: string; readonly port: number; readonly namespace: string }
}

export const make = Effect.fnUntraced(function* (
  parts: Parts
): Effect.fn.Return<PgClient.PgClient, never, Scope.Scope | Reactivity.Reactivity> {
  const config = parts.config
  const client = yield* SqlClient.make({
    acquirer: parts.acquirer,
    borrower: parts.borrower,
    transactionAcquirer: parts.transactionAcquirer,
    driver: "pg",
    prepareTransactionControls: true,
    commit: parts.commit,
    isTransaction: parts.isTransaction,
    releaseSavepoint: (name) => `RELEASE SAVEPOINT ${name}`,
    compiler: PgClient.makeCompiler(config.transformQueryNames, config.transformJson),
    spanAttributes: [
      ...(config.spanAttributes ? Object.entries(config.spanAttributes) : []),
      ["db.system.name", "postgresql"],
      // Where `makeImpl` reads `config` (`localhost:5432` for a client configured by URL alone), the target's.
      ["db.namespace", parts.server.namespace],
      ["server.address", parts.server.address],
      ["server.port", parts.server.port]
    ],
    transformRows: config.transformResultNames
      ? Statement.defaultTransforms(config.transformResultNames, config.transformJson).array
      : undefined
  })
  return Object.assign(client, {
    [PgClient.TypeId]: PgClient.TypeId,
    config,
    json: (value: unknown) => Statement.fragment([PgJson(value)]),
    listen: (channel: string) => Effect.flatMap(parts.listenAcquirer, (connection) => connection.listen(channel)),
    // The channel checked locally, and the notification sent on a connection of its own, outside any transaction
    // the caller is in (so a rollback does not take it back).
    notify: (channel: string, payload: string) => {
      const invalid = channelNameError(channel, "notify")
      return invalid !== undefined
        ? Effect.fail(invalid)
        : Effect.asVoid(
            Effect.scoped(
              Effect.flatMap(parts.acquirer, (conn) => conn.executeRaw("SELECT pg_notify($1, $2)", [channel, payload]))
            )
          )
    }
  }) as PgClient.PgClient
})
