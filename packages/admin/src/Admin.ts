/**
 * Admin HTTP routes for any `effect/http` server: liveness, readiness,
 * Prometheus metrics, a JSON snapshot of the database client, and a live
 * dashboard.
 *
 * `routes` lists every route, who may call it and what it answers.
 *
 * **Details**
 *
 * The admin routes require `Authorization: Bearer <token>`, compared in
 * constant time with the configured token. Without a configured token they
 * are not mounted at all (404): off, never open. Liveness and readiness
 * reveal status only, so a load balancer can call them without a token.
 *
 * The dashboard page and its script and stylesheet are static files served
 * from this package (no CDN) and hold no data: the page reads the token from
 * its URL fragment (`/admin/database#token=...`, which browsers never send to
 * the server) or asks for it, and polls the JSON route with the bearer header
 * every second. They are served only when a token is configured.
 *
 * Breaker transitions and health results are kept, with the time they were
 * observed, in ring buffers of `historySize` entries from the moment the
 * layer is built.
 *
 * **Example** (Mounting the routes)
 *
 * ```ts
 * import { Admin } from "@sturdy/admin"
 * import { ResilientPg } from "@sturdy/pg"
 * import { Layer } from "effect"
 * import { HttpRouter } from "effect/http"
 *
 * const routes = Admin.layerConfig().pipe(Layer.provide(ResilientPg.layerConfig()))
 * const app = HttpRouter.serve(routes) // then provide a server, e.g. NodeHttpServer.layer
 * ```
 *
 * @since 0.1.0
 */
import type { StatementStats } from "@sturdy/pg"
import { ResilientPg } from "@sturdy/pg"
import { type Breaker, DatabaseMetrics, HealthMonitor } from "@sturdy/resilience"
import { Clock, Config, Duration, Effect, Layer, Option, Redacted, Schema, Stream } from "effect"
import { HttpRouter, type HttpServerRequest, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import { createHash, timingSafeEqual } from "node:crypto"
import { readFileSync } from "node:fs"

const TOKEN = "STURDY_ADMIN_TOKEN"

/** A shorter token could be guessed; the same bound applies in code and in the environment. */
const minTokenLength = 16

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The bearer token of the admin routes; at least 16 characters. Without
   * one, the admin routes are off (404) and only liveness and readiness are
   * served.
   */
  readonly token: Redacted.Redacted<string> | undefined
  /** Breaker transitions and health results kept for the snapshot. Default 100. */
  readonly historySize?: number | undefined
  /** Statement fingerprints in the snapshot, the most time-consuming first. Default 50. */
  readonly statementsInSnapshot?: number | undefined
  /**
   * The application's own condition for readiness (its schema migrated, its
   * caches warm): `/health/ready` answers 200 only while the database is ready
   * and this is `true`. Default: the database alone.
   */
  readonly readiness?: Effect.Effect<boolean> | undefined
}

/**
 * A breaker transition, with the time this process observed it.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransitionEntry {
  readonly at: string
  readonly from: Breaker.State["_tag"]
  readonly to: Breaker.State["_tag"]
  /** On an opening: how long until the breaker lets a probe through. */
  readonly retryAfterMillis?: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface HealthEntry {
  readonly at: string
  readonly status: "healthy" | "unhealthy"
  readonly responseTimeMillis?: number
  readonly error?: string
}

