/**
 * The in-process breaker, with its transitions shared across the processes of
 * a fleet through Redis pub/sub: when one process's breaker opens, the others
 * open theirs at once, for the same time, without failed attempts of their
 * own; when one process's probe closes it, the others close too.
 *
 * **Details**
 *
 * The hot path is `Breaker.make`'s, unchanged: admission is a read of a local
 * cell, and a call makes no Redis round trip. Only transitions go to Redis:
 * an opening or a close caused by this process (its calls, its half-open
 * probe, `Local.probeSucceeded` from the health monitor) is published on the
 * channel `<prefix><key>`, and the open state is also kept at
 * `<prefix>state:<key>` for `retryAfter`, so a process that starts, or that
 * reconnects after missing messages, opens too. Each process subscribes to
 * the channel of every key it uses and ignores its own messages (they carry
 * its `origin`).
 *
 * One process probes for the fleet: while the circuit is not closed, the
 * health monitor of the process holding the lease `<prefix>prober:<key>`
 * (taken by the first to ask, renewed by each of its probes, `probeLease`
 * long) probes every 250 ms; the others leave their probes to it, and close
 * when its close arrives. A holder that stops probing (it closed, or died)
 * hands over when the lease runs out; without Redis, every process probes.
 *
 * Redis is built from the `redis` layer given (for example
 * `NodeRedis.layer({ url })` from `@effect/platform-node`) in the
 * background: the layer never fails and never waits for it. While Redis
 * cannot be reached (down at start, lost mid-run) each process's breaker
 * works on its own; one warning log line says so (`sturdy.event:
 * "breaker-sharing"`), the gauge `sturdy_breaker_shared` drops to 0, and
 * sharing resumes, with another log line, when Redis answers again.
 *
 * **Example** (One breaker for every process on the database)
 *
 * ```ts
 * import { NodeRedis } from "@effect/platform-node"
 * import { ResilientPg } from "@sturdy/pg"
 * import { Breaker, SharedBreaker } from "@sturdy/resilience"
 * import { Layer } from "effect"
 *
 * const breaker = SharedBreaker.layer({
 *   tripPolicy: Breaker.consecutive(5),
 *   openDuration: Breaker.exponentialOpenDuration({ from: "1 second", max: "60 seconds" }),
 *   redis: NodeRedis.layer({ url: "redis://redis.internal:6379" })
 * })
 * const Database = ResilientPg.layer({ url }).pipe(Layer.provide(breaker))
 * ```
 *
 * **Gotchas**
 *
 * - Messages lost while Redis is down are not replayed; the state key covers
 *   openings, not closes, so a process that missed a close closes on its own
 *   probe.
 * - A message older than `maxMessageAge` by the sender's wall clock is
 *   ignored: node-redis queues commands while disconnected and may send them
 *   late. Clocks further apart than that drop every message.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Exit, Layer, Metric, Queue, Schedule, Scope } from "effect"
import * as Redis from "effect/persistence/Redis"
import * as Breaker from "./Breaker.ts"
import { positive } from "./internal/duration.ts"
import * as RetryBudget from "./RetryBudget.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options extends Breaker.Options {
  /** The Redis to share through, built in the background and rebuilt until it connects. */
  readonly redis: Layer.Layer<Redis.Redis, unknown>
  /** Prefix of the channels and state keys. Default `"sturdy:breaker:"`. */
  readonly prefix?: string | undefined
  /** How often Redis is pinged while shared, and reconnected while not. Default 1 second. */
  readonly checkInterval?: Duration.Input | undefined
  /** Messages older than this are ignored. Default 5 seconds. */
  readonly maxMessageAge?: Duration.Input | undefined
  /** This process's id in its messages. Default a random one. */
  readonly origin?: string | undefined
  /**
   * How long the process that probes for the fleet keeps that role without
   * probing again: when it stops (it closed its circuit, or it died), another
   * process takes over after this long. Default 10 seconds, more than a health
   * probe's 5 s timeout.
   */
  readonly probeLease?: Duration.Input | undefined
  /**
   * Whether the retry budgets of the clients on this breaker are kept in step
   * across the fleet through the same Redis (see `RetryBudget`). Default `true`.
   */
  readonly shareRetryBudget?: boolean | undefined
  /** How often a shared retry budget syncs with the fleet's. Default 250 ms. */
  readonly budgetSyncInterval?: Duration.Input | undefined
}

