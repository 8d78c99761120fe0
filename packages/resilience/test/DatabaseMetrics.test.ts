import { assert, describe, it } from "@effect/vitest"
import { type Breaker, DatabaseMetrics, HealthMonitor, RetryBudget } from "@sturdy/resilience"
import { Duration, Effect, Metric, Queue, Ref, Stream } from "effect"

const key = "db.internal:5432/app"

// The upper bounds of the 5%-wide buckets (0.01 ms × 1.05^i) that hold the values used below.
const bucketOf1 = 1.0303467644609494 // (0.981, 1.030]
const bucketOf11 = 11.25276025336334 // (10.717, 11.253]
const bucketOf20 = 20.208340686212942 // (19.246, 20.208]

const closed: Breaker.State = { _tag: "Closed", key }
const open: Breaker.State = { _tag: "Open", key, retryAfter: Duration.seconds(1), consecutiveOpenings: 1 }
const halfOpen: Breaker.State = { _tag: "HalfOpen", key, probing: true, consecutiveOpenings: 1 }

const opened: Breaker.Transition = {
  key,
  from: "Closed",
  to: "Open",
  retryAfter: Duration.seconds(1),
  consecutiveOpenings: 1
}
const probing: Breaker.Transition = { key, from: "Open", to: "HalfOpen" }
const reclosed: Breaker.Transition = { key, from: "HalfOpen", to: "Closed" }
const reopened: Breaker.Transition = {
  key,
  from: "HalfOpen",
  to: "Open",
  retryAfter: Duration.seconds(2),
  consecutiveOpenings: 2
}

const healthy = new HealthMonitor.HealthCheckResult({ status: "healthy", responseTime: 3, timestamp: new Date(0) })
const unhealthy = new HealthMonitor.HealthCheckResult({
  status: "unhealthy",
  timestamp: new Date(1_000),
  error: "ConnectionRefused"
})

const pool: DatabaseMetrics.PoolStats = { max: 10, open: 4, inUse: 3, idle: 1, waiting: 2 }

/**
 * A stream fed by the test: `push` hands one element to the consumer and returns once the consumer has handled
 * it (asked for the next one), so the effect of each element can be asserted without waiting on time.
 */
const fed = Effect.fnUntraced(function* <A>() {
  const input = yield* Queue.unbounded<A>()
  const handled = yield* Queue.unbounded<void>()
  let first = true
  const stream = Stream.fromEffectRepeat(
    Effect.suspend(() => {
      const acknowledge = first ? Effect.void : Queue.offer(handled, undefined)
      first = false
      return Effect.andThen(acknowledge, Queue.take(input))
    })
  )
  const push = (value: A) => Effect.andThen(Queue.offer(input, value), Queue.take(handled))
  return { stream, push }
})

const fixedSources = (recorder: DatabaseMetrics.Recorder, state: Breaker.State = closed): DatabaseMetrics.Sources => ({
  recorder,
  breakerState: Effect.succeed(state),
  transitions: Stream.empty,
  lastHealthCheck: Effect.succeed(healthy),
  healthChanges: Stream.empty,
  pool: () => pool
})

