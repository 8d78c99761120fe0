/**
 * A circuit breaker with the semantics and vocabulary of
 * `effect/persistence/CircuitBreaker`: states `Closed`, `Open`, `HalfOpen`,
 * trip policies, one half-open probe, an open duration that is a duration or
 * a `Schedule`, a transitions stream, and a typed rejection with `retryAfter`.
 *
 * **Where it belongs in a stack**
 *
 * retry -> breaker -> attempt timeout -> the call. The breaker counts
 * attempts: during an outage it opens after a few failed attempts across all
 * callers, and the retry does not retry its rejections, so callers fail fast
 * with `retryAfter` instead of queueing on a dead server.
 *
 * **Two layers, one service**
 *
 * - `layer`: in-process, a pure transition function over a mutable cell per
 *   key. The closed-state check is a plain read and a rejection allocates no
 *   fiber; effect's store-backed breaker costs about 5.7 µs per call and
 *   20 µs per rejection (measured in `pnpm bench`), too much around every
 *   statement.
 * - `layerStore`: backed by effect's `CircuitBreaker` and whatever
 *   `CircuitBreakerStore` is provided (its Redis store shares state across
 *   processes, where a round trip dwarfs the cost; its memory store is used in
 *   tests).
 *
 * **Recovering fast from short outages**
 *
 * A fixed open period of 60 s keeps every caller failing for a
 * minute after a 5-second restart. The profiles' default is exponential,
 * `Breaker.exponentialOpenDuration({ from: "1 second", max: "60 seconds" })`:
 * a caller's call is let through as the half-open probe after 1 s, then 2 s,
 * 4 s... while the outage lasts, with 60 s as the ceiling. And a probe from
 * outside (`Local.probeSucceeded`, which `@sturdy/pg`'s health monitor calls)
 * closes the circuit as soon as the server answers, with no caller's call.
 *
 * **Gotchas**
 *
 * A schedule given as the open duration is evaluated once, at construction,
 * against a simulated clock (as effect replays it), for up to 64 consecutive
 * openings; the 64th delay repeats after that. Schedules that depend on the
 * wall clock (`Schedule.cron`) are not supported.
 *
 * @since 0.1.0
 */
import {
  Clock,
  Context,
  Duration,
  Effect,
  Exit,
  Layer,
  Predicate,
  PubSub,
  Schedule,
  Schema,
  Scope,
  Stream
} from "effect"
import * as CircuitBreaker from "effect/persistence/CircuitBreaker"

/**
 * @since 0.1.0
 * @category models
 */
export type TripPolicy = CircuitBreaker.TripPolicy

/**
 * @since 0.1.0
 * @category models
 */
export type State = CircuitBreaker.State

/**
 * @since 0.1.0
 * @category models
 */
export type Transition = CircuitBreaker.Transition

/**
 * What one call means for the breaker.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome = "Success" | "Failure" | "Ignored"

/**
 * Opens after `failures` consecutive failed calls.
 *
 * @since 0.1.0
 * @category policies
 */
export const consecutive: (failures: number) => TripPolicy = CircuitBreaker.consecutive

/**
 * Opens when the failure rate over the last `size` calls reaches `threshold`.
 *
 * @since 0.1.0
 * @category policies
 */
export const rate: typeof CircuitBreaker.rate = CircuitBreaker.rate

/**
 * An open duration that starts at `from` and doubles with each consecutive
 * opening, up to `max`.
 *
 * @since 0.1.0
 * @category policies
 */
export const exponentialOpenDuration = (options: {
  readonly from: Duration.Input
  readonly max: Duration.Input
}): Schedule.Schedule<unknown, number> =>
  Schedule.min([Schedule.exponential(options.from), Schedule.spaced(options.max)]) as Schedule.Schedule<unknown, number>

/**
 * The breaker rejected the call without running it: the circuit is open.
 * Retryable later: after `retryAfter` at the latest (sooner when a probe
 * finds the server back). Effect's `CircuitBreaker` names it the same.
 *
 * @since 0.1.0
 * @category errors
 */