/**
 * What the shared breaker counts, for tests and dashboards.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Transitions of this process sent to Redis. */
  readonly published: number
  /** Transitions of this process not sent: Redis was unreachable. */
  readonly unpublished: number
  /** Messages of other processes applied to the local breaker. */
  readonly applied: number
  /** This process's own messages, received back and ignored. */
  readonly own: number
  /** Messages ignored as malformed or older than `maxMessageAge`. */
  readonly ignored: number
  /** Channels subscribed to right now (one per key in use, while Redis answers). */
  readonly subscribed: number
  /** Out-of-band probes this process ran for the fleet (it held the probe lease, or Redis was unreachable). */
  readonly probesRun: number
  /** Out-of-band probes this process left to the process holding the lease. */
  readonly probesLeft: number
  /** Syncs of this process's retry budgets with the fleet's that Redis answered. */
  readonly budgetSyncs: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service extends Breaker.Service {
  readonly local: Breaker.Local
  /** This process's id in its messages. */
  readonly origin: string
  /** Whether transitions are shared right now (Redis answers). */
  readonly sharing: Effect.Effect<boolean>
  readonly stats: Effect.Effect<Stats>
  /** The clients' retry budgets, kept in step with the fleet's. */
  readonly budgets: RetryBudget.Budgets["Service"]
}

/**
 * @since 0.1.0
 * @category services
 */
export class SharedBreaker extends Context.Service<SharedBreaker, Service>()("@sturdy/resilience/SharedBreaker") {}

/**
 * 1 while this process's breaker transitions are shared through Redis, 0
 * while it works on its own.
 *
 * @since 0.1.0
 * @category metrics
 */
export const sharedGauge = Metric.gauge("sturdy_breaker_shared", {
  description: "1 while the breaker's transitions are shared across processes through Redis, 0 while it works alone"
})

/**
 * A transition as it travels between processes.
 *
 * @since 0.1.0
 * @category models
 */
export type Message =
  | {
      readonly kind: "open"
      readonly origin: string
      readonly key: string
      readonly retryAfterMillis: number
      readonly consecutiveOpenings: number
      readonly sentAt: number
    }
  | { readonly kind: "close"; readonly origin: string; readonly key: string; readonly sentAt: number }

/**
 * The message for a transition of this process, if it is one to share: an
 * opening, or a close.
 *
 * @since 0.1.0
 * @category messages
 */
export const messageOf = (transition: Breaker.Transition, origin: string, sentAt: number): Message | undefined =>
  transition.to === "Open"
    ? {
        kind: "open",
        origin,
        key: transition.key,
        retryAfterMillis: Duration.toMillis(transition.retryAfter),
        consecutiveOpenings: transition.consecutiveOpenings,
        sentAt
      }
    : transition.to === "Closed"
      ? { kind: "close", origin, key: transition.key, sentAt }
      : undefined

const isFiniteNumber = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u)

/**
 * Reads a message; `undefined` when it is not one.
 *
 * @since 0.1.0
 * @category messages
 */
export const parseMessage = (text: string): Message | undefined => {
  let u: unknown
  try {
    u = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof u !== "object" || u === null) return undefined
  const m = u as Record<string, unknown>
  if (typeof m.origin !== "string" || typeof m.key !== "string" || !isFiniteNumber(m.sentAt)) return undefined
  if (m.kind === "close") return { kind: "close", origin: m.origin, key: m.key, sentAt: m.sentAt }
  if (m.kind === "open" && isFiniteNumber(m.retryAfterMillis) && isFiniteNumber(m.consecutiveOpenings)) {
    return {
      kind: "open",
      origin: m.origin,
      key: m.key,
      retryAfterMillis: m.retryAfterMillis,
      consecutiveOpenings: m.consecutiveOpenings,
      sentAt: m.sentAt
    }
  }
  return undefined
}

/**
 * What a process does with a message it received: apply it, or ignore it as
 * its own, for another key, or too old.
 *
 * @since 0.1.0
 * @category messages
 */
export const decide = (
  message: Message | undefined,
  context: { readonly origin: string; readonly key: string; readonly now: number; readonly maxAgeMillis: number }
): "apply" | "own" | "ignore" =>
  message === undefined || message.key !== context.key || context.now - message.sentAt > context.maxAgeMillis
    ? "ignore"
    : message.origin === context.origin
      ? "own"
      : "apply"

