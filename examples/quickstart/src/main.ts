/**
 * The quickstart: statements through ResilientPg while the server restarts.
 *
 * On an embedded PostgreSQL (or DATABASE_URL's server, which it cannot
 * restart), it runs a call every half second, stops the server for three
 * seconds in the middle, and prints what each call saw: attempts, waits,
 * outcome.
 */
import { NodeRuntime } from "@effect/platform-node"
import { ResilientPg } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { Clock, Config, Effect, Fiber, Layer, Logger, Option, References } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"

const calls = 14
const stopAtCall = 4
const outage = "3 seconds"

const formatMillis = (millis: number) =>
  millis < 1000 ? `${Math.round(millis)} ms` : `${(millis / 1000).toFixed(2)} s`

const print = (line: string) => Effect.sync(() => process.stdout.write(`${line}\n`))

/** Prints Sturdy's retry events as they happen, under the call they belong to. */
const retryPrinter = Logger.make(({ fiber }) => {
  const annotations = fiber.getRef(References.CurrentLogAnnotations)
  if (annotations["sturdy.event"] !== "retry") return
  const delay = Number(annotations["sturdy.delayMillis"]) / 1000
  process.stdout.write(
    `      attempt ${Number(annotations["sturdy.attempt"]) - 1} failed: ${annotations["sturdy.reason"]} (${
      annotations["sturdy.phase"]
    } phase); retrying in ${delay.toFixed(2)} s\n`
  )
})

interface Outcome {
  readonly ok: boolean
  readonly attempts: number
  readonly millis: number
}

const program = Effect.gen(function* () {
  const databaseUrl = yield* Config.option(Config.Redacted("DATABASE_URL"))
  const server = Option.isSome(databaseUrl) ? undefined : yield* PgServer.makeEmbedded
  const url = server?.url ?? Option.getOrThrow(databaseUrl)
  yield* print(
    server
      ? `Embedded PostgreSQL 18 on 127.0.0.1:${server.port} (set DATABASE_URL to use your own)`
      : `Using DATABASE_URL (${ResilientPg.describeUrl(url)}): it cannot be restarted, so this run has no outage`
  )
  yield* print(
    `Profile: development (3 retries after the first attempt, 1 s x 2^n backoff plus up to 1 s jitter, 10 s per attempt)\n`
  )

  const database = ResilientPg.layer({ url, applicationName: "sturdy-quickstart", profile: "development" })
  yield* Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const stats = (yield* ResilientPg.ResilientPg).stats
    yield* sql`CREATE TABLE IF NOT EXISTS quickstart_notes (id uuid PRIMARY KEY, title text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`

    const steps: ReadonlyArray<{ readonly label: string; readonly run: Effect.Effect<string, unknown> }> = [
      {
        label: "INSERT a note (client-generated id, marked idempotent)",
        run: Effect.suspend(() => {
          const id = randomUUID()
          return Effect.as(
            ResilientPg.idempotent(
              sql`INSERT INTO quickstart_notes (id, title) VALUES (${id}, 'hello') ON CONFLICT (id) DO NOTHING`
            ),
            `inserted ${id.slice(0, 8)}`
          )
        })
      },
      {
        label: "SELECT count(*)",
        run: Effect.map(
          sql<{ n: number }>`SELECT count(*)::int AS n FROM quickstart_notes`,
          (rows) => `${rows[0]!.n} notes`
        )
      }
    ]

    const outcomes: Array<Outcome> = []
    let restart: Fiber.Fiber<unknown, unknown> | undefined
    for (let i = 1; i <= calls; i++) {
      if (i === stopAtCall && server) {
        yield* print(`-- stopping the server for ${outage} --`)
        yield* server.stop
        restart = yield* Effect.forkChild(
          Effect.andThen(Effect.sleep(outage), Effect.andThen(server.start, print("-- server started again --")))
        )
      }
      const step = steps[i % steps.length]!
      yield* print(`#${String(i).padStart(2)} ${step.label}`)
      const before = (yield* stats).attempts
      const started = yield* Clock.currentTimeMillis
      const exit = yield* Effect.exit(ResilientPg.unwrapFailures(step.run))
      const millis = (yield* Clock.currentTimeMillis) - started
      const attempts = (yield* stats).attempts - before
      outcomes.push({ ok: exit._tag === "Success", attempts, millis })
      const result = exit._tag === "Success" ? `ok: ${exit.value}` : `FAILED: ${String(exit.cause)}`
      yield* print(`    ${result} after ${attempts} attempt${attempts === 1 ? "" : "s"} in ${formatMillis(millis)}`)
      yield* Effect.sleep("500 millis")
    }
    if (restart) yield* Fiber.join(restart)

    const succeeded = outcomes.filter((o) => o.ok).length
    const waited = outcomes.filter((o) => o.ok && o.attempts > 1)
    const longest = Math.max(0, ...waited.map((o) => o.millis)) / 1000
    yield* print(
      `\nSummary: ${outcomes.length} calls, ${succeeded} succeeded, ${waited.length} waited through the restart and succeeded (longest ${longest.toFixed(
        1
      )} s), ${outcomes.length - succeeded} failed.`
    )
    if (succeeded !== outcomes.length) return yield* Effect.fail(new Error("some calls failed"))
  }).pipe(Effect.provide(Layer.provideMerge(database, Logger.layer([retryPrinter]))))
})

NodeRuntime.runMain(Effect.scoped(program))
