// Which host the pool's new connections go to, for a target of several hosts or one that wants a kind of server
// (target_session_attrs): libpq's walk, done once per discovery instead of once per connection, so the pool's
// connections (opened by its socket factory, which cannot wait) all go to the host the last discovery chose.
//
// Discovery runs as the health monitor's probe: at start-up, every interval, every 250 ms while unhealthy or while
// the breaker is open, and at once when a connection shows the server changed (25006 on a target that wants
// writes, a shutdown). When it settles on another host, the sessions' epoch moves on, and connections opened
// before are retired the next time they are lent (see Sessions in sessions.ts).
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { Effect, Exit, Scope } from "effect"
import { ConnectionError, SqlError } from "effect/sql/SqlError"
import * as Target from "../Target.ts"

export interface Router {
  readonly target: Target.Target
  /** Whether there is anything to choose: several hosts, or a target that wants a kind of server. */
  readonly routed: boolean
  /**
   * Where new connections go now; `undefined` while no host satisfies the
   * target (the last walk found none), so that connections fail with
   * `NoMatchingHost` instead of reaching a server of the wrong kind.
   */
  readonly current: () => Target.Host | undefined
  /** Walks the hosts; returns a session on the first one the target accepts (in the caller's scope). */
  readonly discover: Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope>
  /** Fails when the session's server no longer satisfies the target (a role change). */
  readonly verify: (connection: PgConnection.PgConnection) => Effect.Effect<unknown, SqlError>
}

/** The error code of a walk that reached servers but none of the kind the target wants. */
export const noMatchingHostCode = "STURDY_NO_MATCHING_HOST"

/** What the pool's socket factory throws while no host satisfies the target. */
export const noMatchingHost = (target: Target.Target): Error =>
  Object.assign(
    new Error(
      `no host of ${target.hosts.length} is of the kind target_session_attrs=${target.targetSessionAttrs} wants yet`
    ),
    { code: noMatchingHostCode }
  )

const roleQuery =
  "SELECT pg_is_in_recovery() AS in_recovery, current_setting('default_transaction_read_only') = 'on' AS read_only"

const roleOf = (connection: PgConnection.PgConnection) =>
  Effect.map(
    // Unnamed: behind a pooler in transaction mode the next query may reach another server connection.
    connection.query(roleQuery, [], false),
    (result) => {
      const row = result.rows[0] as { readonly in_recovery?: boolean; readonly read_only?: boolean } | undefined
      return { inRecovery: row?.in_recovery === true, readOnly: row?.read_only === true }
    }
  )

const mismatch = (target: Target.Target, detail: string) =>
  new SqlError({
    reason: new ConnectionError({
      cause: Object.assign(new Error(`${detail} (target_session_attrs=${target.targetSessionAttrs})`), {
        code: noMatchingHostCode
      }),
      message: "Sturdy: no host satisfies target_session_attrs",
      operation: "connect"
    })
  })

export const make = (options: {
  readonly target: Target.Target
  /** Opens a session on one host, exactly as the pool would. */
  readonly connect: (host: Target.Host) => Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope>
  /** Called when discovery settles on another host than the last one. */
  readonly moved: (from: Target.Host, to: Target.Host) => void
}): Router => {
  const { target } = options
  const routed = target.hosts.length > 1 || target.targetSessionAttrs !== "any"
  // Until the first walk, the first host: the health monitor walks before the pool lends its first connection.
  let current: Target.Host | undefined = target.hosts[0]!
  let last: Target.Host = target.hosts[0]!

  const settle = (host: Target.Host) => {
    current = host
    if (host.host === last.host && host.port === last.port) return
    const from = last
    last = host
    options.moved(from, host)
  }

  /** One host: its session if the target accepts its server (with `wanted` narrowing it), else the reason. */
  const tryHost = (host: Target.Host, wanted: (role: { inRecovery: boolean; readOnly: boolean }) => boolean) =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const opened = yield* Effect.exit(Scope.provide(options.connect(host), scope))
      if (Exit.isFailure(opened)) {
        yield* Scope.close(scope, Exit.void)
        return { _tag: "Unreachable", exit: opened } as const
      }
      const connection = opened.value
      if (target.targetSessionAttrs === "any") return { _tag: "Accepted", connection, scope } as const
      const role = yield* Effect.exit(roleOf(connection))
      if (Exit.isSuccess(role) && wanted(role.value)) return { _tag: "Accepted", connection, scope } as const
      yield* Scope.close(scope, Exit.void)
      return Exit.isSuccess(role)
        ? ({ _tag: "WrongRole", role: role.value } as const)
        : ({ _tag: "Unreachable", exit: role } as const)
    })

  const discover: Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope> = Effect.gen(function* () {
    const order = Target.walkOrder(target)
    // prefer-standby: a standby if any answers, else whatever answers (libpq's second pass).
    const passes: ReadonlyArray<(role: { inRecovery: boolean; readOnly: boolean }) => boolean> =
      target.targetSessionAttrs === "prefer-standby"
        ? [(role) => role.inRecovery, () => true]
        : [(role) => Target.accepts(target.targetSessionAttrs, role)]
    let lastFailure: Exit.Exit<unknown, SqlError> | undefined
    let wrongRoles = 0
    for (const wanted of passes) {
      for (const host of order) {
        const outcome = yield* tryHost(host, wanted)
        if (outcome._tag === "Accepted") {
          settle(host)
          const parent = yield* Scope.Scope
          yield* Scope.addFinalizer(parent, Scope.close(outcome.scope, Exit.void))
          return outcome.connection
        }
        if (outcome._tag === "WrongRole") wrongRoles++
        else lastFailure = outcome.exit
      }
    }
    // No host is of the kind wanted now: new connections fail until a walk finds one.
    if (routed) current = undefined
    if (wrongRoles > 0 || lastFailure === undefined) {
      return yield* Effect.fail(
        mismatch(
          target,
          `${wrongRoles} of the ${target.hosts.length} hosts answered, none of the kind wanted${
            lastFailure === undefined ? "" : ", the others did not answer"
          }`
        )
      )
    }
    return yield* lastFailure as Exit.Exit<never, SqlError>
  })

  const verify = (connection: PgConnection.PgConnection): Effect.Effect<unknown, SqlError> =>
    target.targetSessionAttrs === "any"
      ? connection.query("SELECT 1", [], false)
      : Effect.flatMap(roleOf(connection), (role) =>
          (target.targetSessionAttrs === "prefer-standby" ? true : Target.accepts(target.targetSessionAttrs, role))
            ? Effect.void
            : Effect.fail(mismatch(target, `${last.host}:${last.port} is no longer of the kind wanted`))
        )

  return { target, routed, current: () => current, discover, verify }
}
