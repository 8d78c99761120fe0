import { assert, describe, layer } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { ResilientPg } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { Cause, Effect, Exit, Layer, Logger, Option, Queue } from "effect"
import { appName } from "./helpers.ts"

/** The same operations through plain `PgClient.layer` and `ResilientPg.layer`. */
const clients = (server: PgServer.PgServerService) =>
  [
    ["plain", PgClient.layer({ url: server.url, applicationName: appName() })],
    ["sturdy", ResilientPg.layer({ url: server.url, applicationName: appName() }).pipe(Layer.provide(Logger.layer([])))]
  ] as const

const failureMessage = (exit: Exit.Exit<unknown, unknown>) => {
  if (Exit.isSuccess(exit)) return "success"
  const error = Cause.findErrorOption(exit.cause)
  const reason = Option.isSome(error)
    ? (error.value as { readonly reason?: { readonly _tag: string; readonly message: string } }).reason
    : undefined
  return `${reason?._tag}: ${reason?.message}`
}

describe("parity with @effect/sql-pg: listen and notify", () => {
  layer(PgServer.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
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
})
