import { NodeHttpServer } from "@effect/platform-node"
import { assert, describe, layer } from "@effect/vitest"
import { Admin } from "@sturdy/admin"
import { ResilientPg, StatementStats } from "@sturdy/pg"
import { PgServer } from "@sturdy/testing"
import { Context, Effect, Layer, Redacted } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { SqlClient } from "effect/sql"
import { copyFileSync, existsSync, mkdirSync } from "node:fs"
import { createServer } from "node:http"
import { fileURLToPath } from "node:url"
import { type Browser, chromium, type Page } from "playwright-core"

const TOKEN = "dashboard-test-token-4f1c9a7e"
const CHROMIUM = "/usr/bin/chromium"
const ARTIFACTS = fileURLToPath(new URL("./artifacts/", import.meta.url))
const DOCS_SCREENSHOT = fileURLToPath(new URL("../../../docs/dashboard.png", import.meta.url))

/** The statement of the background workload, and how the dashboard names it. */
const PROBE = "SELECT 1 AS dashboard_probe"
const PROBE_FINGERPRINT = StatementStats.fingerprint(PROBE)

/** The dashboard's address on a real HTTP server, and a real browser to look at it with. */
class Dashboard extends Context.Service<Dashboard, { readonly baseUrl: string; readonly browser: Browser }>()(
  "@sturdy/admin/test/Dashboard"
) {}

/**
 * The admin routes on a Node HTTP server (loopback, free port), in front of a
 * resilient client of the embedded server that recovers within seconds, with
 * a statement every 20 ms in the background so the numbers and the breaker move.
 */
const App = Layer.unwrap(
  Effect.gen(function* () {
    const server = yield* PgServer.PgServer
    return HttpRouter.serve(Admin.layer({ token: Redacted.make(TOKEN) }), {
      disableLogger: true,
      disableListenLog: true
    }).pipe(
      Layer.provideMerge(
        ResilientPg.layer({
          url: server.url,
          applicationName: `sturdy-dashboard-test-${process.pid}`,
          healthCheckInterval: "1 second",
          healthCheckTimeout: "1 second",
          breakerFailures: 2,
          breakerOpenDuration: "1 second",
          retriesAfterFirst: 0,
          attemptTimeout: "2 seconds"
        })
      ),
      Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
    )
  })
)

const Workload = Layer.effectDiscard(
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.forkScoped(
      sql`SELECT 1 AS dashboard_probe`.pipe(Effect.ignore, Effect.andThen(Effect.sleep("20 millis")), Effect.forever)
    )
  })
)

const launchChromium = Effect.acquireRelease(
  Effect.suspend(() =>
    existsSync(CHROMIUM)
      ? Effect.promise(() =>
          // Playwright gives every launch a fresh temporary profile.
          chromium.launch({
            executablePath: CHROMIUM,
            args: [
              "--headless=new",
              "--no-sandbox",
              "--disable-gpu",
              "--disable-dev-shm-usage",
              "--disable-quic",
              "--no-first-run",
              "--disable-background-networking",
              "--disable-component-update",
              "--disable-sync"
            ]
          })
        )
      : Effect.die(
          new Error(`Chromium is missing at ${CHROMIUM}: the dashboard test needs it; run \`apt-get install chromium\``)
        )
  ),
  (browser) => Effect.promise(() => browser.close())
)

const DashboardLive = Layer.effect(
  Dashboard,
  Effect.gen(function* () {
    const { address } = yield* HttpServer.HttpServer
    assert.strictEqual(address._tag, "InetAddressV4", "the test server listens on 127.0.0.1")
    const port = address._tag === "UnixPathAddress" ? 0 : address.port
    const browser = yield* launchChromium
    return { baseUrl: `http://127.0.0.1:${port}`, browser }
  })
).pipe(Layer.provideMerge(Workload), Layer.provideMerge(App))

interface Tab {
  readonly page: Page
  /** Console errors and warnings, and uncaught exceptions, in the order they happened. */
  readonly problems: Array<string>
}

/** A fresh browser context (its own sessionStorage) at 1280×800, closed with the scope. */
const openTab = (browser: Browser) =>
  Effect.acquireRelease(
    Effect.promise(async (): Promise<Tab & { readonly close: () => Promise<void> }> => {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
      const page = await context.newPage()
      const problems: Array<string> = []
      page.on("console", (message) => {
        if (message.type() === "error" || message.type() === "warning") {
          problems.push(`console ${message.type()}: ${message.text()}`)
        }
      })
      page.on("pageerror", (error) => problems.push(`uncaught: ${error.message}`))
      return { page, problems, close: () => context.close() }
    }),
    (tab) => Effect.promise(tab.close)
  )

const browse = <A>(f: () => Promise<A>) => Effect.promise(f)

/** Waits (Playwright polls the DOM) until the breaker shows the state; returns the text it shows. */
const breakerShows = (page: Page, state: "closed" | "open" | "half-open", timeout: number) =>
  browse(async () => {
    await page.locator(`#breaker-state[data-state="${state}"]`).waitFor({ state: "visible", timeout })
    return page.locator("#breaker-state").textContent()
  })

const screenshot = (page: Page, name: string) =>
  browse(async () => {
    mkdirSync(ARTIFACTS, { recursive: true })
    const path = `${ARTIFACTS}${name}`
    await page.screenshot({ path, fullPage: true })
    return path
  })

/** What the browser itself logs for a request that failed or was answered with an error status. */
const resourceFailure = /^console error: Failed to load resource: /

