/**
 * The client's numbers (calls, failures, latency, breaker, health, pool), as Effect metrics and as
 * one snapshot.
 *
 * **Details**
 *
 * The client writes plain counters and a latency histogram (`Recorder`) on
 * its hot path: an increment costs a nanosecond, where `Metric.update` costs
 * 100-200 ns, several times per call. Effect metrics are registered with
 * `Metric.registerUnsafe` and read those counters whenever a snapshot or an
 * exporter (`PrometheusMetrics`) asks, so they are exact and free until read.
 *
 * `metrics` lists every metric, its type, labels and meaning.
 *
 * **Gotchas**
 *
 * Labels are fixed and low-cardinality: no SQL text, parameter, key or host
 * ever becomes a label. Two clients in one registry would report the same
 * series; give each its own `Metric.CurrentMetricAttributes` (say
 * `{ database: "orders" }`) when you run several.
 *
 * @since 0.1.0
 */
import { Clock, Context, Effect, Metric, type Scope, Stream } from "effect"
import type { State, Transition } from "./Breaker.ts"
import type { HealthCheckResult } from "./HealthMonitor.ts"
import type { RetryBudget } from "./RetryBudget.ts"

// -----------------------------------------------------------------------------
// Latency histogram
// -----------------------------------------------------------------------------

const growth = 1.05
const smallest = 0.01
const bucketCount = 340
const logGrowth = Math.log(growth)
// The bucket of the last latency recorded: a statement's latency goes to the client's histogram and then to its
// entry's in the statement table, and the logarithm is computed once for both.
let lastMillis = Number.NaN
let lastIndex = 0

/**
 * A log-scale histogram of milliseconds: buckets 5% wide from 0.01 ms to
 * beyond two minutes, so a percentile is within 5% of the true value.
 *
 * @since 0.1.0
 * @category models
 */
export class LatencyHistogram {
  readonly counts = new Uint32Array(bucketCount)
  count = 0
  sum = 0
  min = Number.POSITIVE_INFINITY
  max = 0

  record(millis: number): void {
    let index: number
    if (millis === lastMillis) index = lastIndex
    else {
      index = millis <= smallest ? 0 : Math.min(bucketCount - 1, Math.ceil(Math.log(millis / smallest) / logGrowth))
      lastMillis = millis
      lastIndex = index
    }
    this.counts[index]!++
    this.count++
    this.sum += millis
    if (millis < this.min) this.min = millis
    if (millis > this.max) this.max = millis
  }

  /** The upper bound of the bucket holding the `q` quantile (0 when empty), never above the maximum seen. */
  quantile(q: number): number {
    if (this.count === 0) return 0
    const rank = Math.max(1, Math.ceil(q * this.count))
    let seen = 0
    for (let i = 0; i < bucketCount; i++) {
      seen += this.counts[i]!
      if (seen >= rank) return Math.min(this.max, smallest * growth ** i)
    }
    return this.max
  }

  /** Cumulative counts at the given boundaries, in effect's `HistogramState` shape. */
  cumulative(boundaries: ReadonlyArray<number>): Array<[number, number]> {
    const out: Array<[number, number]> = []
    let i = 0
    let seen = 0
    for (const boundary of boundaries) {
      while (i < bucketCount && smallest * growth ** i <= boundary) seen += this.counts[i++]!
      out.push([boundary, seen])
    }
    return out
  }
}

// -----------------------------------------------------------------------------
// Recorder
// -----------------------------------------------------------------------------

/**
 * What the client writes on its hot path. Plain fields, no effects.
 *
 * @since 0.1.0
 * @category models
 */
export class Recorder {
  /** Calls (statements outside transactions, and acquisitions of a connection for one). */
  statements = 0
  failed = 0
  attempts = 0
  retries = 0
  timeouts = 0
  rejections = 0
  outcomeUnknown = 0
  /** Infrastructure failures in a row across attempts; reset by any answer from the server. */
  consecutiveFailures = 0
  readonly latency = new LatencyHistogram()
  readonly transitions = new Map<string, number>()
  /** The client's retry budget, read by its metrics; `undefined` when retries are not budgeted. */
  retryBudget: RetryBudget | undefined = undefined

  recordTransition(transition: Transition): void {
    const key = `${transition.from}->${transition.to}`
    this.transitions.set(key, (this.transitions.get(key) ?? 0) + 1)
  }
}

// -----------------------------------------------------------------------------
// Snapshot
// -----------------------------------------------------------------------------

/**
 * The connection pool right now. `open` and `idle` are `undefined` when the
 * client cannot count the pool's sockets (a custom `stream`, a unix socket).
 *
 * @since 0.1.0
 * @category models
 */
export interface PoolStats {
  readonly max: number
  readonly open: number | undefined
  readonly inUse: number
  readonly idle: number | undefined
  /** Calls waiting for a connection. */
  readonly waiting: number
}