export class CircuitOpen extends Schema.TaggedError<CircuitOpen>()("CircuitOpen", {
  key: Schema.String,
  retryAfter: Schema.Duration
}) {
  readonly isRetryable = true
  override get message(): string {
    return `The circuit for ${this.key} is open; retry after ${Duration.format(this.retryAfter)}`
  }
}

/**
 * The breaker rejected the call without running it: the circuit is half-open
 * and its one probe is in flight. Retryable as soon as the probe answers.
 * Effect's `CircuitBreaker` names it the same.
 *
 * @since 0.1.0
 * @category errors
 */
export class CircuitHalfOpen extends Schema.TaggedError<CircuitHalfOpen>()("CircuitHalfOpen", {
  key: Schema.String
}) {
  readonly isRetryable = true
  override get message(): string {
    return `The circuit for ${this.key} is half-open and its probe is in flight`
  }
}

/**
 * A call the breaker did not run.
 *
 * @since 0.1.0
 * @category errors
 */
export type Rejection = CircuitOpen | CircuitHalfOpen

/**
 * @since 0.1.0
 * @category guards
 */
export const isRejection = (u: unknown): u is Rejection =>
  Predicate.isTagged(u, "CircuitOpen") || Predicate.isTagged(u, "CircuitHalfOpen")

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly tripPolicy: TripPolicy
  /** How long the circuit stays open: a duration, or a schedule over consecutive openings. */
  readonly openDuration: Duration.Input | Schedule.Schedule<unknown, number>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Runs `self` if the circuit for `key` admits it, and records what
   * `classify` makes of its exit. Interruption is always `"Ignored"`.
   */
  readonly execute: <A, E, R>(
    key: string,
    self: Effect.Effect<A, E, R>,
    classify: (exit: Exit.Exit<A, E>) => Outcome
  ) => Effect.Effect<A, E | Rejection, R>
  readonly state: (key: string) => Effect.Effect<State>
  readonly transitions: Stream.Stream<Transition>
  /**
   * The same state machine without effects, for a caller's hot path: present
   * on the in-process breaker, absent when the state lives in a store.
   * `record` must follow every admitted `admit`.
   */
  readonly local?: Local | undefined
  /**
   * Whether this process should run the out-of-band probe for `key` now (the
   * health monitor's, while the circuit is not closed): `SharedBreaker` lets
   * one process of the fleet probe for all of them. Absent: always.
   */
  readonly shouldProbe?: ((key: string) => Effect.Effect<boolean>) | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Local {
  readonly admit: (key: string) => Admission
  readonly record: (key: string, generation: number, outcome: Outcome) => void
  /**
   * Asks again for a call admitted with `generation` that waited (for a pooled
   * connection) before it could start: the rejection if the circuit has since
   * left the state that admitted it, `undefined` if the call may go on.
   */
  readonly recheck: (key: string, generation: number) => Extract<Admission, { _tag: "Rejected" }> | undefined
  /**
   * A probe outside the breaker (the health monitor's) reached the server:
   * an open or half-open circuit closes now instead of waiting for its open
   * duration and a caller's call.
   */
  readonly probeSucceeded: (key: string) => void
  /**
   * Another process's breaker for `key` opened (see `SharedBreaker`): open
   * now for `retryAfterMillis`, without failed attempts of this process's own.
   * Present on the in-process breaker.
   */
  readonly openedElsewhere?: ((key: string, retryAfterMillis: number, consecutiveOpenings: number) => void) | undefined
  /** Another process's probe found the server back: close now. Present on the in-process breaker. */
  readonly closedElsewhere?: ((key: string) => void) | undefined
}

/**
 * What `make` tells its owner, synchronously, as it happens: a `SharedBreaker`
 * publishes this process's transitions from here.
 *
 * @since 0.1.0
 * @category models
 */
export interface Hooks {
  /** A key seen for the first time. */
  readonly onKey?: ((key: string) => void) | undefined
  /** A transition caused by this process (its calls, its probes), not one applied from elsewhere. */
  readonly onTransition?: ((transition: Transition) => void) | undefined
}

/**
 * @since 0.1.0
 * @category services
 */
export class Breaker extends Context.Service<Breaker, Service>()("@sturdy/resilience/Breaker") {}