describe("DatabaseMetrics.LatencyHistogram", () => {
  it("empty: count, sum and every quantile are 0, every cumulative count is 0", () => {
    const histogram = new DatabaseMetrics.LatencyHistogram()
    assert.deepStrictEqual(
      [histogram.count, histogram.sum, histogram.max, histogram.quantile(0.5), histogram.quantile(0.99)],
      [0, 0, 0, 0, 0]
    )
    assert.deepStrictEqual(histogram.cumulative([1, 10, Infinity]), [
      [1, 0],
      [10, 0],
      [Infinity, 0]
    ])
  })

  it("1..20 ms and one 100 ms call: count, sum, min, max, and each quantile the upper bound of its value's bucket, never above the maximum", () => {
    const histogram = new DatabaseMetrics.LatencyHistogram()
    for (let millis = 1; millis <= 20; millis++) histogram.record(millis)
    histogram.record(100)
    assert.deepStrictEqual([histogram.count, histogram.sum, histogram.min, histogram.max], [21, 310, 1, 100])
    // 21 values: p50 is the 11th (11 ms), p95 the 20th (20 ms), p99 the 21st (100 ms, whose bucket ends at 101.1).
    assert.strictEqual(histogram.quantile(0.5), bucketOf11)
    assert.strictEqual(histogram.quantile(0.95), bucketOf20)
    assert.strictEqual(histogram.quantile(0.99), 100)
    // The lowest quantile is the bound of the lowest bucket, a little above the minimum; the highest is capped at it.
    assert.strictEqual(histogram.quantile(0), bucketOf1)
    assert.strictEqual(histogram.quantile(1), 100)
  })

  it("a quantile is within 5% above the true value, from 0.02 ms to two minutes", () => {
    for (let millis = 0.02; millis < 120_000; millis *= 1.37) {
      const histogram = new DatabaseMetrics.LatencyHistogram()
      histogram.record(millis)
      histogram.record(millis * 10)
      const p50 = histogram.quantile(0.5)
      assert.isTrue(millis <= p50 && p50 < millis * 1.05, `p50 of [${millis}, ${millis * 10}] was ${p50}`)
    }
  })

  it("values at or below 0.01 ms share the first bucket", () => {
    const histogram = new DatabaseMetrics.LatencyHistogram()
    histogram.record(0)
    histogram.record(0.005)
    histogram.record(0.01)
    assert.deepStrictEqual(histogram.counts.slice(0, 2), new Uint32Array([3, 0]))
    assert.strictEqual(histogram.quantile(0.5), 0.01)
    assert.strictEqual(histogram.min, 0)
  })

  it("cumulative counts at the boundaries, in effect's HistogramState shape, Infinity counting everything", () => {
    const histogram = new DatabaseMetrics.LatencyHistogram()
    for (const millis of [0.5, 3, 7, 40, 400, 4000]) histogram.record(millis)
    assert.deepStrictEqual(histogram.cumulative([1, 2, 5, 10, 50, 100, 1000, Infinity]), [
      [1, 1],
      [2, 1],
      [5, 2],
      [10, 3],
      [50, 4],
      [100, 4],
      [1000, 5],
      [Infinity, 6]
    ])
  })
})

describe("DatabaseMetrics.Recorder", () => {
  it("counts transitions by from->to", () => {
    const recorder = new DatabaseMetrics.Recorder()
    for (const transition of [opened, probing, reopened, probing, reclosed]) recorder.recordTransition(transition)
    assert.deepStrictEqual(Object.fromEntries(recorder.transitions), {
      "Closed->Open": 1,
      "Open->HalfOpen": 2,
      "HalfOpen->Open": 1,
      "HalfOpen->Closed": 1
    })
  })
})

