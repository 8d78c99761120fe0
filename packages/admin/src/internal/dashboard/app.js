// @ts-check
/**
 * The live dashboard of @sturdy/admin. Plain browser JavaScript, no build
 * step: it polls GET /api/admin/database/metrics every second with the
 * bearer token and renders the snapshot. Every value from the server reaches
 * the page through textContent or an attribute, never as markup.
 *
 * The token comes from the URL fragment (#token=...), which browsers never
 * send to the server; it is kept in sessionStorage (this tab only) and
 * removed from the address bar at once.
 */

/**
 * The types of the JSON route, from the module that builds its answer, so the two cannot drift apart
 * (`pnpm --filter @sturdy/admin typecheck`, also run by the package's build, checks this file against
 * them). Fields that are `undefined` there are absent from the JSON.
 *
 * @typedef {import("../../Admin.ts").Snapshot} Snapshot
 * @typedef {Snapshot["breaker"]["state"]} BreakerState
 * @typedef {Snapshot["statements"][number]} Statement
 * @typedef {Snapshot["pool"]} Pool
 */

const TOKEN_KEY = "sturdy-admin-token"
const API = "/api/admin/database/metrics"
const POLL_MILLIS = 1000
const REQUEST_TIMEOUT_MILLIS = 5000
const SPARK_POINTS = 60
const TIMELINE_MILLIS = 5 * 60_000
const TRANSITIONS_SHOWN = 6
const HEALTH_SHOWN = 60
const STATEMENTS_SHOWN = 15
const SVG_NS = "http://www.w3.org/2000/svg"

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
const $ = (id) => {
  const element = document.getElementById(id)
  if (element === null) throw new Error(`dashboard: #${id} is missing from the page`)
  return element
}

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
const el = (tag, className, text) => {
  const element = document.createElement(tag)
  if (className) element.className = className
  if (text !== undefined) element.textContent = text
  return element
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 })

/** @param {number} n */
const count = (n) => integer.format(n)

/** @param {number} ms */
const millis = (ms) => {
  if (!Number.isFinite(ms)) return "—"
  if (ms < 10) return `${ms.toFixed(2)} ms`
  if (ms < 1000) return `${ms.toFixed(ms < 100 ? 1 : 0)} ms`
  return `${(ms / 1000).toFixed(2)} s`
}