describe("the live dashboard, in Chromium, against a real server", () => {
  layer(Layer.provideMerge(DashboardLive, PgServer.layerEmbedded), {
    excludeTestServices: true,
    timeout: "60 seconds"
  })((it) => {
    it.effect(
      "shows the breaker closed, the workload's statement, the breaker opening when the database stops and closing when it is back",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          const { baseUrl, browser } = yield* Dashboard
          const { page, problems } = yield* openTab(browser)
          yield* browse(() => page.goto(`${baseUrl}/admin/database#token=${TOKEN}`))

          assert.strictEqual(yield* breakerShows(page, "closed", 10_000), "closed")
          assert.notInclude(page.url(), "token", "the token leaves the address bar")
          yield* browse(() =>
            page.locator("#statements code", { hasText: PROBE_FINGERPRINT }).waitFor({ timeout: 10_000 })
          )
          const fingerprints = yield* browse(() => page.locator("#statements td.fingerprint").allTextContents())
          assert.include(fingerprints, PROBE_FINGERPRINT)
          // Statements per second come from two polls; a positive figure means the page keeps polling.
          yield* browse(() => page.locator("#rate").filter({ hasText: /[1-9]/ }).waitFor({ timeout: 10_000 }))
          assert.strictEqual(yield* browse(() => page.locator("#ready").textContent()), "ready")
          // Five health checks (one a second) in the history: the sparklines have a few seconds of data.
          yield* browse(() => page.locator("#health .dot.healthy").nth(4).waitFor({ timeout: 15_000 }))
          assert.strictEqual(yield* breakerShows(page, "closed", 1_000), "closed")
          const shot = yield* screenshot(page, "dashboard.png")
          // The README's screenshot changes with every run (port, times): refreshed on demand only.
          if (process.env.STURDY_UPDATE_SCREENSHOT === "1") copyFileSync(shot, DOCS_SCREENSHOT)
          assert.deepStrictEqual(problems, [], "no console error or warning while the database is up")

          yield* Effect.gen(function* () {
            yield* server.stop
            assert.strictEqual(yield* breakerShows(page, "open", 10_000), "open")
            yield* browse(() => page.locator("#ready", { hasText: /^not ready$/ }).waitFor({ timeout: 5_000 }))
            yield* browse(() => page.locator("#health .dot.unhealthy").first().waitFor({ timeout: 10_000 }))
            assert.isAbove(yield* browse(() => page.locator("#timeline .segment.open").count()), 0)
            assert.isAbove(yield* browse(() => page.locator("#transitions .pill.open").count()), 0)
            // Failed and rejected calls bring the success rate under 99 %.
            yield* browse(() => page.locator("#success.warn").waitFor({ timeout: 5_000 }))

            yield* server.start
            assert.strictEqual(yield* breakerShows(page, "closed", 20_000), "closed")
            yield* browse(() => page.locator("#ready", { hasText: /^ready$/ }).waitFor({ timeout: 10_000 }))
          }).pipe(Effect.ensuring(Effect.orDie(server.start)))

          yield* screenshot(page, "dashboard-recovered.png")
          assert.deepStrictEqual(problems, [], "no console error or warning through the outage")
        }),
      60_000
    )

    it.effect(
      "without a token it asks for one; the token typed in opens the dashboard",
      () =>
        Effect.gen(function* () {
          const { baseUrl, browser } = yield* Dashboard
          const { page, problems } = yield* openTab(browser)
          yield* browse(() => page.goto(`${baseUrl}/admin/database`))

          yield* browse(() => page.locator("#token-form").waitFor({ state: "visible", timeout: 5_000 }))
          assert.isTrue(yield* browse(() => page.locator("#dashboard").isHidden()))
          assert.strictEqual(yield* browse(() => page.locator("#updated").textContent()), "no token")

          yield* browse(async () => {
            await page.locator("#token-input").fill(TOKEN)
            await page.locator("#token-form button[type=submit]").click()
          })
          yield* browse(() => page.locator("#dashboard").waitFor({ state: "visible", timeout: 10_000 }))
          assert.include(
            ["closed", "open", "half-open"],
            yield* browse(() => page.locator("#breaker-state").textContent())
          )
          assert.isTrue(yield* browse(() => page.locator("#token-form").isHidden()))
          assert.deepStrictEqual(problems, [])

          // The network goes away: the page says so and keeps polling, without an uncaught error.
          yield* browse(() => page.route("**/api/admin/database/metrics", (route) => route.abort("connectionrefused")))
          yield* browse(() =>
            page
              .locator("#banner", { hasText: /^connection to the server lost, retrying$/ })
              .waitFor({ state: "visible", timeout: 5_000 })
          )
          yield* browse(() => page.unroute("**/api/admin/database/metrics"))
          yield* browse(() => page.locator("#banner").waitFor({ state: "hidden", timeout: 5_000 }))
          assert.deepStrictEqual(
            problems.filter((problem) => !resourceFailure.test(problem)),
            [],
            "only the browser's own log of the refused requests"
          )
        }),
      30_000
    )

    it.effect(
      "a wrong token is rejected and the form is shown again",
      () =>
        Effect.gen(function* () {
          const { baseUrl, browser } = yield* Dashboard
          const { page, problems } = yield* openTab(browser)
          yield* browse(() => page.goto(`${baseUrl}/admin/database#token=not-the-right-token-at-all`))

          yield* browse(() =>
            page
              .locator("#token-message.error", { hasText: /^token rejected$/ })
              .waitFor({ state: "visible", timeout: 5_000 })
          )
          assert.isTrue(yield* browse(() => page.locator("#token-form").isVisible()))
          assert.isTrue(yield* browse(() => page.locator("#dashboard").isHidden()))
          assert.notInclude(page.url(), "token=")
          yield* screenshot(page, "dashboard-token-rejected.png")
          assert.deepStrictEqual(
            problems.filter((problem) => !resourceFailure.test(problem)),
            [],
            "only the browser's own log of the 401"
          )
        }),
      30_000
    )
  })
})