/**
 * Counts, latency percentiles, attempts, the breaker, health and the pool.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  readonly totalQueries: number
  readonly failedQueries: number
  /** Mean call latency in milliseconds, retries included. */
  readonly avgResponseTime: number
  readonly circuitState: State["_tag"]
  /** Failed attempts in a row (the breaker's streak under a consecutive policy). */
  readonly failureCount: number
  readonly lastHealthCheck: HealthCheckResult | undefined
  /** Percentage of calls that succeeded; 100 before the first call. */
  readonly successRate: number
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly attempts: number
  readonly retries: number
  readonly timeouts: number
  readonly rejections: number
  readonly outcomeUnknown: number
  readonly breakerTransitions: Readonly<Record<string, number>>
  readonly pool: PoolStats
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly snapshot: Effect.Effect<Snapshot>
}

/**
 * @since 0.1.0
 * @category services
 */
export class DatabaseMetrics extends Context.Service<DatabaseMetrics, Service>()(
  "@sturdy/resilience/DatabaseMetrics"
) {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Sources {
  readonly recorder: Recorder
  readonly breakerState: Effect.Effect<State>
  /** Counted into the recorder and the state gauge as they happen. */
  readonly transitions: Stream.Stream<Transition>
  readonly lastHealthCheck: Effect.Effect<HealthCheckResult | undefined>
  readonly healthChanges: Stream.Stream<HealthCheckResult>
  readonly pool: () => PoolStats
}

/** Boundaries (ms) of the exported histogram; the recorder keeps finer buckets. */
const exportedBoundaries = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, Infinity]

/**
 * Reads the sources into one snapshot.
 *
 * @since 0.1.0
 * @category constructors
 */
export const snapshot = (sources: Sources): Effect.Effect<Snapshot> =>
  Effect.gen(function* () {
    const r = sources.recorder
    const state = yield* sources.breakerState
    const lastHealthCheck = yield* sources.lastHealthCheck
    return {
      totalQueries: r.statements,
      failedQueries: r.failed,
      avgResponseTime: r.latency.count === 0 ? 0 : r.latency.sum / r.latency.count,
      circuitState: state._tag,
      failureCount: r.consecutiveFailures,
      lastHealthCheck,
      successRate: r.statements === 0 ? 100 : ((r.statements - r.failed) / r.statements) * 100,
      p50: r.latency.quantile(0.5),
      p95: r.latency.quantile(0.95),
      p99: r.latency.quantile(0.99),
      attempts: r.attempts,
      retries: r.retries,
      timeouts: r.timeouts,
      rejections: r.rejections,
      outcomeUnknown: r.outcomeUnknown,
      breakerTransitions: Object.fromEntries(r.transitions),
      pool: sources.pool()
    }
  })

/**
 * Every metric `make` registers, as data: `make` takes each description from
 * here, and the README's metrics table is made from it.
 *
 * @since 0.1.0
 * @category models
 */
export const metrics: ReadonlyArray<{
  readonly name: string
  readonly type: "counter" | "gauge" | "histogram"
  readonly labels: ReadonlyArray<string>
  readonly description: string
}> = [
  { name: "sturdy_statements_total", type: "counter", labels: [], description: "Calls through the policies" },
  { name: "sturdy_statements_failed_total", type: "counter", labels: [], description: "Calls that failed" },
  { name: "sturdy_attempts_total", type: "counter", labels: [], description: "Attempts, retries included" },
  { name: "sturdy_retries_total", type: "counter", labels: [], description: "Retries" },
  {
    name: "sturdy_attempt_timeouts_total",
    type: "counter",
    labels: [],
    description: "Attempts that hit the attempt timeout"
  },
  {
    name: "sturdy_breaker_rejections_total",
    type: "counter",
    labels: [],
    description: "Calls rejected by the open circuit"
  },
  { name: "sturdy_outcome_unknown_total", type: "counter", labels: [], description: "Writes whose outcome is unknown" },
  {
    name: "sturdy_retry_budget_refused_total",
    type: "counter",
    labels: [],
    description: "Retries the retry budget refused (the call failed with RetryBudgetExhausted)"
  },
  {
    name: "sturdy_retry_budget_tokens",
    type: "gauge",
    labels: [],
    description: "Retries the retry budget would allow now (0 when it is off)"
  },
  {
    name: "sturdy_statement_duration_ms",
    type: "histogram",
    labels: [],
    description: "Call latency in milliseconds, retries included"
  },
  {
    name: "sturdy_breaker_state",
    type: "gauge",
    labels: ["state"],
    description: "1 for the breaker's current state"
  },
  {
    name: "sturdy_breaker_transitions_total",
    type: "counter",
    labels: ["from", "to"],
    description: "Breaker transitions"
  },
  {
    name: "sturdy_health_status",
    type: "gauge",
    labels: [],
    description: "1 when the last health check was healthy, 0 when not"
  },
  { name: "sturdy_pool_in_use", type: "gauge", labels: [], description: "Connections in use" },
  { name: "sturdy_pool_idle", type: "gauge", labels: [], description: "Open connections not in use" },
  { name: "sturdy_pool_waiting", type: "gauge", labels: [], description: "Calls waiting for a connection" }
]

