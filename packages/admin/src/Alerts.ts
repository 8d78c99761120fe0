/**
 * Alerts: breaker openings and closings and health transitions of the
 * resilient client, sent to sinks (the log by default, a webhook, any Effect
 * callback), with repeats of one condition merged.
 *
 * **Details**
 *
 * `kinds` lists every alert, when it is sent and its severity.
 *
 * Debouncing: the first alert of a condition goes out at once. Repeats of the
 * same condition within `debounce` of it are merged into one alert sent when
 * the window ends, with `occurrences` counting them. A different condition of
 * the same subject (the breaker closing after it opened) first flushes what
 * was merged and restarts the windows, so delivery order is occurrence order
 * and the last alert always tells the current state.
 *
 * Sending never blocks the database client: each sink has its own bounded
 * queue and fiber; a full queue drops the alert and logs it; a failing sink
 * is logged and the next alert is tried. The alert names the database by
 * `host:port/database`, never by its connection string.
 *
 * **Example** (Log and webhook)
 *
 * ```ts
 * import { Alerts } from "@sturdy/admin"
 * import { Effect, Layer } from "effect"
 * import { FetchHttpClient } from "effect/http"
 *
 * const alerts = Layer.unwrap(
 *   Effect.map(Alerts.webhook({ url: "https://hooks.example.com/T0/B0" }), (hook) =>
 *     Alerts.layer({ sinks: [Alerts.log, hook], debounce: "1 minute" })
 *   )
 * ).pipe(Layer.provide(FetchHttpClient.layer))
 * ```
 *
 * @since 0.1.0
 */
import { ResilientPg } from "@sturdy/pg"
import { HealthMonitor } from "@sturdy/resilience"
import { Clock, Config, Duration, Effect, Layer, Option, Queue, Redacted, Schedule, Schema, Stream } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"

const WEBHOOK_URL = "STURDY_ALERT_WEBHOOK_URL"
const DEBOUNCE = "STURDY_ALERT_DEBOUNCE"
const defaultDebounce = "1 minute"

/**
 * Every alert, as data: when it is sent and its severity. The alerts carry
 * these severities, and the README's alerts table is made from this list.
 *
 * @since 0.1.0
 * @category models
 */
export const kinds = [
  {
    kind: "breaker-opened",
    when: "the breaker opens, after failures or again after a failed probe",
    severity: "critical"
  },
  { kind: "breaker-closed", when: "a probe succeeded: calls flow again", severity: "info" },
  {
    kind: "database-unhealthy",
    when: "a health check fails after a healthy one (or the first check fails)",
    severity: "critical"
  },
  { kind: "database-healthy", when: "a health check succeeds after a failed one", severity: "info" }
] as const

/**
 * @since 0.1.0
 * @category models
 */
export type Kind = (typeof kinds)[number]["kind"]

const severityOf = (kind: Kind): "critical" | "info" => kinds.find((entry) => entry.kind === kind)!.severity

/**
 * What a sink receives; a webhook receives it as its JSON body.
 *
 * @since 0.1.0
 * @category models
 */
export interface Alert {
  readonly kind: Kind
  readonly subject: "breaker" | "health"
  readonly severity: "critical" | "info"
  /** `host:port/database`. */
  readonly database: string
  readonly message: string
  /** When the (latest merged) occurrence was observed, ISO 8601. */
  readonly at: string
  /** When the first merged occurrence was observed; equals `at` when `occurrences` is 1. */
  readonly firstAt: string
  readonly occurrences: number
  readonly details: Readonly<Record<string, string | number>>
}

/**
 * Where alerts go. `send` may fail; the failure is logged, never propagated.
 *
 * @since 0.1.0
 * @category models
 */
export interface Sink {
  readonly name: string
  readonly send: (alert: Alert) => Effect.Effect<void, unknown>
}

/**
 * The default sink: a structured log line starting with `Alert:`, at warning
 * level for critical alerts and info otherwise, annotated with
 * `sturdy.event: "alert"`.
 *
 * @since 0.1.0
 * @category sinks
 */
export const log: Sink = {
  name: "log",
  send: (alert) =>
    // "Alert:" tells it apart from the lifecycle line ResilientPg logs for the same event: this one is the
    // debounced alert, with its occurrences.
    (alert.severity === "critical"
      ? Effect.logWarning(`Alert: ${alert.message}`)
      : Effect.logInfo(`Alert: ${alert.message}`)
    ).pipe(
      Effect.annotateLogs({
        "sturdy.event": "alert",
        "sturdy.alert": alert.kind,
        "sturdy.database": alert.database,
        "sturdy.occurrences": alert.occurrences
      })
    )
}

/**
 * Any Effect as a sink (page someone, write a row, post to a chat).
 *
 * @since 0.1.0
 * @category sinks
 */