// -----------------------------------------------------------------------------
// The in-process state machine
// -----------------------------------------------------------------------------

/**
 * The state of one key. Mutated in place by `admit` and `record`, which are
 * pure in everything else: same cell, same inputs, same result.
 *
 * @since 0.1.0
 * @category state machine
 */
export interface Cell {
  readonly key: string
  state: "Closed" | "Open" | "HalfOpen"
  generation: number
  streak: number
  ring: Array<boolean>
  ringFailures: number
  openUntil: number
  consecutiveOpenings: number
  lastOpenFor: number
  resetAt: number
  probing: boolean
  /** The admission `admit` answers while closed, reused for as long as the generation lasts. */
  admitted?: Extract<Admission, { _tag: "Admitted" }> | undefined
}

/**
 * @since 0.1.0
 * @category state machine
 */
export const makeCell = (key: string): Cell => ({
  key,
  state: "Closed",
  generation: 0,
  streak: 0,
  ring: [],
  ringFailures: 0,
  openUntil: 0,
  consecutiveOpenings: 0,
  lastOpenFor: 0,
  resetAt: 0,
  probing: false,
  admitted: undefined
})

/**
 * The result of asking to run a call: admitted (a probe, or not), or
 * rejected with the time left open.
 *
 * @since 0.1.0
 * @category state machine
 */
export type Admission =
  | {
      readonly _tag: "Admitted"
      readonly generation: number
      readonly probe: boolean
      readonly transition: Transition | undefined
    }
  | { readonly _tag: "Rejected"; readonly retryAfterMillis: number; readonly probing: boolean }

/** The closed circuit's admission for its generation, kept on the cell: the hot path admits without allocating. */
const admittedClosed = (cell: Cell): Admission => {
  const cached = cell.admitted
  if (cached !== undefined && cached.generation === cell.generation) return cached
  return (cell.admitted = { _tag: "Admitted", generation: cell.generation, probe: false, transition: undefined })
}

/**
 * Whether the call may run now. Reads the clock only outside the closed state.
 *
 * @since 0.1.0
 * @category state machine
 */
export const admit = (cell: Cell, now: () => number): Admission => {
  switch (cell.state) {
    case "Closed": {
      if (cell.consecutiveOpenings > 0 && now() >= cell.resetAt) cell.consecutiveOpenings = 0
      return admittedClosed(cell)
    }
    case "Open": {
      const time = now()
      if (time < cell.openUntil) {
        return { _tag: "Rejected", retryAfterMillis: cell.openUntil - time, probing: false }
      }
      cell.state = "HalfOpen"
      cell.probing = true
      cell.generation++
      return {
        _tag: "Admitted",
        generation: cell.generation,
        probe: true,
        transition: { key: cell.key, from: "Open", to: "HalfOpen" }
      }
    }
    case "HalfOpen": {
      if (cell.probing) return { _tag: "Rejected", retryAfterMillis: 0, probing: true }
      cell.probing = true
      cell.generation++
      return { _tag: "Admitted", generation: cell.generation, probe: true, transition: undefined }
    }
  }
}

const open = (cell: Cell, from: "Closed" | "HalfOpen", now: number, openFor: (n: number) => number): Transition =>
  enterOpen(cell, from, now, cell.consecutiveOpenings + 1, openFor(cell.consecutiveOpenings + 1))

/** Opens the circuit for `openForMillis`, as its `openings`-th consecutive opening. */
const enterOpen = (
  cell: Cell,
  from: "Closed" | "HalfOpen",
  now: number,
  openings: number,
  openForMillis: number
): Transition => {
  cell.state = "Open"
  cell.generation++
  cell.consecutiveOpenings = openings
  cell.lastOpenFor = openForMillis
  cell.openUntil = now + openForMillis
  cell.probing = false
  cell.streak = 0
  cell.ring = []
  cell.ringFailures = 0
  return {
    key: cell.key,
    from,
    to: "Open",
    retryAfter: Duration.millis(cell.lastOpenFor),
    consecutiveOpenings: cell.consecutiveOpenings
  }
}