const randomOrigin = () => globalThis.crypto.randomUUID()

/** Takes or renews the probe lease `KEYS[1]` for `ARGV[1]`, for `ARGV[2]` ms: 1 when this process holds it. */
const claimLease = Redis.script((key: string, origin: string, millis: string) => [key, origin, millis], {
  lua: `local holder = redis.call("GET", KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 1
end
return 0`,
  numberOfKeys: 1
}).withReturnType<number>()

/**
 * The fleet's retry budget `KEYS[1]`: refills at the floor `ARGV[4]` per second since the last sync (Redis's
 * clock), takes a process's deposits `ARGV[1]` up to the capacity `ARGV[3]` and its spending `ARGV[2]`, and
 * answers the balance. Spending within one sync may overdraw it, down to minus the capacity: the floor pays
 * that back before anyone retries again.
 */
const fleetBudget = Redis.script(
  (key: string, deposited: string, spent: string, capacity: string, floor: string) => [
    key,
    deposited,
    spent,
    capacity,
    floor
  ],
  {
    lua: `local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local capacity = tonumber(ARGV[3])
local state = redis.call("HMGET", KEYS[1], "tokens", "at")
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
if now > at then
  tokens = tokens + (now - at) * tonumber(ARGV[4]) / 1000
  at = now
end
tokens = math.max(-capacity, math.min(capacity, tokens + tonumber(ARGV[1])) - tonumber(ARGV[2]))
redis.call("HSET", KEYS[1], "tokens", tostring(tokens), "at", tostring(at))
redis.call("PEXPIRE", KEYS[1], 3600000)
return tostring(tokens)`,
    numberOfKeys: 1
  }
).withReturnType<string>()