export const callback = (name: string, send: (alert: Alert) => Effect.Effect<void, unknown>): Sink => ({ name, send })

/**
 * @since 0.1.0
 * @category models
 */
export interface WebhookOptions {
  /** Where to POST; it may carry a secret (a Slack-style URL), so it is only ever logged as its host. */
  readonly url: string | Redacted.Redacted<string>
  readonly headers?: Readonly<Record<string, string | Redacted.Redacted<string>>> | undefined
  /** Timeout of one POST. Default 5 seconds. */
  readonly timeout?: Duration.Input | undefined
  /** Retries after the first POST fails (network error, 5xx, 429). Default 3, 200 ms doubling. */
  readonly retries?: number | undefined
}

/**
 * The alert is wrong or a sink's options are out of range.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidAlertOptions extends Schema.TaggedError<InvalidAlertOptions>()("InvalidAlertOptions", {
  message: Schema.String
}) {}

/**
 * A webhook failed after its retries. It names the webhook by host only.
 *
 * @since 0.1.0
 * @category errors
 */
export class WebhookFailed extends Schema.TaggedError<WebhookFailed>()("WebhookFailed", {
  host: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `Alert webhook ${this.host} failed: ${this.reason}`
  }
}

/** The host a webhook is logged by, or `undefined` when `url` is not an http:// or https:// URL. */
const webhookHost = (url: string): string | undefined => {
  try {
    const parsed = new URL(url)
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.host : undefined
  } catch {
    return undefined
  }
}

/**
 * A sink that POSTs each alert as JSON through `HttpClient`, with its own
 * timeout and retries.
 *
 * @since 0.1.0
 * @category sinks
 */
export const webhook = Effect.fnUntraced(function* (options: WebhookOptions) {
  const url = Redacted.isRedacted(options.url) ? Redacted.value(options.url) : options.url
  const host = webhookHost(url)
  if (host === undefined) {
    return yield* new InvalidAlertOptions({ message: "Alerts.webhook: url must be an http:// or https:// URL" })
  }
  const retries = options.retries ?? 3
  if (!Number.isInteger(retries) || retries < 0) {
    return yield* new InvalidAlertOptions({
      message: `Alerts.webhook: retries must be an integer >= 0, got ${retries}`
    })
  }
  const timeout = Duration.fromInputUnsafe(options.timeout ?? "5 seconds")
  const headers = Object.fromEntries(
    Object.entries(options.headers ?? {}).map(([name, value]) => [
      name,
      Redacted.isRedacted(value) ? Redacted.value(value) : value
    ])
  )
  const client = (yield* HttpClient.HttpClient).pipe(
    HttpClient.filterStatusOk,
    HttpClient.transformResponse(Effect.timeout(timeout)),
    HttpClient.retryTransient({ schedule: Schedule.exponential("200 millis"), times: retries })
  )
  return {
    name: `webhook ${host}`,
    send: (alert: Alert) =>
      HttpClientRequest.post(url).pipe(
        HttpClientRequest.setHeaders(headers),
        HttpClientRequest.bodyJsonUnsafe(alert),
        client.execute,
        Effect.asVoid,
        Effect.scoped,
        Effect.mapError(
          (error) =>
            new WebhookFailed({
              host,
              reason:
                error._tag === "HttpClientError"
                  ? error.response === undefined
                    ? error.reason._tag
                    : `status ${error.response.status}`
                  : "timed out"
            })
        )
      )
  } satisfies Sink
})

// -----------------------------------------------------------------------------
// Debouncing
// -----------------------------------------------------------------------------

interface Window {
  readonly start: number
  pending: Alert | undefined
  count: number
  firstAt: string | undefined
}

/**
 * The debouncing rule without effects: `offer` an alert, send what it
 * returns; call `due` at `nextDue()` and send what it returns.
 *
 * @since 0.1.0
 * @category debouncing
 */
export class Debouncer {
  readonly windowMillis: number
  private readonly windows = new Map<Kind, Window>()

  constructor(windowMillis: number) {
    this.windowMillis = windowMillis
  }

  offer(alert: Alert, now: number): Array<Alert> {
    const out: Array<Alert> = []
    for (const [kind, window] of this.windows) {
      if (kind !== alert.kind && subjectOf(kind) === alert.subject) {
        if (window.pending !== undefined) out.push(merged(window))
        this.windows.delete(kind)
      }
    }
    const window = this.windows.get(alert.kind)
    if (window !== undefined && now - window.start < this.windowMillis) {
      window.pending = alert
      window.count++
      window.firstAt ??= alert.at
      return out
    }
    this.windows.set(alert.kind, { start: now, pending: undefined, count: 0, firstAt: undefined })
    out.push(alert)
    return out
  }