const close = (cell: Cell, now: number): Transition => {
  cell.state = "Closed"
  cell.generation++
  cell.probing = false
  cell.resetAt = now + cell.lastOpenFor
  cell.streak = 0
  cell.ring = []
  cell.ringFailures = 0
  return { key: cell.key, from: "HalfOpen", to: "Closed" }
}

/**
 * Records the outcome of a call admitted with `generation`; a call admitted
 * before the circuit last changed state is not counted.
 *
 * @since 0.1.0
 * @category state machine
 */
export const record = (
  cell: Cell,
  generation: number,
  outcome: Outcome,
  policy: TripPolicy,
  now: () => number,
  openFor: (consecutiveOpenings: number) => number
): Transition | undefined => {
  if (cell.generation !== generation) return undefined
  if (cell.state === "HalfOpen") {
    switch (outcome) {
      case "Ignored":
        cell.probing = false
        return undefined
      case "Failure":
        return open(cell, "HalfOpen", now(), openFor)
      case "Success":
        return close(cell, now())
    }
  }
  if (cell.state !== "Closed" || outcome === "Ignored") return undefined
  const failed = outcome === "Failure"
  if (policy._tag === "Consecutive") {
    if (!failed) {
      cell.streak = 0
      return undefined
    }
    cell.streak++
    return cell.streak >= policy.failures ? open(cell, "Closed", now(), openFor) : undefined
  }
  cell.ring.push(failed)
  if (failed) cell.ringFailures++
  while (cell.ring.length > policy.size) {
    if (cell.ring.shift()) cell.ringFailures--
  }
  return cell.ring.length >= policy.minimumCalls &&
    cell.ringFailures > 0 &&
    cell.ringFailures / cell.ring.length >= policy.threshold
    ? open(cell, "Closed", now(), openFor)
    : undefined
}

/**
 * The rejection for a call admitted with `generation` that is about to start
 * late, or `undefined` if it may start: the circuit is still in the state that
 * admitted it, or closed.
 *
 * @since 0.1.0
 * @category state machine
 */
export const recheck = (
  cell: Cell,
  generation: number,
  now: () => number
): Extract<Admission, { _tag: "Rejected" }> | undefined => {
  if (cell.generation === generation || cell.state === "Closed") return undefined
  return cell.state === "Open"
    ? { _tag: "Rejected", retryAfterMillis: Math.max(0, cell.openUntil - now()), probing: false }
    : { _tag: "Rejected", retryAfterMillis: 0, probing: true }
}

/**
 * Closes an open or half-open circuit because a probe outside the breaker
 * reached the server; the calls admitted before are not counted. Returns the
 * transitions, in effect's vocabulary (`Open -> HalfOpen -> Closed`).
 *
 * @since 0.1.0
 * @category state machine
 */
export const probeSucceeded = (cell: Cell, now: () => number): ReadonlyArray<Transition> => {
  if (cell.state === "Closed") return []
  const wasOpen = cell.state === "Open"
  const closed = close(cell, now())
  return wasOpen ? [{ key: cell.key, from: "Open", to: "HalfOpen" }, closed] : [closed]
}

/**
 * Opens the circuit because another process's breaker opened: for
 * `retryAfterMillis` from now, with the larger of both consecutive-openings
 * counts (so the next local opening backs off from there). The calls admitted
 * before are not counted. An open circuit only ever stays open longer: its
 * end moves later, never earlier, and no transition is reported.
 *
 * @since 0.1.0
 * @category state machine
 */
export const openedElsewhere = (
  cell: Cell,
  retryAfterMillis: number,
  consecutiveOpenings: number,
  now: () => number
): Transition | undefined => {
  if (!(retryAfterMillis > 0) || !Number.isFinite(retryAfterMillis)) return undefined
  const time = now()
  if (cell.state === "Open") {
    if (time + retryAfterMillis > cell.openUntil) cell.openUntil = time + retryAfterMillis
    return undefined
  }
  return enterOpen(
    cell,
    cell.state,
    time,
    Math.max(cell.consecutiveOpenings, Math.floor(consecutiveOpenings), 1),
    retryAfterMillis
  )
}

