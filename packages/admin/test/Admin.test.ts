import { NodeHttpServer } from "@effect/platform-node"
import { assert, describe, it, layer } from "@effect/vitest"
import { Admin } from "@sturdy/admin"
import { ResilientPg } from "@sturdy/pg"
import { HealthMonitor } from "@sturdy/resilience"
import { PgServer } from "@sturdy/testing"
import { ConfigProvider, Context, Effect, Layer, Logger, Redacted, Ref } from "effect"
import { HttpClient, HttpRouter, HttpServer } from "effect/http"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { readFileSync } from "node:fs"
import { createServer } from "node:http"
import * as Net from "node:net"

const TOKEN = "admin-readiness-test-token-0123"

const get = (base: string, path: string, bearer?: string) =>
  Effect.promise(async () => {
    const response = await fetch(
      `${base}${path}`,
      bearer === undefined ? {} : { headers: { authorization: `Bearer ${bearer}` } }
    )
    return { status: response.status, body: (await response.json()) as Record<string, unknown> }
  })

let apps = 0
const appName = () => `sturdy-admin-test-${process.pid}-${++apps}`

/**
 * The admin routes served in process by `NodeHttpServer.layerTest` (a free port, and an `HttpClient` pointed at
 * it), in front of a resilient client of `url`. With `clock: "test"` the routes and the client run on a
 * `TestClock` that nobody advances unless the test does: every time in the snapshot is the epoch, every measured
 * duration 0, and the health monitor probes once, at start-up.
 */
