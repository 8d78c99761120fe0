import { assert, describe, layer } from "@effect/vitest"
import { ResilientPg } from "@sturdy/pg"
import { LogCapture, PgServer } from "@sturdy/testing"
import { Cause, ConfigProvider, Effect, Exit, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { inspect } from "node:util"

/** Every way an error reaches a human: its message, Cause.pretty, util.inspect, JSON. */
const renderings = (exit: Exit.Exit<unknown, unknown>): ReadonlyArray<string> => {
  if (Exit.isSuccess(exit)) return ["success"]
  const squashed = Cause.squash(exit.cause)
  return [
    Cause.pretty(exit.cause),
    inspect(exit.cause, { depth: 10 }),
    inspect(squashed, { depth: 10 }),
    String(squashed),
    JSON.stringify(exit)
  ]
}

describe("no password in any log line or error", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("with the server down, through every policy, then with a wrong password and a malformed URL", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const password = Redacted.value(server.password)
        const url = Redacted.value(server.url)
        assert.include(url, password)
        const logs = yield* LogCapture.make
        const rendered: Array<string> = []
        const run = (options: ResilientPg.Options | "from-env", env: Record<string, string> = {}) =>
          Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            rendered.push(...renderings(yield* Effect.exit(sql`SELECT 1`)))
            rendered.push(...renderings(yield* Effect.exit(sql`INSERT INTO nowhere VALUES (1)`)))
            rendered.push(...renderings(yield* Effect.exit(sql.withTransaction(sql`SELECT 1`))))
          }).pipe(
            Effect.provide(options === "from-env" ? ResilientPg.layerConfig() : ResilientPg.layer(options)),
            Effect.provide(Layer.merge(logs.layer, ConfigProvider.layer(ConfigProvider.fromEnv({ env })))),
            Effect.exit,
            Effect.map((exit) => rendered.push(...renderings(exit)))
          )
        const fast = { backoffBase: "10 millis", backoffJitter: "5 millis", attemptTimeout: "2 seconds" } as const

        yield* server.stop
        yield* run({ url: server.url, ...fast })
        yield* run("from-env", {
          DATABASE_URL: url,
          STURDY_BACKOFF_BASE: "10 millis",
          STURDY_BACKOFF_JITTER: "5 millis"
        })
        yield* server.start
        yield* run({ url: Redacted.make(url.replace(password, `${password}-wrong`)), ...fast })
        yield* run({ url: Redacted.make(url.replace(/:(\d+)\//, ":notaport/")), ...fast })
        yield* run({ url: Redacted.make(url.replace("postgres://", "postgres ://")), ...fast })
        yield* run("from-env", { DATABASE_URL: url.replace(/:(\d+)\//, ":notaport/") })

        const logText = yield* logs.text
        assert.isAbove((yield* logs.entries).length, 5)
        assert.include(logText, "retry")
        assert.isAbove(rendered.length, 20)
        for (const text of [logText, ...rendered]) {
          assert.notInclude(text, password)
          assert.notInclude(text, url)
        }
        assert.notInclude(ResilientPg.describeUrl(server.url), password)
      })
    )
  })
})
