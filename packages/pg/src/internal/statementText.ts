/**
 * The text of a statement that never reached a connection. `@effect/sql`
 * compiles a statement before borrowing a connection and hands the borrower a
 * builder that calls the connection's `execute*` with the text. On a failure
 * path only (the breaker rejected the call, no connection could be opened),
 * Sturdy hands that builder a connection that runs nothing and notes the text
 * it is given, so the statement table sees those failures too. A builder that
 * calls nothing at once leaves the text unknown.
 *
 * @internal
 */
import { Effect, Stream } from "effect"
import type { Connection } from "effect/sql/SqlConnection"

/** What `@effect/sql` hands a borrower: the statement, to run on the connection it is lent. */
export type Builder = (connection: Connection) => Effect.Effect<unknown, unknown, unknown>

/** A connection that runs nothing, and keeps the text of the last statement it was asked to run. */
class Probe {
  captured: string | undefined = undefined
  readonly connection: Connection
  constructor() {
    const capture = (sql: string) => {
      this.captured = sql
      return Effect.void
    }
    this.connection = {
      execute: capture,
      executeRaw: capture,
      executeValues: capture,
      executeValuesUnprepared: capture,
      executeUnprepared: capture,
      executeStream: (sql: string) => {
        this.captured = sql
        return Stream.empty
      }
    } as unknown as Connection
  }
}

const probe = new Probe()

/** The SQL text a statement's builder would run, without running anything. */
export const sqlOf = (builder: Builder | undefined): string | undefined => {
  if (builder === undefined) return undefined
  probe.captured = undefined
  try {
    builder(probe.connection)
  } catch {
    return undefined
  }
  const sql = probe.captured
  probe.captured = undefined
  return sql
}