const descriptionOf = (name: string): string => {
  const entry = metrics.find((metric) => metric.name === name)
  if (entry === undefined) throw new Error(`DatabaseMetrics: ${name} is missing from metrics`)
  return entry.description
}

/**
 * The snapshot service, and the Effect metrics of `metrics`
 * registered in the current `Metric.MetricRegistry` until the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (sources: Sources): Effect.fn.Return<Service, never, Scope.Scope> {
  const context = yield* Effect.context<never>()
  const clock = yield* Clock.Clock
  const r = sources.recorder
  // The gauges read the latest state and health, kept current by following their streams.
  let state: State["_tag"] = (yield* sources.breakerState)._tag
  const initialHealth = yield* sources.lastHealthCheck
  let healthy = initialHealth === undefined ? 0 : initialHealth.status === "healthy" ? 1 : 0
  yield* Effect.forkScoped(
    Stream.runForEach(sources.transitions, (transition) =>
      Effect.sync(() => {
        r.recordTransition(transition)
        state = transition.to
      })
    ),
    { startImmediately: true }
  )
  yield* Effect.forkScoped(
    Stream.runForEach(sources.healthChanges, (result) =>
      Effect.sync(() => {
        healthy = result.status === "healthy" ? 1 : 0
      })
    ),
    { startImmediately: true }
  )

  const registrations: Array<Metric.Registration> = []
  const counter = (name: string, read: () => number, attributes?: Record<string, string>) => {
    const description = descriptionOf(name)
    const metric =
      attributes === undefined
        ? Metric.counter(name, { description })
        : Metric.counter(name, { description, attributes })
    registrations.push(
      Metric.registerUnsafe(metric, context, {
        get: () => ({ count: read(), incremental: true }),
        update: () => {},
        modify: () => {}
      })
    )
  }
  const gauge = (name: string, read: () => number, attributes?: Record<string, string>) => {
    const description = descriptionOf(name)
    const metric =
      attributes === undefined ? Metric.gauge(name, { description }) : Metric.gauge(name, { description, attributes })
    registrations.push(
      Metric.registerUnsafe(metric, context, {
        get: () => ({ value: read() }),
        update: () => {},
        modify: () => {}
      })
    )
  }

  counter("sturdy_statements_total", () => r.statements)
  counter("sturdy_statements_failed_total", () => r.failed)
  counter("sturdy_attempts_total", () => r.attempts)
  counter("sturdy_retries_total", () => r.retries)
  counter("sturdy_attempt_timeouts_total", () => r.timeouts)
  counter("sturdy_breaker_rejections_total", () => r.rejections)
  counter("sturdy_outcome_unknown_total", () => r.outcomeUnknown)
  counter("sturdy_retry_budget_refused_total", () => r.retryBudget?.refused ?? 0)
  gauge("sturdy_retry_budget_tokens", () => r.retryBudget?.available(clock.currentTimeMillisUnsafe()) ?? 0)
  for (const [from, to] of [
    ["Closed", "Open"],
    ["Open", "HalfOpen"],
    ["HalfOpen", "Closed"],
    ["HalfOpen", "Open"]
  ]) {
    counter("sturdy_breaker_transitions_total", () => r.transitions.get(`${from}->${to}`) ?? 0, {
      from: from!,
      to: to!
    })
  }
  for (const tag of ["Closed", "Open", "HalfOpen"] as const) {
    gauge("sturdy_breaker_state", () => (state === tag ? 1 : 0), {
      state: tag
    })
  }
  gauge("sturdy_health_status", () => healthy)
  gauge("sturdy_pool_in_use", () => sources.pool().inUse)
  gauge("sturdy_pool_idle", () => sources.pool().idle ?? 0)
  gauge("sturdy_pool_waiting", () => sources.pool().waiting)
  registrations.push(
    Metric.registerUnsafe(
      Metric.histogram("sturdy_statement_duration_ms", {
        description: descriptionOf("sturdy_statement_duration_ms"),
        boundaries: exportedBoundaries
      }),
      context,
      {
        get: () => ({
          buckets: r.latency.cumulative(exportedBoundaries),
          count: r.latency.count,
          min: r.latency.count === 0 ? 0 : r.latency.min,
          max: r.latency.max,
          sum: r.latency.sum
        }),
        update: () => {},
        modify: () => {}
      }
    )
  )
  yield* Effect.addFinalizer(() => Effect.sync(() => registrations.forEach((registration) => registration.remove())))

  return { snapshot: snapshot(sources) }
})