/** @param {number} ms */
const duration = (ms) => {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 60) return `${s} s`
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`
}

/** @param {number} perSecond */
const rate = (perSecond) => (perSecond >= 100 ? count(perSecond) : perSecond.toFixed(1))

/** @param {string | number} at */
const clock = (at) => new Date(at).toLocaleTimeString("en-GB", { hour12: false })

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/** @type {string | null} */
let token = null
/** Bumped whenever polling restarts or stops, so a late answer of an older poll is ignored. */
let generation = 0
/** @type {ReturnType<typeof setTimeout> | undefined} */
let timer
/** @type {{ at: number, total: number } | undefined} */
let previous
/** @type {Array<number>} */
const rateHistory = []
/** @type {Array<number>} */
const p99History = []

/** @param {Array<number>} series @param {number} value */
const pushPoint = (series, value) => {
  series.push(value)
  if (series.length > SPARK_POINTS) series.splice(0, series.length - SPARK_POINTS)
}

// ---------------------------------------------------------------------------
// Token
// ---------------------------------------------------------------------------

/** Takes the token from the URL fragment (then removes it) or from this tab's storage. */
const initialToken = () => {
  const match = /(?:^#|&)token=([^&]*)/.exec(location.hash)
  if (match !== null) {
    history.replaceState(null, "", location.pathname + location.search)
    let value = ""
    try {
      value = decodeURIComponent(match[1] ?? "").trim()
    } catch {
      value = ""
    }
    if (value !== "") {
      sessionStorage.setItem(TOKEN_KEY, value)
      return value
    }
  }
  return sessionStorage.getItem(TOKEN_KEY)
}

/** @param {string} message @param {boolean} rejected */
const askForToken = (message, rejected) => {
  generation++
  clearTimeout(timer)
  token = null
  sessionStorage.removeItem(TOKEN_KEY)
  hideBanner()
  $("dashboard").hidden = true
  $("login").hidden = false
  const text = $("token-message")
  text.textContent = message
  text.classList.toggle("error", rejected)
  $("updated").textContent = rejected ? "token rejected" : "no token"
  $("token-input").focus()
}

/** @param {string} value */
const start = (value) => {
  token = value
  generation++
  clearTimeout(timer)
  previous = undefined
  rateHistory.length = 0
  p99History.length = 0
  $("login").hidden = true
  $("updated").textContent = "connecting…"
  void poll(generation)
}

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

/** @param {string} message */
const showBanner = (message) => {
  const banner = $("banner")
  banner.textContent = message
  banner.hidden = false
  $("dashboard").classList.add("stale")
}

const hideBanner = () => {
  $("banner").hidden = true
  $("dashboard").classList.remove("stale")
}

/** @param {number} current @param {number} startedAt */
const scheduleNext = (current, startedAt) => {
  if (current !== generation) return
  const wait = Math.max(0, POLL_MILLIS - (performance.now() - startedAt))
  timer = setTimeout(() => void poll(current), wait)
}

/** @param {number} current */
const poll = async (current) => {
  const startedAt = performance.now()
  try {
    /** @type {Response} */
    let response
    try {
      response = await fetch(API, {
        headers: { authorization: `Bearer ${token}`, accept: "application/json" },
        cache: "no-store",
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MILLIS)
      })
    } catch {
      if (current === generation) showBanner("connection to the server lost, retrying")
      return
    }
    if (current !== generation) return
    if (response.status === 401) {
      askForToken("token rejected", true)
      return
    }
    if (!response.ok) {
      showBanner(`the server answered ${response.status}, retrying`)
      return
    }
    /** @type {Snapshot} */
    let snapshot
    try {
      snapshot = await response.json()
    } catch {
      if (current === generation) showBanner("connection to the server lost, retrying")
      return
    }
    if (current !== generation) return
    hideBanner()
    render(snapshot)
  } finally {
    scheduleNext(current, startedAt)
  }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/** @param {Snapshot} snapshot */
const render = (snapshot) => {
  const now = Date.parse(snapshot.generatedAt)
  const total = snapshot.metrics.totalQueries
  if (previous !== undefined && now > previous.at && total >= previous.total) {
    pushPoint(rateHistory, ((total - previous.total) * 1000) / (now - previous.at))
    pushPoint(p99History, snapshot.metrics.p99)
  }
  previous = { at: now, total }

  renderHeader(snapshot)
  renderBreaker(snapshot)
  renderThroughput(snapshot)
  renderPool(snapshot.pool)
  renderTimeline(snapshot)
  renderHealth(snapshot.health)
  renderCounters(snapshot)
  renderStatements(snapshot.statements)
  $("dashboard").hidden = false
}

/** @param {Snapshot} snapshot */
const renderHeader = (snapshot) => {
  $("database").textContent = snapshot.database
  const profile = $("profile")
  profile.textContent = snapshot.profile
  profile.hidden = false
  const ready = $("ready")
  ready.textContent = snapshot.ready ? "ready" : "not ready"
  ready.className = `badge ${snapshot.ready ? "good" : "bad"}`
  ready.hidden = false
  $("updated").textContent = `updated ${clock(snapshot.generatedAt)}`
  $("uptime").textContent = `up ${duration(Date.parse(snapshot.generatedAt) - Date.parse(snapshot.startedAt))}`
}

/** The breaker's states as the page shows them (and its stylesheet names them). */
const stateLabels = /** @type {const} */ ({ Closed: "closed", Open: "open", HalfOpen: "half-open" })

/** @param {Snapshot} snapshot */
const renderBreaker = (snapshot) => {
  const { state, retryAfterMillis, consecutiveOpenings } = snapshot.breaker
  const element = $("breaker-state")
  element.textContent = stateLabels[state]
  element.dataset.state = stateLabels[state]
  let detail
  if (state === "Open") {
    const probe = retryAfterMillis ? `probe in ${duration(retryAfterMillis)}` : "probe on the next call"
    detail = `${probe} · opening ${consecutiveOpenings ?? 1} in a row`
  } else if (state === "HalfOpen") {
    detail = "one probe decides whether it closes"
  } else {
    const failures = snapshot.metrics.failureCount
    detail = failures === 0 ? "attempts are passing" : `${failures} failed attempt${failures === 1 ? "" : "s"} in a row`
  }
  $("breaker-detail").textContent = detail
  const counts = snapshot.metrics.breakerTransitions
  $("breaker-openings").textContent = count((counts["Closed->Open"] ?? 0) + (counts["HalfOpen->Open"] ?? 0))
  const last = snapshot.breaker.transitions.at(-1)
  $("breaker-changed").textContent =
    last === undefined
      ? "never"
      : `${clock(last.at)}, ${duration(Date.parse(snapshot.generatedAt) - Date.parse(last.at))} ago`
}

/** @param {Snapshot} snapshot */
const renderThroughput = (snapshot) => {
  const { metrics } = snapshot
  const latest = rateHistory.at(-1)
  $("rate").textContent = latest === undefined ? "—" : rate(latest)
  const success = $("success")
  success.textContent = `${metrics.successRate.toFixed(1)} %`
  success.classList.toggle("warn", metrics.successRate < 99)
  $("p50").textContent = millis(metrics.p50)
  $("p99").textContent = millis(metrics.p99)
  sparkline($("spark-rate"), rateHistory, (v) => `${rate(v)}/s`)
  sparkline($("spark-p99"), p99History, millis)
}

/**
 * Draws a small line chart with SVG elements.
 *
 * @param {HTMLElement} box
 * @param {Array<number>} values
 * @param {(value: number) => string} format
 */
const sparkline = (box, values, format) => {
  const width = 240
  const height = 40
  const svg = document.createElementNS(SVG_NS, "svg")
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`)
  svg.setAttribute("preserveAspectRatio", "none")
  svg.setAttribute("role", "img")
  if (values.length < 2) {
    box.replaceChildren(svg)
    box.title = "collecting…"
    return
  }
  const max = Math.max(...values) * 1.1 || 1
  const step = width / (values.length - 1)
  const line = values
    .map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`)
    .join(" ")
  const area = document.createElementNS(SVG_NS, "polygon")
  area.setAttribute("points", `0,${height} ${line} ${width},${height}`)
  area.setAttribute("class", "area")
  const polyline = document.createElementNS(SVG_NS, "polyline")
  polyline.setAttribute("points", line)
  polyline.setAttribute("class", "line")
  polyline.setAttribute("vector-effect", "non-scaling-stroke")
  svg.append(area, polyline)
  box.replaceChildren(svg)
  box.title = `now ${format(values.at(-1) ?? 0)}, max ${format(Math.max(...values))}`
}

/** @param {Pool} pool */
const renderPool = (pool) => {
  $("pool-in-use").textContent = count(pool.inUse)
  $("pool-idle").textContent = pool.idle === undefined || pool.idle === null ? "—" : count(pool.idle)
  const waiting = $("pool-waiting")
  waiting.textContent = count(pool.waiting)
  waiting.classList.toggle("warn", pool.waiting > 0)
  const max = Math.max(pool.max, 1)
  $("pool-bar-in-use").style.width = `${Math.min(100, (pool.inUse / max) * 100)}%`
  $("pool-bar-idle").style.width = `${Math.min(100, ((pool.idle ?? 0) / max) * 100)}%`
  $("pool-bar").title = `${pool.inUse} in use, ${pool.idle ?? "?"} idle, ${pool.max} max`
  const open = pool.open === undefined || pool.open === null ? "" : `${count(pool.open)} open · `
  $("pool-detail").textContent = `${open}${count(pool.max)} max`
}

/** @param {Snapshot} snapshot */
const renderTimeline = (snapshot) => {
  const end = Date.parse(snapshot.generatedAt)
  const begin = Math.max(end - TIMELINE_MILLIS, Date.parse(snapshot.startedAt))
  const transitions = snapshot.breaker.transitions
  const inside = transitions.filter((t) => Date.parse(t.at) > begin)
  const before = transitions.filter((t) => Date.parse(t.at) <= begin)
  /** @type {BreakerState} */
  let state = before.at(-1)?.to ?? inside[0]?.from ?? snapshot.breaker.state
  let cursor = begin
  /** @type {Array<{ from: number, to: number, state: BreakerState }>} */
  const segments = []
  for (const transition of inside) {
    const at = Math.min(Date.parse(transition.at), end)
    segments.push({ from: cursor, to: at, state })
    state = transition.to
    cursor = at
  }
  segments.push({ from: cursor, to: end, state })

  const bar = $("timeline")
  bar.replaceChildren(
    ...segments
      .filter((s) => s.to > s.from || s === segments.at(-1))
      .map((s) => {
        const segment = el("span", `segment ${stateLabels[s.state]}`)
        segment.style.flexGrow = String(Math.max(s.to - s.from, 1))
        segment.title = `${stateLabels[s.state]} ${clock(s.from)}–${clock(s.to)} (${duration(s.to - s.from)})`
        return segment
      })
  )
  const shown = end - begin
  $("timeline-range").textContent = shown >= TIMELINE_MILLIS ? "last 5 minutes" : `since start, ${duration(shown)}`
  $("timeline-start").textContent = clock(begin)
  $("timeline-end").textContent = `now ${clock(end)}`

  const list = $("transitions")
  const recent = transitions.slice(-TRANSITIONS_SHOWN).reverse()
  if (recent.length === 0) {
    list.replaceChildren(el("li", "muted", `No transition since ${clock(snapshot.startedAt)}.`))
    return
  }
  list.replaceChildren(
    ...recent.map((t) => {
      const item = el("li")
      item.append(
        el("time", "at", clock(t.at)),
        el("span", `pill ${stateLabels[t.from]}`, stateLabels[t.from]),
        el("span", "arrow", "→"),
        el("span", `pill ${stateLabels[t.to]}`, stateLabels[t.to])
      )
      if (t.retryAfterMillis !== undefined)
        item.append(el("span", "muted", `probe after ${duration(t.retryAfterMillis)}`))
      return item
    })
  )
}

/** @param {Snapshot["health"]} health */
const renderHealth = (health) => {
  const dots = health.history.slice(-HEALTH_SHOWN).map((entry) => {
    const dot = el("span", `dot ${entry.status}`)
    const time = entry.responseTimeMillis === undefined ? "" : `, ${millis(entry.responseTimeMillis)}`
    const error = entry.error === undefined ? "" : ` — ${entry.error}`
    dot.title = `${clock(entry.at)} ${entry.status}${time}${error}`
    return dot
  })
  const box = $("health")
  if (dots.length === 0) box.replaceChildren(el("span", "muted", "No health check yet."))
  else box.replaceChildren(...dots)
  const shown = health.history.slice(-HEALTH_SHOWN)
  const healthy = shown.filter((entry) => entry.status === "healthy")
  const times = healthy.flatMap((entry) => (entry.responseTimeMillis === undefined ? [] : [entry.responseTimeMillis]))
  const mean = times.length === 0 ? "" : ` · mean ${millis(times.reduce((a, b) => a + b, 0) / times.length)}`
  $("health-summary").textContent =
    shown.length === 0
      ? ""
      : `last ${shown.length} checks: ${healthy.length} healthy, ${shown.length - healthy.length} unhealthy${mean}`
  const last = health.last
  $("health-last").textContent =
    last === undefined || last === null
      ? ""
      : `last ${clock(last.at)}: ${last.status}${
          last.responseTimeMillis === undefined ? "" : `, ${millis(last.responseTimeMillis)}`
        }`
}

/** @param {Snapshot} snapshot */
const renderCounters = (snapshot) => {
  const { metrics, transactions } = snapshot
  /** @type {Array<[string, number | undefined, boolean]>} */
  const rows = [
    ["statements", metrics.totalQueries, false],
    ["failed", metrics.failedQueries, metrics.failedQueries > 0],
    ["attempts", metrics.attempts, false],
    ["retries", metrics.retries, false],
    ["timeouts", metrics.timeouts, metrics.timeouts > 0],
    ["rejected by the breaker", metrics.rejections, metrics.rejections > 0],
    ["outcome unknown", metrics.outcomeUnknown, metrics.outcomeUnknown > 0],
    ["transactions", transactions.started, false],
    ["transaction retries", transactions.retries, false],
    ["commits in doubt", transactions.commitsInDoubt, (transactions.commitsInDoubt ?? 0) > 0]
  ]
  $("counters").replaceChildren(
    ...rows.flatMap(([label, value, warn]) => [
      el("dt", undefined, label),
      el("dd", warn ? "warn" : undefined, value === undefined ? "—" : count(value))
    ])
  )
}

/** @param {ReadonlyArray<Statement>} statements */
const renderStatements = (statements) => {
  const rows = statements.slice(0, STATEMENTS_SHOWN).map((s) => {
    const row = el("tr")
    const fingerprint = el("td", "fingerprint")
    const code = el("code", undefined, s.fingerprint)
    code.title = s.fingerprint
    fingerprint.append(code)
    row.append(
      fingerprint,
      el("td", "num", count(s.calls)),
      el("td", s.errors > 0 ? "num warn" : "num", count(s.errors)),
      el("td", "num", millis(s.meanMillis)),
      el("td", "num", millis(s.p95Millis)),
      el("td", s.lastErrorReason ? "reason" : "muted", s.lastErrorReason ?? "—")
    )
    return row
  })
  $("statements").replaceChildren(...rows)
  $("statements-empty").hidden = rows.length > 0
}

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault()
  const input = /** @type {HTMLInputElement} */ ($("token-input"))
  const value = input.value.trim()
  if (value === "") return
  input.value = ""
  sessionStorage.setItem(TOKEN_KEY, value)
  start(value)
})

const first = initialToken()
if (first === null)
  askForToken("This page needs the admin token (STURDY_ADMIN_TOKEN). It is kept in this tab only.", false)
else start(first)