describe("DatabaseMetrics.snapshot", () => {
  it.effect("before the first call: no queries, success rate 100, latencies 0", () =>
    Effect.gen(function* () {
      const snapshot = yield* DatabaseMetrics.snapshot(fixedSources(new DatabaseMetrics.Recorder()))
      assert.deepStrictEqual(snapshot, {
        totalQueries: 0,
        failedQueries: 0,
        avgResponseTime: 0,
        circuitState: "Closed",
        failureCount: 0,
        lastHealthCheck: healthy,
        successRate: 100,
        p50: 0,
        p95: 0,
        p99: 0,
        attempts: 0,
        retries: 0,
        timeouts: 0,
        rejections: 0,
        outcomeUnknown: 0,
        breakerTransitions: {},
        pool
      })
    })
  )

  it.effect("10 calls, 2 failed, latencies 10, 20, 30 and 40 ms: every figure of the snapshot", () =>
    Effect.gen(function* () {
      const recorder = new DatabaseMetrics.Recorder()
      Object.assign(recorder, {
        statements: 10,
        failed: 2,
        attempts: 13,
        retries: 3,
        timeouts: 1,
        rejections: 4,
        outcomeUnknown: 1,
        consecutiveFailures: 2
      })
      for (const millis of [10, 20, 30, 40]) recorder.latency.record(millis)
      recorder.recordTransition(opened)
      recorder.recordTransition(probing)
      const snapshot = yield* DatabaseMetrics.snapshot(fixedSources(recorder, halfOpen))
      assert.deepStrictEqual(snapshot, {
        totalQueries: 10,
        failedQueries: 2,
        avgResponseTime: 25,
        circuitState: "HalfOpen",
        failureCount: 2,
        lastHealthCheck: healthy,
        successRate: 80,
        // 4 values: p50 is the 2nd (20 ms); p95 and p99 the 4th (40 ms, the maximum).
        p50: bucketOf20,
        p95: 40,
        p99: 40,
        attempts: 13,
        retries: 3,
        timeouts: 1,
        rejections: 4,
        outcomeUnknown: 1,
        breakerTransitions: { "Closed->Open": 1, "Open->HalfOpen": 1 },
        pool
      })
    })
  )

  it.effect("names each breaker state as the seed did", () =>
    Effect.gen(function* () {
      const names: Array<string> = []
      for (const state of [closed, open, halfOpen]) {
        names.push((yield* DatabaseMetrics.snapshot(fixedSources(new DatabaseMetrics.Recorder(), state))).circuitState)
      }
      assert.deepStrictEqual(names, ["Closed", "Open", "HalfOpen"])
    })
  )

  it.effect("reads the sources at each call: a snapshot is not a cached value", () =>
    Effect.gen(function* () {
      const recorder = new DatabaseMetrics.Recorder()
      const state = yield* Ref.make<Breaker.State>(closed)
      const last = yield* Ref.make<HealthMonitor.HealthCheckResult | undefined>(undefined)
      let poolNow = pool
      const sources: DatabaseMetrics.Sources = {
        ...fixedSources(recorder),
        breakerState: Ref.get(state),
        lastHealthCheck: Ref.get(last),
        pool: () => poolNow
      }
      const before = yield* DatabaseMetrics.snapshot(sources)
      recorder.statements = 1
      recorder.latency.record(7)
      yield* Ref.set(state, open)
      yield* Ref.set(last, unhealthy)
      poolNow = { ...pool, inUse: 10, waiting: 5 }
      const after = yield* DatabaseMetrics.snapshot(sources)
      assert.deepStrictEqual(
        [before.totalQueries, before.avgResponseTime, before.circuitState, before.lastHealthCheck, before.pool.inUse],
        [0, 0, "Closed", undefined, 3]
      )
      assert.deepStrictEqual(
        [after.totalQueries, after.avgResponseTime, after.circuitState, after.lastHealthCheck, after.pool],
        [1, 7, "Open", unhealthy, { max: 10, open: 4, inUse: 10, idle: 1, waiting: 5 }]
      )
    })
  )
})

type Series = Metric.Metric.Snapshot

const seriesName = (series: Series) =>
  `${series.id}${series.attributes === undefined ? "" : JSON.stringify(series.attributes)}`

/** Every series in the registry, by name and attributes, with its state. */
const readSeries = Effect.map(Metric.snapshot, (all) =>
  Object.fromEntries(all.map((series) => [seriesName(series), series.state as unknown]))
)

