/**
 * The connection Sturdy lends to `@effect/sql`: a driver session whose
 * statements are watched, for the attempt deadline and for what their
 * failures say about the session.
 *
 * @internal
 */
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { Cause, Effect, Stream } from "effect"
import type { Connection } from "effect/sql/SqlConnection"
import type { SqlError } from "effect/sql/SqlError"
import * as PgFailure from "../PgFailure.ts"
import type { Call } from "./call.ts"
import type { Sessions } from "./sessions.ts"

/**
 * `@effect/sql`'s `Connection` over a native session, noting the SQL it runs in
 * a `Call` (statements) or what its failures mean for the transaction it holds.
 */
export class WatchedConnection implements Connection {
  readonly connection: PgConnection.PgConnection
  readonly call: Call | undefined
  readonly sessions: Sessions
  /**
   * Set once a statement on this connection failed because the session itself
   * was lost. Only tracked for connections that outlive one statement
   * (transactions): the server has already rolled such a transaction back,
   * and a ROLLBACK on the dead session would fail, which `@effect/sql` turns
   * into a defect that hides the caller's typed error.
   */
  broken = false
  /**
   * The session is shared with other statements (multiplexed): a call's
   * failure is noted by the stack after the statement (`Sessions.failed`), since
   * there is no moment at which the pool takes a shared session back, and the
   * statement costs no failure handler of its own.
   */
  readonly shared: boolean
  /** Statements of this transaction that failed so far. */
  private failures = 0
  constructor(connection: PgConnection.PgConnection, call: Call | undefined, sessions: Sessions, shared = false) {
    this.connection = connection
    this.call = call
    this.sessions = sessions
    this.shared = shared
  }
  /**
   * The statement ended, before the pool takes the session back: from now on
   * the watchdog must not cancel through this session, since its next
   * statement belongs to someone else.
   */
  private unwatched(call: Call): void {
    call.list?.remove(call)
    call.connection = undefined
  }
  /** The statement succeeded: unwatched, and the call settled if the stack left that to the connection. */
  private finished(call: Call): void {
    this.unwatched(call)
    call.settleSucceeded()
  }
  /** A failure on a session that outlives its statement: a lost session leaves nothing to roll back. */
  private afterFailure<A>(sql: string, error: SqlError): Effect.Effect<A, SqlError> {
    if (!PgFailure.sessionLost(error)) return Effect.fail(error)
    this.broken = true
    // The session is gone, and the transaction with it: there is nothing left to roll back.
    return rollbackStatement.test(sql) ? Effect.succeed([] as unknown as A) : Effect.fail(error)
  }
  /**
   * A statement of a call: `effect` already ends the call's watch when it
   * succeeds (in the map that every statement has anyway, so success costs no
   * continuation of its own); a failure ends it here.
   */
  private watchCall<A>(call: Call, sql: string, effect: Effect.Effect<A, SqlError>): Effect.Effect<A, SqlError> {
    call.sql = sql
    call.routed = true
    if (this.shared) return effect
    return Effect.catchCause(effect, (cause) => {
      // As `Effect.catch`: typed failures only (an interruption or a defect passes through).
      const found = Cause.findErrorOption(cause)
      if (found._tag === "None" || Cause.hasDies(cause)) return Effect.failCause(cause)
      const error = found.value
      // Once a cancel request was sent, a failure (57014, possibly from the server's own statement_timeout, which
      // the driver takes for the cancel's confirmation) cannot tell whether the cancel has landed yet: the session
      // is retired so a late cancel can never hit an innocent statement. (After a success the driver retires it.)
      this.unwatched(call)
      const noted = this.sessions.failed(error, this.connection)
      const retired = call.cancelSent ? Effect.andThen(noted, this.sessions.retire(this.connection)) : noted
      return Effect.andThen(retired, Effect.fail(error))
    })
  }
  /** `effect`, ending the call's watch when it succeeds. */
  private finishing<A>(call: Call, effect: Effect.Effect<A, SqlError>): Effect.Effect<A, SqlError> {
    return Effect.map(effect, (value) => {
      this.finished(call)
      return value
    })
  }
  private watch<A>(sql: string, effect: Effect.Effect<A, SqlError>, prepared: boolean): Effect.Effect<A, SqlError> {
    const call = this.call
    if (call !== undefined) {
      return this.watchCall(call, sql, this.finishing(call, effect))
    }
    const watched = Effect.catch(effect, (error) => {
      // The driver re-runs a statement whose prepared plan the server does not have (26000) unnamed; inside a
      // transaction the 26000 has already aborted it, so the re-run answers 25P02. As the transaction's first
      // failure, a 25P02 can only be that: prepared statements do not survive here, and nothing was applied.
      if (this.failures++ === 0 && prepared && PgFailure.sqlStateOf(error) === "25P02") {
        const unavailable = PgFailure.preparedStatementUnavailable(error)
        return Effect.andThen(this.sessions.failed(unavailable, this.connection), Effect.fail(unavailable))
      }
      return Effect.andThen(this.sessions.failed(error, this.connection), this.afterFailure<A>(sql, error))
    })
    const afterBegin = this.sessions.afterBegin
    return afterBegin !== undefined && beginStatement.test(sql)
      ? Effect.tap(watched, () =>
          // `@effect/sql` rolls back only a transaction whose BEGIN succeeded: if what follows BEGIN fails, end the
          // transaction here, or the session goes back to the pool inside an aborted transaction (and behind a
          // transaction-mode pooler keeps its server connection so).
          Effect.catch(this.executeRaw(afterBegin, []), (error) =>
            Effect.andThen(Effect.ignore(this.connection.query("ROLLBACK", [], false)), Effect.fail(error))
          )
        )
      : watched
  }
  private run(sql: string, params: ReadonlyArray<unknown>, prepare = this.sessions.prepare) {
    const call = this.call
    if (call !== undefined) {
      // The statement path (one per call, hot): the map that takes the rows also ends the watch.
      return this.watchCall(
        call,
        sql,
        Effect.map(this.connection.query(sql, params, prepare), (result) => {
          this.finished(call)
          return result.rows
        })
      )
    }
    return this.watch(
      sql,
      Effect.map(this.connection.query(sql, params, prepare), (result) => result.rows),
      prepare
    )
  }
  execute(
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: (<A extends object>(row: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  ) {
    return transformRows ? Effect.map(this.run(sql, params), transformRows) : this.run(sql, params)
  }
  executeRaw(sql: string, params: ReadonlyArray<unknown>) {
    const prepare = this.sessions.prepare
    return this.watch(sql, this.connection.query(sql, params, prepare), prepare)
  }
  executeValues(sql: string, params: ReadonlyArray<unknown>) {
    const prepare = this.sessions.prepare
    return this.watch(sql, this.connection.queryValues(sql, params, prepare), prepare)
  }
  executeValuesUnprepared(sql: string, params: ReadonlyArray<unknown>) {
    return this.watch(sql, this.connection.queryValues(sql, params, false), false)
  }
  executeUnprepared(
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: (<A extends object>(row: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  ) {
    const rows = this.run(sql, params, false)
    return transformRows ? Effect.map(rows, transformRows) : rows
  }
  executeStream(
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: (<A extends object>(row: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  ) {
    // A stream's failure is one of the transaction's too (see `watch`: the first failure decides what a 25P02 means).
    const stream = Stream.tapError(this.connection.stream(sql, params), () =>
      Effect.sync(() => {
        this.failures++
      })
    )
    return transformRows ? Stream.mapArray(stream, (rows) => transformRows(rows) as typeof rows) : stream
  }
}

const rollbackStatement = /^\s*ROLLBACK\b/i
const beginStatement = /^\s*(BEGIN|START\s+TRANSACTION)\b/i