/**
 * Closes an open or half-open circuit because another process's probe found
 * the server back: the same transitions as `probeSucceeded`.
 *
 * @since 0.1.0
 * @category state machine
 */
export const closedElsewhere = (cell: Cell, now: () => number): ReadonlyArray<Transition> => probeSucceeded(cell, now)

/**
 * The state a cell reports, in effect's `CircuitBreaker.State` shape.
 *
 * @since 0.1.0
 * @category state machine
 */
export const stateOf = (cell: Cell, now: number): State => {
  switch (cell.state) {
    case "Closed":
      return { _tag: "Closed", key: cell.key }
    case "Open":
      return {
        _tag: "Open",
        key: cell.key,
        retryAfter: Duration.millis(Math.max(0, cell.openUntil - now)),
        consecutiveOpenings: cell.consecutiveOpenings
      }
    case "HalfOpen":
      return { _tag: "HalfOpen", key: cell.key, probing: cell.probing, consecutiveOpenings: cell.consecutiveOpenings }
  }
}

const maxReplayedOpenings = 64

/** Turns the open duration into a function of the consecutive openings, evaluating a schedule once. */
const openDurations = Effect.fnUntraced(function* (openDuration: Options["openDuration"], fn: string) {
  if (!Schedule.isSchedule(openDuration)) {
    const duration = Duration.fromInputUnsafe(openDuration)
    const millis = Duration.toMillis(duration)
    if (!Duration.isFinite(duration) || !(millis > 0)) {
      throw new RangeError(`${fn}: openDuration must be a positive finite duration, got ${Duration.format(duration)}`)
    }
    return () => millis
  }
  const step = yield* Schedule.toStep(openDuration)
  const delays: Array<number> = []
  let now = 0
  for (let attempt = 1; attempt <= maxReplayedOpenings; attempt++) {
    const result = yield* Effect.exit(step(now, attempt))
    if (Exit.isFailure(result)) break
    const delay = Duration.toMillis(result.value[1])
    delays.push(delay)
    now += delay
  }
  if (delays.length === 0 || delays.some((delay) => !(delay > 0) || !Number.isFinite(delay))) {
    throw new RangeError(`${fn}: the openDuration schedule must produce positive finite delays`)
  }
  return (openings: number) => delays[Math.min(openings, delays.length) - 1]!
})