/**
 * What `GET /api/admin/database/metrics` answers. It names the database by
 * `host:port/database`, never by its connection string.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  readonly generatedAt: string
  readonly startedAt: string
  readonly database: string
  readonly profile: string
  readonly ready: boolean
  readonly metrics: Omit<DatabaseMetrics.Snapshot, "lastHealthCheck" | "pool">
  readonly pool: DatabaseMetrics.PoolStats
  readonly breaker: {
    readonly state: Breaker.State["_tag"]
    readonly retryAfterMillis?: number
    readonly consecutiveOpenings?: number
    readonly transitions: ReadonlyArray<TransitionEntry>
  }
  readonly health: {
    readonly last: HealthEntry | undefined
    readonly history: ReadonlyArray<HealthEntry>
  }
  readonly statements: ReadonlyArray<StatementStats.Entry>
  readonly transactions: ResilientPg.TransactionCounters
}

/**
 * The token is shorter than 16 characters or the options are out of range.
 * (A token from the environment is checked by `config`, which fails with a
 * `ConfigError` naming `STURDY_ADMIN_TOKEN` instead.)
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidAdminOptions extends Schema.TaggedError<InvalidAdminOptions>()("InvalidAdminOptions", {
  message: Schema.String
}) {}

class Ring<A> {
  private readonly items: Array<A> = []
  private readonly size: number
  constructor(size: number) {
    this.size = size
  }
  push(item: A) {
    this.items.push(item)
    if (this.items.length > this.size) this.items.shift()
  }
  get all(): ReadonlyArray<A> {
    return this.items.slice()
  }
}

const healthEntry = (result: HealthMonitor.HealthCheckResult): HealthEntry => ({
  at: result.timestamp.toISOString(),
  status: result.status,
  ...(result.responseTime === undefined ? {} : { responseTimeMillis: result.responseTime }),
  ...(result.error === undefined ? {} : { error: result.error })
})

/**
 * Collects the history the snapshot reports and builds the snapshot.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeSnapshot = Effect.fnUntraced(function* (options?: {
  readonly historySize?: number | undefined
  readonly statementsInSnapshot?: number | undefined
  readonly readiness?: Effect.Effect<boolean> | undefined
}) {
  const historySize = options?.historySize ?? 100
  const statementsInSnapshot = options?.statementsInSnapshot ?? 50
  for (const [name, value] of [
    ["historySize", historySize],
    ["statementsInSnapshot", statementsInSnapshot]
  ] as const) {
    if (!Number.isInteger(value) || value < 1) {
      return yield* new InvalidAdminOptions({ message: `Admin: ${name} must be an integer >= 1, got ${value}` })
    }
  }
  const pg = yield* ResilientPg.ResilientPg
  const health = yield* HealthMonitor.HealthMonitor
  const metrics = yield* DatabaseMetrics.DatabaseMetrics
  const startedAt = new Date(yield* Clock.currentTimeMillis).toISOString()
  const transitions = new Ring<TransitionEntry>(historySize)
  const healthHistory = new Ring<HealthEntry>(historySize)
  yield* Effect.forkScoped(
    Stream.runForEach(pg.transitions, (transition) =>
      Effect.map(Clock.currentTimeMillis, (now) =>
        transitions.push({
          at: new Date(now).toISOString(),
          from: transition.from,
          to: transition.to,
          ...(transition.to === "Open" ? { retryAfterMillis: Duration.toMillis(transition.retryAfter) } : {})
        })
      )
    ),
    { startImmediately: true }
  )
  yield* Effect.forkScoped(
    Stream.runForEach(health.changes, (result) => Effect.sync(() => healthHistory.push(healthEntry(result)))),
    { startImmediately: true }
  )

  const application = options?.readiness ?? Effect.succeed(true)
  const ready = Effect.zipWith(
    health.lastHealthCheck,
    pg.breakerState,
    (last, state) => last.status === "healthy" && state._tag !== "Open"
  ).pipe(Effect.flatMap((database) => (database ? application : Effect.succeed(false))))

  const snapshot: Effect.Effect<Snapshot> = Effect.gen(function* () {
    const { lastHealthCheck, pool, ...rest } = yield* metrics.snapshot
    const state = yield* pg.breakerState
    const statements = yield* pg.statementStats
    const now = yield* Clock.currentTimeMillis
    return {
      generatedAt: new Date(now).toISOString(),
      startedAt,
      database: pg.database,
      profile: pg.profile.name,
      ready: lastHealthCheck?.status === "healthy" && state._tag !== "Open" && (yield* application),
      metrics: rest,
      pool,
      breaker: {
        state: state._tag,
        ...(state._tag === "Open"
          ? {
              retryAfterMillis: Duration.toMillis(state.retryAfter),
              consecutiveOpenings: state.consecutiveOpenings
            }
          : {}),
        transitions: transitions.all
      },
      health: {
        last: lastHealthCheck === undefined ? undefined : healthEntry(lastHealthCheck),
        history: healthHistory.all
      },
      statements: statements.slice(0, statementsInSnapshot),
      transactions: { ...pg.transactions }
    }
  })
  return { snapshot, ready } as const
})

const asset = (name: string) => readFileSync(new URL(`./internal/dashboard/${name}`, import.meta.url), "utf8")
const dashboard = { html: asset("index.html"), js: asset("app.js"), css: asset("app.css") }

const noStore = { "cache-control": "no-store", "x-content-type-options": "nosniff" }
const pageHeaders = {
  ...noStore,
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff"
}

const digest = (value: string) => createHash("sha256").update(value).digest()

/** Compares the request's bearer token with the expected digest in constant time. */
const bearerMatches = (request: HttpServerRequest.HttpServerRequest, expected: Buffer): boolean => {
  const header = request.headers.authorization
  const match = typeof header === "string" ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null
  // Hash even a missing token, so every request costs the same.
  return timingSafeEqual(digest(match?.[1] ?? ""), expected) && match !== null
}