/**
 * The shared breaker; its Redis connection, subscriptions and background
 * fibers end with the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (options: Options): Effect.fn.Return<Service, never, Scope.Scope> {
  const origin = options.origin ?? randomOrigin()
  const prefix = options.prefix ?? "sturdy:breaker:"
  const interval = positive("SharedBreaker.make", "checkInterval", options.checkInterval ?? Duration.seconds(1))
  const maxAgeMillis = Duration.toMillis(
    positive("SharedBreaker.make", "maxMessageAge", options.maxMessageAge ?? Duration.seconds(5))
  )
  const channelOf = (key: string) => `${prefix}${key}`
  const stateKeyOf = (key: string) => `${prefix}state:${key}`

  const lease = positive("SharedBreaker.make", "probeLease", options.probeLease ?? Duration.seconds(10))
  // Redis's PX takes whole milliseconds, at least 1.
  const leaseMillis = String(Math.max(1, Math.round(Duration.toMillis(lease))))
  const proberKeyOf = (key: string) => `${prefix}prober:${key}`
  const budgetKeyOf = (key: string) => `${prefix}budget:${key}`

  const stats = {
    published: 0,
    unpublished: 0,
    applied: 0,
    own: 0,
    ignored: 0,
    subscribed: 0,
    probesRun: 0,
    probesLeft: 0,
    budgetSyncs: 0
  }
  const keys = new Set<string>()
  const newKeys = yield* Queue.unbounded<string>()
  const outbox = yield* Queue.unbounded<Message>()

  const inner = yield* Breaker.make(options, {
    onKey: (key) => {
      keys.add(key)
      Queue.offerUnsafe(newKeys, key)
    },
    onTransition: (transition) => {
      const message = messageOf(transition, origin, Date.now())
      if (message !== undefined) Queue.offerUnsafe(outbox, message)
    }
  })
  const local = inner.local!

  const apply = (message: Message) => {
    stats.applied++
    if (message.kind === "open") {
      local.openedElsewhere!(message.key, message.retryAfterMillis, message.consecutiveOpenings)
    } else {
      local.closedElsewhere!(message.key)
    }
  }

  let connection: { readonly redis: Redis.Redis["Service"]; readonly scope: Scope.Closeable } | undefined
  let sharing: boolean | undefined
  const setSharing = (up: boolean, cause?: unknown) =>
    Effect.suspend(() => {
      if (sharing === up) return Effect.void
      const first = sharing === undefined
      sharing = up
      const log = up
        ? first
          ? Effect.logInfo("Breaker transitions are shared across processes through Redis")
          : Effect.logWarning("Redis answers again: breaker transitions are shared across processes again")
        : Effect.logWarning(
            "Redis is unreachable: this process's breaker works on its own until Redis answers again; no call fails because of it",
            ...(cause === undefined ? [] : [cause])
          )
      return Effect.andThen(
        Metric.update(sharedGauge, up ? 1 : 0),
        log.pipe(Effect.annotateLogs({ "sturdy.event": "breaker-sharing", "sturdy.sharing": up ? "shared" : "local" }))
      )
    })

  const withTimeout = <A>(effect: Effect.Effect<A, unknown>) =>
    Effect.timeoutOrElse(effect, {
      duration: interval,
      orElse: () => Effect.fail(new Error(`Redis did not answer within ${Duration.format(interval)}`))
    })

  /** An opening another process left in the state key: this process opens for what is left of it. */
  const resync = (redis: Redis.Redis["Service"], key: string) =>
    Effect.gen(function* () {
      const stored = yield* withTimeout(redis.send<string | null>("GET", stateKeyOf(key)))
      if (stored === null) return
      const message = parseMessage(stored)
      if (message === undefined || message.kind !== "open" || message.origin === origin || message.key !== key) return
      const left = yield* withTimeout(redis.send<number>("PTTL", stateKeyOf(key)))
      if (left > 0) apply({ ...message, retryAfterMillis: left })
    }).pipe(Effect.ignore)

  const subscription = (redis: Redis.Redis["Service"], key: string) =>
    Effect.scoped(
      Effect.gen(function* () {
        const messages = yield* redis.subscribe(channelOf(key))
        // NodeRedis has subscribed when `subscribe` returns, or has failed the queue: then the first take fails.
        stats.subscribed++
        yield* Effect.addFinalizer(() => Effect.sync(() => stats.subscribed--))
        yield* resync(redis, key)
        while (true) {
          const received = yield* Queue.take(messages)
          const message = parseMessage(received.message)
          switch (decide(message, { origin, key, now: Date.now(), maxAgeMillis })) {
            case "apply":
              apply(message!)
              break
            case "own":
              stats.own++
              break
            case "ignore":
              stats.ignored++
          }
        }
      })
    ).pipe(Effect.retry(Schedule.spaced(interval)), Effect.ignore)

  const connect = Effect.gen(function* () {
    const scope = yield* Scope.make()
    const built = yield* Effect.exit(withTimeout(Layer.buildWithScope(options.redis, scope)))
    if (Exit.isFailure(built)) {
      yield* Scope.close(scope, Exit.void)
      return yield* Effect.failCause(built.cause)
    }
    const redis = Context.get(built.value, Redis.Redis)
    for (const key of keys) yield* Effect.forkIn(subscription(redis, key), scope)
    connection = { redis, scope }
  })

  // Connects, pings, and reconnects; flips `sharing` and says so when Redis comes and goes.
  const rebuildAfterPings = 10
  let failedPings = 0
  const supervise = Effect.gen(function* () {
    while (true) {
      if (connection === undefined) {
        const result = yield* Effect.exit(connect)
        yield* Exit.isSuccess(result) ? setSharing(true) : setSharing(false, result.cause)
      } else {
        const current = connection
        const { redis } = current
        const ping = yield* Effect.exit(withTimeout(redis.send("PING")))
        if (Exit.isFailure(ping)) {
          failedPings++
          yield* setSharing(false, ping.cause)
          // The client reconnects on its own, but not forever (node-redis gives up after a socket timeout): start
          // afresh after a while. Closing waits for the commands it queued, so it runs on the side.
          if (failedPings >= rebuildAfterPings) {
            failedPings = 0
            connection = undefined
            yield* Effect.forkDetach(Scope.close(current.scope, Exit.void))
          }
        } else {
          failedPings = 0
        }
        if (Exit.isSuccess(ping) && sharing !== true) {
          yield* setSharing(true)
          for (const key of keys) yield* resync(redis, key)
        }
      }
      yield* Effect.sleep(interval)
    }
  })

  const subscribeNewKeys = Effect.gen(function* () {
    while (true) {
      const key = yield* Queue.take(newKeys)
      if (connection !== undefined) yield* Effect.forkIn(subscription(connection.redis, key), connection.scope)
    }
  })

  const send = (message: Message) =>
    Effect.gen(function* () {
      const current = connection
      if (current === undefined || sharing !== true) {
        stats.unpublished++
        return
      }
      const text = JSON.stringify(message)
      const sent = yield* Effect.exit(
        withTimeout(
          Effect.andThen(
            current.redis.send("PUBLISH", channelOf(message.key), text),
            message.kind === "open"
              ? current.redis.send("SET", stateKeyOf(message.key), text, "PX", String(message.retryAfterMillis))
              : current.redis.send("DEL", stateKeyOf(message.key))
          )
        )
      )
      if (Exit.isSuccess(sent)) stats.published++
      else {
        stats.unpublished++
        yield* setSharing(false, sent.cause)
      }
    })

  /**
   * One process probes for the fleet: the one holding the lease, which each of
   * its probes renews. Any doubt (Redis unreachable, slow, failing) means
   * probing: a missed probe costs the fleet its recovery, an extra one a
   * connection attempt.
   */
  const shouldProbe = (key: string): Effect.Effect<boolean> =>
    Effect.suspend(() => {
      const current = connection
      const claim =
        current === undefined || sharing !== true
          ? Effect.succeed(true)
          : withTimeout(current.redis.eval(claimLease)(proberKeyOf(key), origin, leaseMillis)).pipe(
              Effect.map((won) => won === 1),
              Effect.orElseSucceed(() => true)
            )
      return Effect.tap(claim, (mine) =>
        Effect.sync(() => {
          if (mine) stats.probesRun++
          else stats.probesLeft++
        })
      )
    })

  const budgetSync = positive(
    "SharedBreaker.make",
    "budgetSyncInterval",
    options.budgetSyncInterval ?? Duration.millis(250)
  )
  /** Sends what `budget` deposited and spent since the last sync, and lowers it to the fleet's balance. */
  const syncBudget = (key: string, budget: RetryBudget.RetryBudget) =>
    Effect.gen(function* () {
      const { deposited, spent } = budget.report()
      const current = connection
      if (current === undefined || sharing !== true) return
      const balance = yield* withTimeout(
        current.redis.eval(fleetBudget)(
          budgetKeyOf(key),
          String(deposited),
          String(spent),
          String(budget.capacity),
          String(budget.minRetriesPerSecond)
        )
      )
      budget.settle(Number(balance), yield* Clock.currentTimeMillis)
      stats.budgetSyncs++
    }).pipe(Effect.ignore)
  const budgets = RetryBudget.Budgets.of({
    make: (key, settings, now) =>
      Effect.gen(function* () {
        const budget = new RetryBudget.RetryBudget(settings, now)
        yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.sleep(budgetSync), syncBudget(key, budget))), {
          startImmediately: true
        })
        return budget
      })
  })

  const drainOutbox = Effect.gen(function* () {
    while (true) yield* send(yield* Queue.take(outbox))
  })

  yield* Metric.update(sharedGauge, 0)
  yield* Effect.forkScoped(supervise, { startImmediately: true })
  yield* Effect.forkScoped(subscribeNewKeys, { startImmediately: true })
  yield* Effect.forkScoped(drainOutbox, { startImmediately: true })
  // Closing the client waits for the commands it queued while Redis was away: bounded, so a dead Redis cannot hold
  // up the application's shutdown.
  yield* Effect.addFinalizer(() =>
    Effect.suspend(() =>
      connection === undefined
        ? Effect.void
        : Effect.ignore(Effect.timeout(Scope.close(connection.scope, Exit.void), Duration.seconds(2)))
    )
  )

  return {
    ...inner,
    local,
    shouldProbe,
    budgets,
    origin,
    sharing: Effect.sync(() => sharing === true),
    stats: Effect.sync(() => ({ ...stats }))
  }
})

/**
 * The shared breaker as the `Breaker` service (what `ResilientPg` picks up
 * from context) and as `SharedBreaker`, for its `sharing` and `stats`; unless
 * `shareRetryBudget` is `false`, also `RetryBudget.Budgets`, which the
 * clients built on it take their retry budgets from.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Breaker.Breaker | SharedBreaker | RetryBudget.Budgets> =>
  Layer.effectContext(
    Effect.map(make(options), (service) => {
      const context = Context.make(SharedBreaker, service).pipe(Context.add(Breaker.Breaker, service))
      return (
        options.shareRetryBudget === false ? context : Context.add(context, RetryBudget.Budgets, service.budgets)
      ) as Context.Context<Breaker.Breaker | SharedBreaker | RetryBudget.Budgets>
    })
  )