/**
 * The error for a rejected admission: `CircuitHalfOpen` while the probe is in
 * flight, else `CircuitOpen`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const rejection = (key: string, admission: Extract<Admission, { _tag: "Rejected" }>): Rejection =>
  admission.probing
    ? new CircuitHalfOpen({ key })
    : new CircuitOpen({ key, retryAfter: Duration.millis(admission.retryAfterMillis) })

const classifyExit = <A, E>(exit: Exit.Exit<A, E>, classify: (exit: Exit.Exit<A, E>) => Outcome): Outcome =>
  Exit.isFailure(exit) && exit.cause.reasons.every((reason) => reason._tag === "Interrupt") ? "Ignored" : classify(exit)

/**
 * The in-process breaker.
 *
 * **Gotchas**
 *
 * It reads the `Clock` it was built with, so a test that drives time with
 * `TestClock` must build it under that clock.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (
  options: Options,
  hooks?: Hooks
): Effect.fn.Return<Service, never, Scope.Scope> {
  const openFor = yield* openDurations(options.openDuration, "Breaker.make")
  const clock = yield* Clock.Clock
  const now = () => clock.currentTimeMillisUnsafe()
  const pubsub = yield* Effect.acquireRelease(PubSub.sliding<Transition>(128), PubSub.shutdown)
  const cells = new Map<string, Cell>()
  // A client asks for its one key on every statement: the last cell found answers without a lookup.
  let lastCell: Cell | undefined
  const cellFor = (key: string): Cell => {
    if (lastCell !== undefined && lastCell.key === key) return lastCell
    let cell = cells.get(key)
    if (cell === undefined) {
      cell = makeCell(key)
      cells.set(key, cell)
      hooks?.onKey?.(key)
    }
    lastCell = cell
    return cell
  }
  const onTransition = hooks?.onTransition
  const publishElsewhere = (transition: Transition | undefined) => {
    if (transition !== undefined) PubSub.publishUnsafe(pubsub, transition)
  }
  const publish =
    onTransition === undefined
      ? publishElsewhere
      : (transition: Transition | undefined) => {
          if (transition === undefined) return
          PubSub.publishUnsafe(pubsub, transition)
          onTransition(transition)
        }

  const execute = <A, E, R>(
    key: string,
    self: Effect.Effect<A, E, R>,
    classify: (exit: Exit.Exit<A, E>) => Outcome
  ): Effect.Effect<A, E | Rejection, R> =>
    Effect.suspend((): Effect.Effect<A, E | Rejection, R> => {
      const cell = cellFor(key)
      const admission = admit(cell, now)
      if (admission._tag === "Rejected") return Effect.fail(rejection(key, admission))
      publish(admission.transition)
      return Effect.onExit(self, (exit) =>
        Effect.sync(() =>
          publish(record(cell, admission.generation, classifyExit(exit, classify), options.tripPolicy, now, openFor))
        )
      )
    })

  return {
    execute,
    state: (key) => Effect.sync(() => stateOf(cellFor(key), now())),
    transitions: Stream.fromPubSub(pubsub),
    local: {
      admit: (key) => {
        const admission = admit(cellFor(key), now)
        if (admission._tag === "Admitted") publish(admission.transition)
        return admission
      },
      record: (key, generation, outcome) =>
        publish(record(cellFor(key), generation, outcome, options.tripPolicy, now, openFor)),
      recheck: (key, generation) => recheck(cellFor(key), generation, now),
      probeSucceeded: (key) => {
        for (const transition of probeSucceeded(cellFor(key), now)) publish(transition)
      },
      openedElsewhere: (key, retryAfterMillis, consecutiveOpenings) =>
        publishElsewhere(openedElsewhere(cellFor(key), retryAfterMillis, consecutiveOpenings, now)),
      closedElsewhere: (key) => {
        for (const transition of closedElsewhere(cellFor(key), now)) publishElsewhere(transition)
      }
    }
  }
})

/**
 * The in-process breaker as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Breaker> => Layer.effect(Breaker, make(options))

const isCircuitBreakerError = (u: unknown): u is CircuitBreaker.CircuitBreakerError =>
  Predicate.hasProperty(u, CircuitBreaker.ErrorTypeId)

/**
 * The breaker backed by effect's `CircuitBreaker` and the `CircuitBreakerStore`
 * in context: `CircuitBreaker.layerStoreRedis` shares state across processes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerStore = (options: Options): Layer.Layer<Breaker, never, CircuitBreaker.CircuitBreakerStore> =>
  Layer.effect(
    Breaker,
    Effect.gen(function* () {
      // Validates the open duration the same way as the in-process layer.
      yield* openDurations(options.openDuration, "Breaker.layerStore")
      const breaker = yield* CircuitBreaker.make({ tripPolicy: options.tripPolicy, openDuration: options.openDuration })
      const toOutcome = (outcome: Outcome): CircuitBreaker.Outcome =>
        outcome === "Success"
          ? CircuitBreaker.success
          : outcome === "Failure"
            ? CircuitBreaker.failure()
            : CircuitBreaker.ignored
      return {
        execute: <A, E, R>(key: string, self: Effect.Effect<A, E, R>, classify: (exit: Exit.Exit<A, E>) => Outcome) =>
          breaker
            .execute(self, { key, classify: (exit) => toOutcome(classifyExit(exit, classify)) })
            .pipe(
              Effect.catchIf(
                isCircuitBreakerError,
                (error): Effect.Effect<never, Rejection> =>
                  error.reason._tag === "CircuitOpen"
                    ? Effect.fail(new CircuitOpen({ key, retryAfter: error.reason.retryAfter }))
                    : error.reason._tag === "CircuitHalfOpen"
                      ? Effect.fail(new CircuitHalfOpen({ key }))
                      : Effect.die(error)
              )
            ),
        state: (key) => Effect.orDie(breaker.state(key)),
        transitions: breaker.transitions
      } satisfies Service
    })
  )