const unauthorized = HttpServerResponse.jsonUnsafe(
  { error: "unauthorized" },
  { status: 401, headers: { ...noStore, "www-authenticate": 'Bearer realm="sturdy-admin"' } }
)

/**
 * Every route the layer mounts, as data: the layer mounts exactly these (its
 * handlers are keyed by them), and the README's routes table is made from
 * this list. `token`: `"none"` is open to anyone (status only); `"bearer"`
 * needs `Authorization: Bearer <token>`; `"page"` is a static part of the
 * dashboard, which holds no data. Only `"none"` routes are mounted without a
 * configured token.
 *
 * @since 0.1.0
 * @category models
 */
export const routes = [
  { method: "GET", path: "/health/live", token: "none", answers: '`200 {"status":"live"}`' },
  {
    method: "GET",
    path: "/health/ready",
    token: "none",
    answers:
      '`200 {"status":"ready"}`; `503 {"status":"not ready"}` while the last health check failed, the breaker is open, or `readiness` is false'
  },
  {
    method: "GET",
    path: "/metrics",
    token: "bearer",
    answers: "Prometheus text of every Effect metric (the `sturdy_*` series among them)"
  },
  {
    method: "GET",
    path: "/api/admin/database/metrics",
    token: "bearer",
    answers:
      "JSON: the metrics snapshot, pool, breaker state and its last transitions, health history, per-statement statistics, transactions"
  },
  { method: "GET", path: "/admin/database", token: "page", answers: "the live dashboard" },
  { method: "GET", path: "/admin/database/app.js", token: "page", answers: "the dashboard's script" },
  { method: "GET", path: "/admin/database/app.css", token: "page", answers: "the dashboard's stylesheet" }
] as const

