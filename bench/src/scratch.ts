import * as PgClient from "@effect/sql-pg/PgClient"
import { ResilientPg } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { Context, Effect, Layer, Logger } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
const which = process.argv[2]
await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const server = yield* PgServer.makeEmbedded
  const plain = yield* PgClient.make({ url: server.url, maxConnections: 10 })
  const ctx = yield* Layer.build(ResilientPg.layer({ url: server.url, maxConnections: 10, profile: "production" }))
  const sturdy = Context.get(ctx, PgClient.PgClient)
  const run = (sql: any, ms: number, c: number) => Effect.gen(function*() {
    let n = 0; const end = performance.now() + ms
    yield* Effect.all(Array.from({ length: c }, () => Effect.gen(function*() { while (performance.now() < end) { yield* sql`SELECT 1`; n++ } })), { concurrency: "unbounded" })
    return n * 1000 / ms
  })
  for (const c of [1, 16]) {
    for (let r = 0; r < 3; r++) {
      const a = yield* run(plain, 1000, c); const b = yield* run(sturdy, 1000, c)
      console.log(`c=${c} plain ${a.toFixed(0)} sturdy ${b.toFixed(0)} ratio ${(b / a).toFixed(2)}`)
    }
  }
  if (which === "prof") { yield* run(sturdy, 3000, 1) }
})).pipe(Effect.provide(Layer.merge(Reactivity.layer, Logger.layer([])))))