const serve = (
  url: Redacted.Redacted<string>,
  admin: Admin.Options,
  options: { readonly pg?: Partial<ResilientPg.Options>; readonly clock?: "live" | "test" } = {}
) =>
  Layer.build(
    HttpRouter.serve(Admin.layer(admin), { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provideMerge(ResilientPg.layer({ url, applicationName: appName(), ...options.pg })),
      Layer.provideMerge(options.clock === "test" ? TestClock.layer() : Layer.empty),
      Layer.provideMerge(NodeHttpServer.layerTest),
      Layer.provide(Logger.layer([]))
    )
  )

interface Reply {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly text: string
}

/** GET `path` with the given `Authorization` header (none when undefined). */
const request = (context: Context.Context<HttpClient.HttpClient>, path: string, authorization?: string) =>
  Effect.gen(function* () {
    const client = Context.get(context, HttpClient.HttpClient)
    const response = yield* client.get(path, authorization === undefined ? {} : { headers: { authorization } })
    return { status: response.status, headers: response.headers, text: yield* response.text } satisfies Reply
  }).pipe(Effect.orDie)

const noStore = { "cache-control": "no-store", "x-content-type-options": "nosniff" }

/** The headers of a reply that the routes set, by name. */
const pick = (reply: Reply, names: ReadonlyArray<string>) =>
  Object.fromEntries(names.map((name) => [name, reply.headers[name]]))

const unauthorized = (reply: Reply) => ({
  status: reply.status,
  body: JSON.parse(reply.text) as unknown,
  ...pick(reply, ["content-type", "www-authenticate", "cache-control", "x-content-type-options"])
})

const expectedUnauthorized = {
  status: 401,
  body: { error: "unauthorized" },
  "content-type": "application/json",
  "www-authenticate": 'Bearer realm="sturdy-admin"',
  ...noStore
}

const dashboardFile = (name: string) =>
  readFileSync(new URL(`../src/internal/dashboard/${name}`, import.meta.url), "utf8")

const pageHeaders = {
  ...noStore,
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer"
}

/** A loopback port nothing listens on. */
const deadPort = Effect.promise(
  () =>
    new Promise<number>((resolve) => {
      const listener = Net.createServer()
      listener.listen(0, "127.0.0.1", () => {
        const { port } = listener.address() as Net.AddressInfo
        listener.close(() => resolve(port))
      })
    })
)

const epoch = "1970-01-01T00:00:00.000Z"

describe("Admin", () => {
  layer(PgServer.layer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect(
      "Admin.routes is what is mounted: every listed route answers with the token; without one, only the open ones",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const withToken = yield* serve(server.url, { token: Redacted.make(TOKEN) })
          const withoutToken = yield* serve(server.url, { token: undefined })
          const statuses = (context: Context.Context<HttpClient.HttpClient>) =>
            Effect.forEach(Admin.routes, (route) =>
              Effect.map(request(context, route.path, `Bearer ${TOKEN}`), (reply) => `${route.path} ${reply.status}`)
            )
          assert.deepStrictEqual(
            yield* statuses(withToken),
            Admin.routes.map((route) => `${route.path} 200`)
          )
          assert.deepStrictEqual(
            yield* statuses(withoutToken),
            Admin.routes.map((route) => `${route.path} ${route.token === "none" ? 200 : 404}`)
          )
        }).pipe(Effect.scoped)
    )

    it.effect("liveness and readiness answer anyone, with or without a token, a wrong one included", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const context = yield* serve(server.url, { token: Redacted.make(TOKEN) })
        for (const authorization of [undefined, `Bearer ${TOKEN}`, "Bearer wrong-token-0123456789abcdef", "Basic x"]) {
          for (const [path, body] of [
            ["/health/live", { status: "live" }],
            ["/health/ready", { status: "ready" }]
          ] as const) {
            const reply = yield* request(context, path, authorization)
            assert.deepStrictEqual(
              {
                status: reply.status,
                body: JSON.parse(reply.text),
                ...pick(reply, ["content-type", ...Object.keys(noStore)])
              },
              { status: 200, body, "content-type": "application/json", ...noStore },
              `${path} with ${authorization}`
            )
          }
        }
      }).pipe(Effect.scoped)
    )

    it.effect(
      "/metrics and the snapshot: 401 without the token, with a wrong one or in another scheme; 200 with it",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const context = yield* serve(server.url, { token: Redacted.make(TOKEN) })
          const refused = [
            undefined,
            "",
            "Bearer",
            "Bearer ",
            TOKEN,
            `Basic ${TOKEN}`,
            `Token ${TOKEN}`,
            "Bearer wrong-token-0123456789abcdef",
            `Bearer ${TOKEN}x`,
            `Bearer ${TOKEN.slice(0, -1)}`,
            `Bearer ${TOKEN.toUpperCase()}`,
            `Bearer ${TOKEN} ${TOKEN}`,
            `Bearer${TOKEN}`,
            `Basic Bearer ${TOKEN}`
          ]
          for (const path of ["/metrics", "/api/admin/database/metrics"]) {
            for (const authorization of refused) {
              const reply = yield* request(context, path, authorization)
              assert.deepStrictEqual(
                unauthorized(reply),
                expectedUnauthorized,
                `${path} with ${JSON.stringify(authorization)}`
              )
            }
            // The token in the query string is no token.
            const query = yield* request(context, `${path}?token=${TOKEN}`)
            assert.deepStrictEqual(unauthorized(query), expectedUnauthorized, `${path} with the token in the query`)
          }

          // The scheme is case-insensitive (RFC 9110); the token is not.
          for (const authorization of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `BEARER ${TOKEN}`]) {
            const metrics = yield* request(context, "/metrics", authorization)
            assert.deepStrictEqual(
              { status: metrics.status, ...pick(metrics, ["content-type", ...Object.keys(noStore)]) },
              { status: 200, "content-type": "text/plain; version=0.0.4; charset=utf-8", ...noStore },
              authorization
            )
            assert.match(metrics.text, /^# TYPE sturdy_statements_total counter$/m)
            const snapshot = yield* request(context, "/api/admin/database/metrics", authorization)
            assert.deepStrictEqual(
              { status: snapshot.status, ...pick(snapshot, ["content-type", ...Object.keys(noStore)]) },
              { status: 200, "content-type": "application/json", ...noStore },
              authorization
            )
          }
        }).pipe(Effect.scoped)
    )

    it.effect("the dashboard page and its assets need no token (they hold no data) and carry their headers", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const context = yield* serve(server.url, { token: Redacted.make(TOKEN) })
        for (const [path, type, file] of [
          ["/admin/database", "text/html", "index.html"],
          ["/admin/database/app.js", "text/javascript; charset=utf-8", "app.js"],
          ["/admin/database/app.css", "text/css; charset=utf-8", "app.css"]
        ] as const) {
          for (const authorization of [undefined, "Bearer wrong-token-0123456789abcdef"]) {
            const reply = yield* request(context, path, authorization)
            assert.deepStrictEqual(
              { status: reply.status, ...pick(reply, ["content-type", ...Object.keys(pageHeaders)]) },
              { status: 200, "content-type": type, ...pageHeaders },
              path
            )
            assert.strictEqual(reply.text, dashboardFile(file), path)
          }
        }
      }).pipe(Effect.scoped)
    )

    it.effect("without a token the admin routes are not mounted: 404 with any bearer; health stays on", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const context = yield* serve(server.url, { token: undefined })
        for (const path of [
          "/metrics",
          "/api/admin/database/metrics",
          "/admin/database",
          "/admin/database/app.js",
          "/admin/database/app.css"
        ]) {
          for (const authorization of [undefined, `Bearer ${TOKEN}`]) {
            assert.strictEqual(
              (yield* request(context, path, authorization)).status,
              404,
              `${path} with ${authorization}`
            )
          }
        }
        assert.strictEqual((yield* request(context, "/health/live")).status, 200)
        assert.strictEqual((yield* request(context, "/health/ready")).status, 200)
      }).pipe(Effect.scoped)
    )

    it.effect(
      "the snapshot on a TestClock: every figure exact but the latencies, which are real time and consistent with the statements'",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const context = yield* serve(server.url, { token: Redacted.make(TOKEN) }, { clock: "test" })
          const sql = Context.get(context, SqlClient.SqlClient)
          yield* Effect.provide(
            Effect.andThen(sql`SELECT 1 AS one`, sql`SELECT 2 AS two`).pipe(
              Effect.andThen(sql`SELECT ${"private-value"}::text AS v`)
            ),
            context
          )
          const reply = yield* request(context, "/api/admin/database/metrics", `Bearer ${TOKEN}`)
          assert.strictEqual(reply.status, 200)
          assert.notInclude(reply.text, "private-value")
          const snapshot = JSON.parse(reply.text) as Admin.Snapshot
          const { avgResponseTime, p50, p95, p99, ...counts } = snapshot.metrics
          const health: Admin.HealthEntry = { at: epoch, status: "healthy", responseTimeMillis: 0 }
          assert.deepStrictEqual(
            { ...snapshot, metrics: counts, statements: snapshot.statements.map((entry) => entry.fingerprint).sort() },
            {
              generatedAt: epoch,
              startedAt: epoch,
              database: `${server.host}:${server.port}/${server.database}`,
              profile: "development",
              ready: true,
              metrics: {
                totalQueries: 3,
                failedQueries: 0,
                circuitState: "Closed",
                failureCount: 0,
                successRate: 100,
                attempts: 3,
                retries: 0,
                timeouts: 0,
                rejections: 0,
                outcomeUnknown: 0,
                breakerTransitions: {}
              },
              pool: { max: 10, open: 1, inUse: 0, idle: 1, waiting: 0 },
              breaker: { state: "Closed", transitions: [] },
              health: { last: health, history: [health] },
              // Fingerprints only: no literal, no parameter.
              statements: ["SELECT ? AS one", "SELECT ? AS two", "SELECT ?::text AS v"],
              transactions: {
                started: 0,
                retries: 0,
                conflictRetries: 0,
                commitsInDoubt: 0,
                commitsFoundCommitted: 0,
                commitsFoundAborted: 0,
                commitsUnresolved: 0
              }
            }
          )
          // One call each: its mean, p95 and maximum are its one duration; the most time-consuming comes first.
          const durations = snapshot.statements.map((entry) => {
            assert.deepStrictEqual(
              [entry.calls, entry.errors, entry.p95Millis, entry.maxMillis, entry.lastErrorReason],
              [1, 0, entry.meanMillis, entry.meanMillis, undefined],
              entry.fingerprint
            )
            return entry.meanMillis
          })
          assert.deepStrictEqual(
            durations,
            [...durations].sort((a, b) => b - a)
          )
          // The client's latencies are the same three durations: p95 and p99 are the largest (a quantile never
          // exceeds the maximum), p50 is within 5% above the middle one, the mean is their mean.
          const [longest, middle] = durations as [number, number, number]
          assert.deepStrictEqual([p95, p99], [longest, longest])
          assert.isTrue(middle <= p50 && p50 <= Math.min(longest, middle * 1.05), `p50 ${p50} for ${durations}`)
          assert.closeTo(avgResponseTime, (durations[0]! + durations[1]! + durations[2]!) / 3, 1e-9)
        }).pipe(Effect.scoped)
    )

    it.effect(
      "historySize keeps the latest health results; statementsInSnapshot the most time-consuming statements",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const context = yield* serve(
            server.url,
            { token: Redacted.make(TOKEN), historySize: 2, statementsInSnapshot: 2 },
            { clock: "test", pg: { healthCheckInterval: "1 hour" } }
          )
          const sql = Context.get(context, SqlClient.SqlClient)
          const monitor = Context.get(context, HealthMonitor.HealthMonitor)
          yield* Effect.gen(function* () {
            // The statements' durations are real time: pg_sleep orders them.
            yield* sql`SELECT pg_sleep(0.05) AS a`
            yield* sql`SELECT 1 AS b`
            yield* sql`SELECT pg_sleep(0.1) AS c`
            for (let second = 1; second <= 3; second++) {
              yield* TestClock.adjust("1 second")
              yield* monitor.check
            }
          }).pipe(Effect.provide(context))
          const snapshot = JSON.parse(
            (yield* request(context, "/api/admin/database/metrics", `Bearer ${TOKEN}`)).text
          ) as Admin.Snapshot
          const at = (second: number): Admin.HealthEntry => ({
            at: `1970-01-01T00:00:0${second}.000Z`,
            status: "healthy",
            responseTimeMillis: 0
          })
          // The start-up result and the first check have left the ring of two.
          assert.deepStrictEqual(snapshot.health, { last: at(3), history: [at(2), at(3)] })
          assert.deepStrictEqual(
            snapshot.statements.map((entry) => entry.fingerprint),
            ["SELECT pg_sleep(?) AS c", "SELECT pg_sleep(?) AS a"]
          )
          assert.strictEqual(snapshot.metrics.totalQueries, 3)
        }).pipe(Effect.scoped)
    )

    it.effect("rejects a token shorter than 16 characters and out-of-range history sizes, typed; 16 is enough", () =>
      Effect.gen(function* () {
        const server = yield* PgServer.PgServer
        const refused = (options: Admin.Options) =>
          Effect.map(Effect.flip(Effect.scoped(serve(server.url, options))), (error) => [error._tag, error.message])
        assert.deepStrictEqual(yield* refused({ token: Redacted.make("a".repeat(15)) }), [
          "InvalidAdminOptions",
          "Admin: the token must have at least 16 characters, got 15"
        ])
        assert.deepStrictEqual(yield* refused({ token: Redacted.make(TOKEN), historySize: 0 }), [
          "InvalidAdminOptions",
          "Admin: historySize must be an integer >= 1, got 0"
        ])
        assert.deepStrictEqual(yield* refused({ token: Redacted.make(TOKEN), statementsInSnapshot: 2.5 }), [
          "InvalidAdminOptions",
          "Admin: statementsInSnapshot must be an integer >= 1, got 2.5"
        ])
        const sixteen = "b".repeat(16)
        const context = yield* serve(server.url, { token: Redacted.make(sixteen) })
        assert.strictEqual((yield* request(context, "/metrics", `Bearer ${sixteen}`)).status, 200)
      }).pipe(Effect.scoped)
    )

    it.effect(
      "layerConfig reads STURDY_ADMIN_TOKEN; a token given in code wins; without either the routes are off",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const codeToken = "code-token-0123456789abcdef"
          const statusWith = (env: Record<string, string>, options: Partial<Admin.Options>, bearer: string) =>
            Effect.gen(function* () {
              const context = yield* Layer.build(
                HttpRouter.serve(Admin.layerConfig(options), { disableLogger: true, disableListenLog: true }).pipe(
                  Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))),
                  Layer.provideMerge(ResilientPg.layer({ url: server.url, applicationName: appName() })),
                  Layer.provideMerge(NodeHttpServer.layerTest),
                  Layer.provide(Logger.layer([]))
                )
              )
              return (yield* request(context, "/metrics", `Bearer ${bearer}`)).status
            }).pipe(Effect.scoped)
          assert.strictEqual(yield* statusWith({ STURDY_ADMIN_TOKEN: TOKEN }, {}, TOKEN), 200)
          assert.strictEqual(yield* statusWith({ STURDY_ADMIN_TOKEN: TOKEN }, { token: undefined }, TOKEN), 200)
          assert.strictEqual(
            yield* statusWith({ STURDY_ADMIN_TOKEN: TOKEN }, { token: Redacted.make(codeToken) }, TOKEN),
            401
          )
          assert.strictEqual(
            yield* statusWith({ STURDY_ADMIN_TOKEN: TOKEN }, { token: Redacted.make(codeToken) }, codeToken),
            200
          )
          assert.strictEqual(yield* statusWith({}, {}, TOKEN), 404)
        })
    )

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

  describe("with the database unreachable", () => {
    it.live(
      "not ready (503); the snapshot shows the failed probe, the calls, the open breaker and its transition, and no password",
      () =>
        Effect.gen(function* () {
          const port = yield* deadPort
          const password = "admin-test-secret-password"
          const url = Redacted.make(`postgres://app:${password}@127.0.0.1:${port}/app`)
          const context = yield* serve(
            url,
            { token: Redacted.make(TOKEN) },
            {
              clock: "test",
              pg: {
                retriesAfterFirst: 0,
                breakerFailures: 2,
                breakerOpenDuration: "5 seconds",
                whenCircuitOpen: "fail-fast"
              }
            }
          )
          const sql = Context.get(context, SqlClient.SqlClient)
          for (let i = 0; i < 3; i++) yield* Effect.exit(sql`SELECT 1`)

          const ready = yield* request(context, "/health/ready")
          assert.deepStrictEqual([ready.status, JSON.parse(ready.text)], [503, { status: "not ready" }])
          const reply = yield* request(context, "/api/admin/database/metrics", `Bearer ${TOKEN}`)
          assert.strictEqual(reply.status, 200)
          assert.notInclude(reply.text, password)
          const { health, statements, transactions: _, ...rest } = JSON.parse(reply.text) as Admin.Snapshot
          const { avgResponseTime, p50, p95, p99, ...counts } = rest.metrics
          assert.deepStrictEqual(
            { ...rest, metrics: counts },
            {
              generatedAt: epoch,
              startedAt: epoch,
              database: `127.0.0.1:${port}/app`,
              profile: "development",
              ready: false,
              metrics: {
                totalQueries: 3,
                failedQueries: 3,
                circuitState: "Open",
                failureCount: 2,
                successRate: 0,
                attempts: 2,
                retries: 0,
                timeouts: 0,
                rejections: 1,
                outcomeUnknown: 0,
                breakerTransitions: { "Closed->Open": 1 }
              },
              pool: { max: 10, open: 0, inUse: 0, idle: 0, waiting: 0 },
              breaker: {
                state: "Open",
                retryAfterMillis: 5000,
                consecutiveOpenings: 1,
                transitions: [{ at: epoch, from: "Closed", to: "Open", retryAfterMillis: 5000 }]
              }
            }
          )
          // Latencies are real time (the client times calls with performance.now): 3 calls, so p95 and p99 are
          // both the longest, and the mean lies below it.
          assert.strictEqual(p95, p99)
          assert.isTrue(p50 <= p95 && avgResponseTime <= p99, JSON.stringify(rest.metrics))
          // The start-up probe was refused; each failed call asked for another probe (checkSoon), refused too. How many
          // ran depends on how those requests met the probes in flight, so the history holds one result or more.
          const refused: Admin.HealthEntry = {
            at: epoch,
            status: "unhealthy",
            error: `ConnectionRefused: PgConnection: Failed to connect (connect ECONNREFUSED 127.0.0.1:${port})`
          }
          assert.deepStrictEqual(health.last, refused)
          assert.deepStrictEqual(health.history.slice(0, 1), [refused])
          assert.deepStrictEqual(
            health.history,
            Array.from(health.history, () => refused)
          )
          assert.deepStrictEqual(
            statements.map(({ fingerprint, calls, errors, lastErrorReason }) => ({
              fingerprint,
              calls,
              errors,
              lastErrorReason
            })),
            [{ fingerprint: "SELECT ?", calls: 3, errors: 3, lastErrorReason: "CircuitOpen" }]
          )
        }).pipe(Effect.scoped)
    )
  })
})