describe("DatabaseMetrics.make", () => {
  it.effect("registers the documented series, with these labels only, reading the recorder when read", () =>
    Effect.gen(function* () {
      const registry: Metric.MetricRegistry = new Map()
      const recorder = new DatabaseMetrics.Recorder()
      const series = yield* Effect.gen(function* () {
        yield* DatabaseMetrics.make(fixedSources(recorder))
        // Written after make, as the client does on its hot path: no update reaches the registry, it reads.
        Object.assign(recorder, {
          statements: 5,
          failed: 1,
          attempts: 7,
          retries: 2,
          timeouts: 1,
          rejections: 3,
          outcomeUnknown: 1
        })
        // A budget spent, one retry refused, and five successes since (at the TestClock's time 0).
        const budget = RetryBudget.make({ ratio: 0.1, minRetriesPerSecond: 0 }, 0)
        while (budget.tryAcquire(0)) {}
        for (let i = 0; i < 5; i++) budget.deposit()
        recorder.retryBudget = budget
        for (const millis of [0.5, 3, 7, 40, 400]) recorder.latency.record(millis)
        return yield* readSeries
      }).pipe(Effect.scoped, Effect.provideService(Metric.MetricRegistry, registry))
      const counter = (count: number) => ({ count, incremental: true })
      assert.deepStrictEqual(series, {
        sturdy_statements_total: counter(5),
        sturdy_statements_failed_total: counter(1),
        sturdy_attempts_total: counter(7),
        sturdy_retries_total: counter(2),
        sturdy_attempt_timeouts_total: counter(1),
        sturdy_breaker_rejections_total: counter(3),
        sturdy_outcome_unknown_total: counter(1),
        sturdy_retry_budget_refused_total: counter(1),
        sturdy_retry_budget_tokens: { value: 0.5 },
        'sturdy_breaker_transitions_total{"from":"Closed","to":"Open"}': counter(0),
        'sturdy_breaker_transitions_total{"from":"Open","to":"HalfOpen"}': counter(0),
        'sturdy_breaker_transitions_total{"from":"HalfOpen","to":"Closed"}': counter(0),
        'sturdy_breaker_transitions_total{"from":"HalfOpen","to":"Open"}': counter(0),
        'sturdy_breaker_state{"state":"Closed"}': { value: 1 },
        'sturdy_breaker_state{"state":"Open"}': { value: 0 },
        'sturdy_breaker_state{"state":"HalfOpen"}': { value: 0 },
        sturdy_health_status: { value: 1 },
        sturdy_pool_in_use: { value: 3 },
        sturdy_pool_idle: { value: 1 },
        sturdy_pool_waiting: { value: 2 },
        sturdy_statement_duration_ms: {
          buckets: [
            [1, 1],
            [2, 1],
            [5, 2],
            [10, 3],
            [25, 3],
            [50, 4],
            [100, 4],
            [250, 4],
            [500, 5],
            [1000, 5],
            [2500, 5],
            [5000, 5],
            [10000, 5],
            [30000, 5],
            [60000, 5],
            [Infinity, 5]
          ],
          count: 5,
          min: 0.5,
          max: 400,
          sum: 450.5
        }
      })
      // The scope closed: every series is gone.
      assert.strictEqual(registry.size, 0)
    })
  )

  it.effect("with no call yet the histogram's min is 0, and an unknown pool idle count reads 0", () =>
    Effect.gen(function* () {
      const series = yield* Effect.gen(function* () {
        yield* DatabaseMetrics.make({
          ...fixedSources(new DatabaseMetrics.Recorder()),
          pool: () => ({ max: 10, open: undefined, inUse: 0, idle: undefined, waiting: 0 })
        })
        return yield* readSeries
      }).pipe(Effect.scoped, Effect.provideService(Metric.MetricRegistry, new Map()))
      const histogram = series.sturdy_statement_duration_ms as Metric.HistogramState
      assert.deepStrictEqual([histogram.count, histogram.min, histogram.max, histogram.sum], [0, 0, 0, 0])
      assert.deepStrictEqual(series.sturdy_pool_idle, { value: 0 })
    })
  )

  it.effect("follows the transitions and health streams: state gauge, transition counters and health gauge", () =>
    Effect.gen(function* () {
      const transitions = yield* fed<Breaker.Transition>()
      const health = yield* fed<HealthMonitor.HealthCheckResult>()
      const recorder = new DatabaseMetrics.Recorder()
      yield* Effect.gen(function* () {
        yield* DatabaseMetrics.make({
          ...fixedSources(recorder),
          breakerState: Effect.succeed(closed),
          lastHealthCheck: Effect.succeed(undefined),
          transitions: transitions.stream,
          healthChanges: health.stream
        })
        const gauges = Effect.map(readSeries, (series) => ({
          closed: series['sturdy_breaker_state{"state":"Closed"}'],
          open: series['sturdy_breaker_state{"state":"Open"}'],
          halfOpen: series['sturdy_breaker_state{"state":"HalfOpen"}'],
          healthy: series.sturdy_health_status
        }))
        const one = { value: 1 }
        const zero = { value: 0 }
        // No health result yet: not healthy.
        assert.deepStrictEqual(yield* gauges, { closed: one, open: zero, halfOpen: zero, healthy: zero })
        yield* transitions.push(opened)
        yield* health.push(unhealthy)
        assert.deepStrictEqual(yield* gauges, { closed: zero, open: one, halfOpen: zero, healthy: zero })
        yield* transitions.push(probing)
        assert.deepStrictEqual(yield* gauges, { closed: zero, open: zero, halfOpen: one, healthy: zero })
        yield* transitions.push(reopened)
        yield* transitions.push(probing)
        yield* transitions.push(reclosed)
        yield* health.push(healthy)
        assert.deepStrictEqual(yield* gauges, { closed: one, open: zero, halfOpen: zero, healthy: one })
        const counts = Effect.map(readSeries, (series) =>
          Object.fromEntries(
            Object.entries(series)
              .filter(([name]) => name.startsWith("sturdy_breaker_transitions_total"))
              .map(([name, state]) => [name.slice("sturdy_breaker_transitions_total".length), state])
          )
        )
        assert.deepStrictEqual(yield* counts, {
          '{"from":"Closed","to":"Open"}': { count: 1, incremental: true },
          '{"from":"Open","to":"HalfOpen"}': { count: 2, incremental: true },
          '{"from":"HalfOpen","to":"Closed"}': { count: 1, incremental: true },
          '{"from":"HalfOpen","to":"Open"}': { count: 1, incremental: true }
        })
      }).pipe(Effect.scoped, Effect.provideService(Metric.MetricRegistry, new Map()))
      // The recorder counted the transitions too, for the snapshot.
      assert.deepStrictEqual(Object.fromEntries(recorder.transitions), {
        "Closed->Open": 1,
        "Open->HalfOpen": 2,
        "HalfOpen->Open": 1,
        "HalfOpen->Closed": 1
      })
    })
  )

  it.effect("the initial state and health come from the sources", () =>
    Effect.gen(function* () {
      const series = yield* Effect.gen(function* () {
        yield* DatabaseMetrics.make({ ...fixedSources(new DatabaseMetrics.Recorder(), open) })
        return yield* readSeries
      }).pipe(Effect.scoped, Effect.provideService(Metric.MetricRegistry, new Map()))
      assert.deepStrictEqual(
        [
          series['sturdy_breaker_state{"state":"Closed"}'],
          series['sturdy_breaker_state{"state":"Open"}'],
          series.sturdy_health_status
        ],
        [{ value: 0 }, { value: 1 }, { value: 1 }]
      )
    })
  )

  it.effect("two clients with their own CurrentMetricAttributes keep separate series in one registry", () =>
    Effect.gen(function* () {
      const registry: Metric.MetricRegistry = new Map()
      const orders = new DatabaseMetrics.Recorder()
      const users = new DatabaseMetrics.Recorder()
      orders.statements = 3
      users.statements = 8
      const series = yield* Effect.gen(function* () {
        yield* DatabaseMetrics.make(fixedSources(orders)).pipe(
          Effect.provideService(Metric.CurrentMetricAttributes, { database: "orders" })
        )
        yield* DatabaseMetrics.make(fixedSources(users)).pipe(
          Effect.provideService(Metric.CurrentMetricAttributes, { database: "users" })
        )
        return yield* readSeries
      }).pipe(Effect.scoped, Effect.provideService(Metric.MetricRegistry, registry))
      assert.deepStrictEqual(
        [
          series['sturdy_statements_total{"database":"orders"}'],
          series['sturdy_statements_total{"database":"users"}'],
          series['sturdy_breaker_state{"state":"Closed","database":"orders"}']
        ],
        [{ count: 3, incremental: true }, { count: 8, incremental: true }, { value: 1 }]
      )
      // 19 series per client.
      assert.strictEqual(Object.keys(series).length, 42)
      assert.strictEqual(registry.size, 0)
    })
  )
})
