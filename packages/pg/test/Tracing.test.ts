import { assert, describe, it, layer } from "@effect/vitest"
import { ResilientPg } from "@sturdy/pg"
import { Eventually, PgServer } from "@sturdy/testing"
import { Effect, Exit, Fiber, Layer, Logger, Redacted } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpSerialization, OtlpTracer } from "effect/observability"
import { SqlClient, Statement } from "effect/sql"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { appName, fast } from "./helpers.ts"

/** One span as an OTLP/HTTP JSON export carries it. */
interface OtlpSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly kind: number
  readonly attributes: ReadonlyArray<OtlpAttribute>
  readonly events: ReadonlyArray<{ readonly name: string; readonly attributes: ReadonlyArray<OtlpAttribute> }>
}
interface OtlpAttribute {
  readonly key: string
  readonly value: { readonly stringValue?: string; readonly intValue?: number | string; readonly boolValue?: boolean }
}

/** A local OTLP/HTTP receiver: every span of every export POSTed to `url`. */
const receiver = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<{ readonly url: string; readonly spans: Array<OtlpSpan>; readonly close: () => Promise<void> }>(
        (resolve) => {
          const spans: Array<OtlpSpan> = []
          const server = createServer((request, response) => {
            let body = ""
            request.on("data", (chunk) => {
              body += chunk
            })
            request.on("end", () => {
              const json = JSON.parse(body) as {
                readonly resourceSpans: ReadonlyArray<{
                  readonly scopeSpans: ReadonlyArray<{ readonly spans: ReadonlyArray<OtlpSpan> }>
                }>
              }
              for (const resource of json.resourceSpans)
                for (const scope of resource.scopeSpans) spans.push(...scope.spans)
              response.writeHead(200, { "content-type": "application/json" })
              response.end("{}")
            })
          })
          server.listen(0, "127.0.0.1", () =>
            resolve({
              url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`,
              spans,
              close: () => new Promise((done) => server.close(() => done()))
            })
          )
        }
      )
  ),
  (receiver) => Effect.promise(receiver.close)
)

/** An attribute list as a record of plain values. */
const plain = (attributes: ReadonlyArray<OtlpAttribute>): Record<string, unknown> =>
  Object.fromEntries(
    attributes.map(({ key, value }) => [
      key,
      value.stringValue ?? (value.intValue === undefined ? value.boolValue : Number(value.intValue))
    ])
  )

/** `record` restricted to `keys`, for exact comparisons of what Sturdy promises. */
const pick = (record: Record<string, unknown>, keys: ReadonlyArray<string>) =>
  Object.fromEntries(keys.filter((key) => key in record).map((key) => [key, record[key]]))

describe("OpenTelemetry: a retried statement's spans, exported through effect's OTLP exporter", () => {
  layer(PgServer.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect(
      "the request span, its statement span with the database conventions, and the retry as an event with its reason and phase",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const otlp = yield* receiver
          const applicationName = appName()
          const tracing = OtlpTracer.layer({
            url: otlp.url,
            resource: { serviceName: "sturdy-tracing-test" },
            exportInterval: "50 millis"
          }).pipe(Layer.provide(FetchHttpClient.layer), Layer.provide(OtlpSerialization.layerJson))

          yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const call = yield* Effect.forkChild(
              sql<{ done: string }>`SELECT 'done' AS done FROM pg_sleep(0.5)`.pipe(Effect.withSpan("GET /notes"))
            )
            yield* Eventually.until(server.activeQueries(applicationName), {
              what: "the SELECT running on the server",
              accept: (queries) => queries.some((q) => q.includes("pg_sleep")),
              timeout: "5 seconds"
            })
            assert.strictEqual(yield* server.terminateBackends(applicationName), 1)
            assert.deepStrictEqual(yield* Fiber.join(call), [{ done: "done" }])
          }).pipe(
            Effect.provide(
              ResilientPg.layer({ url: server.url, applicationName, ...fast, backoffJitter: 0 }).pipe(
                Layer.provide(Logger.layer([Logger.tracerLogger]))
              )
            ),
            // effect/sql makes the statement's span the parent of what runs it only when asked to (off by default).
            Effect.provideService(Statement.SpanPropagationEnabled, true),
            Effect.provide(Logger.layer([Logger.tracerLogger])),
            Effect.provide(tracing)
          )

          // The exporter flushed when its layer closed.
          const request = otlp.spans.find((span) => span.name === "GET /notes")
          assert.isDefined(request)
          const statements = otlp.spans.filter((span) => span.parentSpanId === request!.spanId)
          assert.strictEqual(statements.length, 1, JSON.stringify(otlp.spans.map((s) => s.name)))
          const statement = statements[0]!
          assert.strictEqual(statement.traceId, request!.traceId)
          assert.strictEqual(statement.kind, 3) // SPAN_KIND_CLIENT
          assert.deepStrictEqual(
            pick(plain(statement.attributes), [
              "db.system.name",
              "db.namespace",
              "server.address",
              "server.port",
              "db.query.text",
              "sturdy.attempts"
            ]),
            {
              "db.system.name": "postgresql",
              "db.namespace": server.database,
              "server.address": "127.0.0.1",
              "server.port": server.port,
              "db.query.text": "SELECT 'done' AS done FROM pg_sleep(0.5)",
              "sturdy.attempts": 2
            }
          )
          assert.deepStrictEqual(
            statement.events.map((event) => ({
              name: event.name,
              attributes: pick(
                plain(event.attributes),
                event.name === "A database call recovered"
                  ? ["sturdy.event", "sturdy.attempts"]
                  : ["sturdy.event", "sturdy.reason", "sturdy.phase", "sturdy.attempt", "sturdy.delayMillis"]
              )
            })),
            [
              {
                // pg_terminate_backend reaches the driver as the connection closing, with the statement sent.
                name: "Retrying a failed database call",
                attributes: {
                  "sturdy.event": "retry",
                  "sturdy.reason": "ConnectionClosed",
                  "sturdy.phase": "sent",
                  "sturdy.attempt": 2,
                  "sturdy.delayMillis": 20
                }
              },
              {
                name: "A database call recovered",
                attributes: { "sturdy.event": "recovered", "sturdy.attempts": 2 }
              }
            ]
          )
        }).pipe(Effect.scoped),
      30_000
    )
  })
})

describe("OpenTelemetry: the breaker's transitions", () => {
  it.live("each transition is a root span of its own, sturdy.breaker.transition, with from, to and the database", () =>
    Effect.gen(function* () {
      const otlp = yield* receiver
      const tracing = OtlpTracer.layer({
        url: otlp.url,
        resource: { serviceName: "sturdy-tracing-test" },
        exportInterval: "50 millis"
      }).pipe(Layer.provide(FetchHttpClient.layer), Layer.provide(OtlpSerialization.layerJson))
      // Nothing listens on port 1: the first refused attempt opens a breaker that opens after one failure.
      const exit = yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        return yield* Effect.exit(sql`SELECT 1`)
      }).pipe(
        Effect.provide(
          ResilientPg.layer({
            url: Redacted.make("postgres://app@127.0.0.1:1/notes"),
            applicationName: appName(),
            breakerFailures: 1,
            retriesAfterFirst: 0,
            whenCircuitOpen: "fail-fast"
          }).pipe(Layer.provide(Logger.layer([Logger.tracerLogger])))
        ),
        Effect.provide(Logger.layer([Logger.tracerLogger])),
        Effect.provide(tracing)
      )
      assert.isTrue(Exit.isFailure(exit))
      const transitions = otlp.spans.filter((span) => span.name === "sturdy.breaker.transition")
      assert.deepStrictEqual(
        transitions.map((span) => ({
          root: span.parentSpanId === undefined || span.parentSpanId === "",
          attributes: pick(plain(span.attributes), ["db.system.name", "sturdy.database", "sturdy.from", "sturdy.to"]),
          events: span.events.map((event) => event.name)
        })),
        [
          {
            root: true,
            attributes: {
              "db.system.name": "postgresql",
              "sturdy.database": "127.0.0.1:1/notes",
              "sturdy.from": "Closed",
              "sturdy.to": "Open"
            },
            events: ["Circuit breaker opened: calls fail fast for 1s"]
          }
        ]
      )
    }).pipe(Effect.scoped)
  )
})
