import { assert, describe, it } from "@effect/vitest"
import { Eventually, PgServer } from "@sturdy/testing"
import { ConfigProvider, Effect, Exit, Layer, Redacted } from "effect"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"

describe("PgServer", () => {
  it.live(
    "an embedded server: real queries, stop and start on the same port, everything removed afterwards",
    () =>
      Effect.gen(function* () {
        const observed = yield* Effect.scoped(
          Effect.gen(function* () {
            const server = yield* PgServer.makeEmbedded
            assert.strictEqual(server.kind, "embedded")
            const [row] = yield* server.admin<{ version: string }>`SELECT current_setting('server_version') AS version`
            assert.match(row!.version, /^18\./)
            const dataDir = (yield* server.admin<{ dir: string }>`SELECT current_setting('data_directory') AS dir`)[0]!
              .dir
            assert.include(Redacted.value(server.url), `:${server.port}/`)
            assert.notInclude(String(server.url), Redacted.value(server.password))

            yield* server.stop
            const down = yield* Effect.exit(server.admin`SELECT 1`)
            assert.isTrue(Exit.isFailure(down))
            yield* server.start
            const [again] = yield* server.admin<{ one: number }>`SELECT 1 AS one`
            assert.strictEqual(again!.one, 1)
            assert.isTrue((yield* server.serverLog).some((line) => line.includes("ready to accept connections")))
            return dataDir
          })
        )
        // The scope closed: the server is gone and so is its directory.
        const exists = yield* Effect.promise(() =>
          Fs.stat(Path.dirname(observed)).then(
            () => true,
            () => false
          )
        )
        assert.isFalse(exists)
      }),
    60_000
  )

  it.live(
    "terminateBackends and connectionCount see exactly one application's sessions",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const server = yield* PgServer.makeEmbedded
          const app = yield* PgClient.make({ url: server.url, applicationName: "victim" }).pipe(
            Effect.provide(Reactivity.layer)
          )
          yield* app`SELECT 1`
          assert.strictEqual(yield* server.connectionCount("victim"), 1)
          assert.strictEqual(yield* server.terminateBackends("victim"), 1)
          // pg_terminate_backend signals the backend, which stays listed until it has exited (a few ms, longer on a
          // saturated machine: a second call there found it again in one CI run).
          yield* Eventually.until(server.connectionCount("victim"), {
            what: "the terminated backend gone",
            accept: (count) => count === 0,
            timeout: "10 seconds"
          })
          assert.strictEqual(yield* server.terminateBackends("victim"), 0)
        })
      ),
    60_000
  )

  it.live(
    "with DATABASE_URL set, layer uses that server and refuses to stop what it does not own",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const embedded = yield* PgServer.makeEmbedded
          const context = yield* Layer.build(
            PgServer.layer.pipe(
              Layer.provide(
                ConfigProvider.layer(ConfigProvider.fromEnv({ env: { DATABASE_URL: Redacted.value(embedded.url) } }))
              )
            )
          )
          const external = context.mapUnsafe.get(PgServer.PgServer.key) as PgServer.PgServerService
          assert.strictEqual(external.kind, "external")
          assert.strictEqual(external.port, embedded.port)
          const [row] = yield* external.admin<{ one: number }>`SELECT 1 AS one`
          assert.strictEqual(row!.one, 1)
          const stop = yield* Effect.exit(external.stop)
          assert.isTrue(Exit.isFailure(stop))
          assert.include(String(Exit.isFailure(stop) ? stop.cause : ""), "cannot be controlled")
        })
      ),
    60_000
  )
})