  due(now: number): Array<Alert> {
    const out: Array<Alert> = []
    for (const [kind, window] of this.windows) {
      if (now - window.start < this.windowMillis) continue
      if (window.pending === undefined) {
        this.windows.delete(kind)
      } else {
        out.push(merged(window))
        // Repeats after a merged alert are merged again, one window later.
        this.windows.set(kind, { start: now, pending: undefined, count: 0, firstAt: undefined })
      }
    }
    return out
  }

  /** When `due` next has something to send, if anything is pending. */
  nextDue(): number | undefined {
    let next: number | undefined
    for (const window of this.windows.values()) {
      if (window.pending !== undefined) {
        const at = window.start + this.windowMillis
        if (next === undefined || at < next) next = at
      }
    }
    return next
  }
}

const subjectOf = (kind: Kind): Alert["subject"] => (kind.startsWith("breaker") ? "breaker" : "health")

const merged = (window: Window): Alert => {
  const alert = window.pending!
  return window.count === 1
    ? alert
    : {
        ...alert,
        firstAt: window.firstAt ?? alert.at,
        occurrences: window.count,
        message: `${alert.message} (${window.count} times since ${window.firstAt})`
      }
}

// -----------------------------------------------------------------------------
// Sources
// -----------------------------------------------------------------------------

