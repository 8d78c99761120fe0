/**
 * What every session of one client shares, and what Sturdy reads of the driver's sessions.
 *
 * @internal
 */
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { Effect } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import * as PgFailure from "../PgFailure.ts"

/**
 * What Sturdy reads of the driver's internals (pinned @effect/sql-pg 4.0.5):
 * the session's socket and the hooks run when the session dies. Without them
 * (another driver version), the features that need them do nothing.
 */
interface Internals {
  readonly base?: { readonly session?: { readonly socket?: { destroy(): void } } }
  readonly retireHooks?: Set<() => void>
}

export const internalsOf = (connection: PgConnection.PgConnection): Internals | undefined =>
  (connection as unknown as Record<string, Internals | undefined>)["~@effect/sql-pg/PgConnection/internals"]

/**
 * Ends a session whose network went silent: the driver then fails its
 * statement as a closed connection. Without the driver's internals it does
 * nothing, and the statement_timeout and the cancel request remain.
 */
export const destroySocket = (connection: PgConnection.PgConnection): void => {
  internalsOf(connection)?.base?.session?.socket?.destroy()
}

/**
 * What every session of one client shares: how statements are prepared, how a
 * session is retired, what runs after `BEGIN`.
 */
export class Sessions {
  /**
   * Whether statements use named prepared statements (the driver's cache).
   * Turned off for good the first time a session shows that they do not
   * survive between statements: a pooler in transaction mode (PgBouncer before
   * 1.21, Supavisor, RDS Proxy) hands each transaction whichever server
   * connection is free, where a statement prepared on another one does not
   * exist (26000) or its name is taken (42P05). Unnamed statements work there.
   */
  prepare = true
  /**
   * Moves on when the server behind the connections changed (discovery chose
   * another host, or a connection answered 25006 where writes were wanted):
   * connections opened in an earlier epoch are retired the next time they are
   * lent, instead of each failing one call first. 0 until the first move, so
   * the common case checks nothing.
   */
  epoch = 0
  /** Retires a session: the pool replaces it instead of lending it again. */
  readonly retire: (connection: PgConnection.PgConnection) => Effect.Effect<void>
  /** Run right after `BEGIN` (the transaction's `SET LOCAL statement_timeout`). */
  readonly afterBegin: string | undefined
  /**
   * Whether a 25006 means the server is not what the target wants (writes
   * wanted), rather than the caller's write on a standby it asked for.
   */
  readonly evictOnReadOnly: boolean
  private readonly onUnprepared: () => void
  private readonly onServerChanged: () => void
  constructor(options: {
    readonly retire: (connection: PgConnection.PgConnection) => Effect.Effect<void>
    readonly afterBegin?: string | undefined
    readonly evictOnReadOnly?: boolean | undefined
    /** Runs once, when prepared statements are turned off. */
    readonly onUnprepared?: (() => void) | undefined
    /** Runs when a connection shows its server changed (25006 where writes are wanted, a shutdown): rediscover. */
    readonly onServerChanged?: (() => void) | undefined
  }) {
    this.retire = options.retire
    this.afterBegin = options.afterBegin
    this.evictOnReadOnly = options.evictOnReadOnly ?? true
    this.onUnprepared = options.onUnprepared ?? (() => {})
    this.onServerChanged = options.onServerChanged ?? (() => {})
  }
  /**
   * The epoch each socket was opened in. Kept beside the sockets, not on them: a property added to a `Net.Socket`
   * gives it a hidden class of its own, and every read and write of Node's stream code then sees two kinds of
   * socket (this client's and any other's) instead of one.
   */
  private readonly epochs = new WeakMap<object, number>()
  /** Stamps a new socket with the current epoch. */
  mark(socket: object): void {
    this.epochs.set(socket, this.epoch)
  }
  /** Whether a connection was opened before the last move. */
  stale(connection: PgConnection.PgConnection): boolean {
    const socket = internalsOf(connection)?.base?.session?.socket
    const stamp = socket === undefined ? undefined : this.epochs.get(socket)
    return stamp !== undefined && stamp < this.epoch
  }
  /** The server behind the connections changed: connections from before are retired as they come back. */
  moved(): void {
    this.epoch++
  }
  /**
   * Notes a failure on `connection`: prepared statements that do not survive
   * turn them off; a read-only answer where writes are wanted, or a shutdown,
   * means the server changed: the epoch moves on (once per epoch), the
   * connection is retired and discovery runs.
   */
  failed(error: SqlError, connection: PgConnection.PgConnection): Effect.Effect<void> {
    if (this.prepare && PgFailure.preparedStatementsUnavailable(error)) {
      this.prepare = false
      this.onUnprepared()
    }
    const code = PgFailure.sqlStateOf(error)
    if (code === "25006" && this.evictOnReadOnly) {
      if (!this.stale(connection)) this.moved()
      this.onServerChanged()
      return this.retire(connection)
    }
    if (code === "57P01" || code === "57P02") this.onServerChanged()
    return Effect.void
  }
}

/** A lent connection from an earlier epoch: retired, and the lending tried again. */
export class StaleConnection {
  readonly _tag = "StaleConnection"
}
export const staleConnection = new StaleConnection()
export const isStaleConnection = (u: unknown): u is StaleConnection => u === staleConnection
