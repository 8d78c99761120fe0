/**
 * The health probe's own session, opened exactly as the pool opens its own.
 *
 * @internal
 */
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { Effect, Exit, Semaphore } from "effect"
import * as Scope from "effect/Scope"
import type { SqlError } from "effect/sql/SqlError"
import { internalsOf } from "./sessions.ts"

/**
 * The health probe's session: kept between probes, replaced when it dies or
 * when a probe asks for a fresh one. `onLost` runs when a kept session dies.
 */
export const make = Effect.fnUntraced(function* (
  connect: Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope>,
  verify: (connection: PgConnection.PgConnection) => Effect.Effect<unknown, SqlError>,
  onLost: () => void
) {
  let current: { readonly connection: PgConnection.PgConnection; readonly scope: Scope.Closeable } | undefined
  const lock = yield* Semaphore.make(1)
  const drop = Effect.suspend(() => {
    const session = current
    current = undefined
    return session === undefined ? Effect.void : Scope.close(session.scope, Exit.void)
  })
  yield* Effect.addFinalizer(() => drop)
  const open = Effect.gen(function* () {
    const scope = yield* Scope.make()
    const connection = yield* connect.pipe(
      Scope.provide(scope),
      Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : Scope.close(scope, exit)))
    )
    const session = { connection, scope }
    internalsOf(connection)?.retireHooks?.add(() => {
      if (current === session) {
        current = undefined
        onLost()
      }
    })
    current = session
    return connection
  })
  const probe = (mode: "reuse" | "fresh"): Effect.Effect<unknown, SqlError> =>
    lock.withPermit(
      Effect.gen(function* () {
        if (mode === "fresh") yield* drop
        return yield* verify(current?.connection ?? (yield* open))
      }).pipe(Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : drop)))
    )
  return { probe }
})