const alert = (
  kind: Kind,
  database: string,
  now: number,
  message: string,
  details: Record<string, string | number> = {}
): Alert => {
  const at = new Date(now).toISOString()
  return {
    kind,
    subject: subjectOf(kind),
    severity: severityOf(kind),
    database,
    message,
    at,
    firstAt: at,
    occurrences: 1,
    details
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Default `[Alerts.log]`. */
  readonly sinks?: ReadonlyArray<Sink> | undefined
  /** Repeats of one condition within this window are merged. Default 1 minute. */
  readonly debounce?: Duration.Input | undefined
  /** Alerts waiting per sink before new ones are dropped (and logged). Default 100. */
  readonly queueSize?: number | undefined
}

/**
 * Watches the client's breaker and health monitor for as long as the layer
 * lives and sends their alerts.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<never, InvalidAlertOptions, ResilientPg.ResilientPg | HealthMonitor.HealthMonitor> =>
  Layer.effectDiscard(
    Effect.gen(function* () {
      const queueSize = options.queueSize ?? 100
      if (!Number.isInteger(queueSize) || queueSize < 1) {
        return yield* new InvalidAlertOptions({
          message: `Alerts: queueSize must be an integer >= 1, got ${queueSize}`
        })
      }
      const debounce = Duration.fromInput(options.debounce ?? defaultDebounce)
      if (Option.isNone(debounce)) {
        return yield* new InvalidAlertOptions({ message: `Alerts: debounce is not a duration: ${options.debounce}` })
      }
      const pg = yield* ResilientPg.ResilientPg
      const health = yield* HealthMonitor.HealthMonitor
      const database = pg.database

      const outlets = yield* Effect.forEach(options.sinks ?? [log], (sink) =>
        Effect.gen(function* () {
          const queue = yield* Queue.bounded<Alert>(queueSize)
          yield* Effect.forkScoped(
            Effect.forever(
              Effect.flatMap(Queue.take(queue), (alert) =>
                sink
                  .send(alert)
                  .pipe(
                    Effect.catchCause((cause) =>
                      Effect.logWarning(`Alert sink ${sink.name} failed`, cause).pipe(
                        Effect.annotateLogs({ "sturdy.event": "alert-failed", "sturdy.alert": alert.kind })
                      )
                    )
                  )
              )
            ),
            { startImmediately: true }
          )
          return { sink, queue }
        })
      )
      const deliver = (alert: Alert) =>
        Effect.forEach(outlets, ({ sink, queue }) =>
          Queue.offerUnsafe(queue, alert)
            ? Effect.void
            : Effect.logWarning(`Alert dropped: the queue of sink ${sink.name} is full`).pipe(
                Effect.annotateLogs({ "sturdy.event": "alert-dropped", "sturdy.alert": alert.kind })
              )
        )

      const events = yield* Queue.unbounded<Alert>()
      yield* Effect.forkScoped(
        Stream.runForEach(pg.transitions, (transition) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            if (transition.to === "Open") {
              const seconds = Math.round(Duration.toMillis(transition.retryAfter) / 100) / 10
              return Queue.offer(
                events,
                alert(
                  "breaker-opened",
                  database,
                  now,
                  transition.from === "Closed"
                    ? `Circuit breaker for ${database} opened: calls fail fast for ${seconds}s`
                    : `Circuit breaker for ${database} opened again: the probe failed; next probe in ${seconds}s`,
                  {
                    from: transition.from,
                    retryAfterMillis: Duration.toMillis(transition.retryAfter),
                    consecutiveOpenings: transition.consecutiveOpenings
                  }
                )
              )
            }
            return transition.to === "Closed"
              ? Queue.offer(
                  events,
                  alert("breaker-closed", database, now, `Circuit breaker for ${database} closed: calls flow again`)
                )
              : Effect.void
          })
        ),
        { startImmediately: true }
      )
      let previous: "healthy" | "unhealthy" | undefined
      yield* Effect.forkScoped(
        Stream.runForEach(health.changes, (result) => {
          const was = previous
          previous = result.status
          if (result.status === was || (result.status === "healthy" && was === undefined)) return Effect.void
          const now = result.timestamp.getTime()
          return Queue.offer(
            events,
            result.status === "unhealthy"
              ? alert(
                  "database-unhealthy",
                  database,
                  now,
                  `Database ${database} is unhealthy: ${result.error ?? "the health check failed"}`,
                  result.error === undefined ? {} : { error: result.error }
                )
              : alert(
                  "database-healthy",
                  database,
                  now,
                  `Database ${database} is healthy again`,
                  result.responseTime === undefined ? {} : { responseTimeMillis: result.responseTime }
                )
          )
        }),
        { startImmediately: true }
      )

      const debouncer = new Debouncer(Duration.toMillis(debounce.value))
      yield* Effect.forkScoped(
        Effect.forever(
          Effect.gen(function* () {
            const due = debouncer.nextDue()
            const now = yield* Clock.currentTimeMillis
            const next =
              due === undefined
                ? Option.some(yield* Queue.take(events))
                : yield* Effect.timeoutOption(Queue.take(events), Math.max(0, due - now))
            const at = yield* Clock.currentTimeMillis
            const out = Option.isSome(next) ? debouncer.offer(next.value, at) : []
            out.push(...debouncer.due(at))
            yield* Effect.forEach(out, deliver, { discard: true })
          })
        ),
        { startImmediately: true }
      )
    })
  )

/**
 * The environment variables `config` reads, as data: the names `config`
 * reads are these, and the README's configuration table is made from them.
 * `default` is what applies while the variable is unset (`undefined`:
 * nothing; for the webhook, alerts go to the log only).
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
    name: WEBHOOK_URL,
    default: undefined,
    description:
      "POST alerts there as JSON, besides the log (`Alerts.layerConfig`); an http:// or https:// URL, redacted (it may carry a secret)"
  },
  {
    name: DEBOUNCE,
    default: defaultDebounce,
    description: "merge repeated alerts within this window (`30 seconds`, `5 minutes`)"
  }
]

const webhookUrlConfig = Config.option(
  Config.schema(
    Schema.Redacted(
      Schema.String.check(
        Schema.makeFilter((url: string) => webhookHost(url) !== undefined || "Expected an http:// or https:// URL")
      )
    ),
    WEBHOOK_URL
  )
)

const debounceConfig = Config.option(
  Config.schema(
    Schema.DurationFromString.check(
      Schema.makeFilter((duration: Duration.Duration) => Duration.isFinite(duration) || "Expected a finite duration")
    ),
    DEBOUNCE
  )
)

/**
 * The alert settings from the environment (see `variables`). Each value is
 * validated here: a webhook URL that is not http:// or https://, or a
 * debounce that is not a duration, fails with a `ConfigError` naming its
 * variable; the URL is never echoed.
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<{
  readonly webhookUrl: Option.Option<Redacted.Redacted<string>>
  readonly debounce: Option.Option<Duration.Duration>
}> = Config.all({ webhookUrl: webhookUrlConfig, debounce: debounceConfig })

/**
 * Alerts configured from the environment (see `config`): the log, plus a
 * webhook through `fetch` when `STURDY_ALERT_WEBHOOK_URL` is set. `options`
 * given in code win: with `options.sinks` (which then replace the log and
 * the webhook) `STURDY_ALERT_WEBHOOK_URL` is not read, with
 * `options.debounce` `STURDY_ALERT_DEBOUNCE` is not.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options?: Options
): Layer.Layer<
  never,
  InvalidAlertOptions | Config.ConfigError,
  ResilientPg.ResilientPg | HealthMonitor.HealthMonitor
> =>
  Layer.unwrap(
    Effect.gen(function* () {
      let sinks = options?.sinks
      if (sinks === undefined) {
        const url = yield* webhookUrlConfig
        sinks = Option.isSome(url)
          ? [log, yield* Effect.provide(webhook({ url: url.value }), FetchHttpClient.layer)]
          : [log]
      }
      const debounce = options?.debounce ?? Option.getOrUndefined(yield* debounceConfig)
      return layer({ ...options, sinks, debounce })
    })
  )