/**
 * The routes, added to the `HttpRouter` of the layer's context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<
  never,
  InvalidAdminOptions,
  HttpRouter.HttpRouter | ResilientPg.ResilientPg | HealthMonitor.HealthMonitor | DatabaseMetrics.DatabaseMetrics
> =>
  HttpRouter.use(
    Effect.fnUntraced(function* (router) {
      const token = options.token === undefined ? undefined : Redacted.value(options.token)
      if (token !== undefined && token.length < minTokenLength) {
        return yield* new InvalidAdminOptions({
          message: `Admin: the token must have at least ${minTokenLength} characters, got ${token.length}`
        })
      }
      const { snapshot, ready } = yield* makeSnapshot(options)

      const open = {
        "/health/live": HttpServerResponse.jsonUnsafe({ status: "live" }, { headers: noStore }),
        "/health/ready": Effect.map(ready, (isReady) =>
          HttpServerResponse.jsonUnsafe(
            { status: isReady ? "ready" : "not ready" },
            { status: isReady ? 200 : 503, headers: noStore }
          )
        )
      }
      for (const path of ["/health/live", "/health/ready"] as const) yield* router.add("GET", path, open[path])
      if (token === undefined) {
        yield* Effect.logInfo(`Admin routes are off: no token is configured (${TOKEN})`).pipe(
          Effect.annotateLogs({ "sturdy.event": "admin" })
        )
        return
      }
      const expected = digest(token)
      const guarded =
        <E, R>(handler: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
        (request: HttpServerRequest.HttpServerRequest) =>
          bearerMatches(request, expected) ? handler : Effect.succeed(unauthorized)
      const withToken = {
        "/metrics": guarded(
          Effect.map(PrometheusMetrics.format(), (body) =>
            HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8", headers: noStore })
          )
        ),
        "/api/admin/database/metrics": guarded(
          Effect.map(snapshot, (body) => HttpServerResponse.jsonUnsafe(body, { headers: noStore }))
        ),
        "/admin/database": HttpServerResponse.html(dashboard.html).pipe(withHeaders),
        "/admin/database/app.js": HttpServerResponse.text(dashboard.js, {
          contentType: "text/javascript; charset=utf-8",
          headers: pageHeaders
        }),
        "/admin/database/app.css": HttpServerResponse.text(dashboard.css, {
          contentType: "text/css; charset=utf-8",
          headers: pageHeaders
        })
      }
      // Every listed route has exactly one handler, open or behind the token.
      const _every: Record<(typeof routes)[number]["path"], unknown> = { ...open, ...withToken }
      void _every
      yield* router.add("GET", "/metrics", withToken["/metrics"])
      yield* router.add("GET", "/api/admin/database/metrics", withToken["/api/admin/database/metrics"])
      for (const path of ["/admin/database", "/admin/database/app.js", "/admin/database/app.css"] as const) {
        yield* router.add("GET", path, withToken[path])
      }
      yield* Effect.logInfo("Admin routes mounted").pipe(
        Effect.annotateLogs({
          "sturdy.event": "admin",
          "sturdy.routes": "/metrics /api/admin/database/metrics /admin/database"
        })
      )
    })
  )

const withHeaders = HttpServerResponse.setHeaders(pageHeaders)

/**
 * The environment variables `config` reads, as data: the names `config`
 * reads are these, and the README's configuration table is made from them.
 * `default` is what applies while the variable is unset (`undefined`:
 * nothing; for the token, the admin routes are off).
 *
 * @since 0.1.0
 * @category config
 */
export const variables: ReadonlyArray<{
  readonly name: string
  readonly default: string | undefined
  readonly description: string
}> = [
  {
    name: TOKEN,
    default: undefined,
    description: `the admin routes' bearer token, at least ${minTokenLength} characters; unset: admin routes off (\`Admin.layerConfig\`)`
  }
]

/**
 * The admin options from the environment: `STURDY_ADMIN_TOKEN`, the admin
 * routes' bearer token (optional; without it the admin routes are off). A
 * token shorter than 16 characters fails with a `ConfigError` naming
 * `STURDY_ADMIN_TOKEN`, without echoing the value.
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.map(
  Config.option(
    Config.schema(
      Schema.Redacted(
        Schema.String.check(
          Schema.makeFilter(
            (token: string) => token.length >= minTokenLength || `Expected at least ${minTokenLength} characters`
          )
        )
      ),
      TOKEN
    )
  ),
  (token): Options => ({ token: Option.getOrUndefined(token) })
)

/**
 * The routes configured from the environment (see `config`); `options`
 * given in code win, and with `options.token`, `STURDY_ADMIN_TOKEN` is not
 * read.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options?: Partial<Options>
): Layer.Layer<
  never,
  InvalidAdminOptions | Config.ConfigError,
  HttpRouter.HttpRouter | ResilientPg.ResilientPg | HealthMonitor.HealthMonitor | DatabaseMetrics.DatabaseMetrics
> =>
  Layer.unwrap(
    Effect.map(options?.token === undefined ? config : Config.succeed<Options>({ token: options.token }), (fromEnv) =>
      layer({ ...fromEnv, ...Object.fromEntries(Object.entries(options ?? {}).filter(([, v]) => v !== undefined)) })
    )
  )
