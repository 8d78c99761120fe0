import { NodeHttpServer } from "@effect/platform-node"
import { assert, describe, layer } from "@effect/vitest"
import { Admin } from "@sturdy/admin"
import { ResilientPg } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { Context, Effect, Layer, Redacted, Ref } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { createServer } from "node:http"

const TOKEN = "admin-readiness-test-token-0123"

const get = (base: string, path: string, bearer?: string) =>
  Effect.promise(async () => {
    const response = await fetch(
      `${base}${path}`,
      bearer === undefined ? {} : { headers: { authorization: `Bearer ${bearer}` } }
    )
    return { status: response.status, body: (await response.json()) as Record<string, unknown> }
  })

describe("Admin readiness", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("the application's own condition joins the database's: ready only while both hold", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const applicationReady = yield* Ref.make(false)
        const context = yield* Layer.build(
          HttpRouter.serve(Admin.layer({ token: Redacted.make(TOKEN), readiness: Ref.get(applicationReady) }), {
            disableLogger: true,
            disableListenLog: true
          }).pipe(
            Layer.provideMerge(ResilientPg.layer({ url: server.url, applicationName: "sturdy-admin-readiness-test" })),
            Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
          )
        )
        const base = HttpServer.formatAddress(Context.get(context, HttpServer.HttpServer).address)

        // The database is healthy; the application is not ready yet.
        const before = yield* get(base, "/health/ready")
        assert.deepStrictEqual([before.status, before.body], [503, { status: "not ready" }])
        const snapshotBefore = yield* get(base, "/api/admin/database/metrics", TOKEN)
        assert.strictEqual(snapshotBefore.body.ready, false)

        yield* Ref.set(applicationReady, true)
        const after = yield* get(base, "/health/ready")
        assert.deepStrictEqual([after.status, after.body], [200, { status: "ready" }])
        const snapshotAfter = yield* get(base, "/api/admin/database/metrics", TOKEN)
        assert.strictEqual(snapshotAfter.body.ready, true)
      }).pipe(Effect.scoped)
    )
  })
})
