import * as NodeRedis from "@effect/platform-node/NodeRedis"
import { assert, describe, it, layer } from "@effect/vitest"
import { Breaker, SharedBreaker } from "@sturdy/resilience"
import { Eventually, LogCapture, PgServer, RedisServer } from "@sturdy/testing"
import { Cause, Deferred, Duration, Effect, Redacted, type Scope } from "effect"
import { type ChildProcess, fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { Command, Reply, Report } from "./fleet/worker.ts"

const workerScript = fileURLToPath(new URL("./fleet/worker.ts", import.meta.url))

interface Transition {
  readonly from: string
  readonly to: string
  readonly at: number
  readonly retryAfterMillis: number | undefined
}

interface Worker {
  readonly id: number
  readonly transitions: Array<Transition>
  readonly call: (count: number) => Effect.Effect<ReadonlyArray<string>>
  readonly report: Effect.Effect<Report>
}

/** A forked fleet process, killed when the scope closes. */
const spawnWorker = (id: number, pgUrl: string, redisUrl: string): Effect.Effect<Worker, never, Scope.Scope> =>
  Effect.gen(function* () {
    const stderr: Array<string> = []
    const transitions: Array<Transition> = []
    const pending = new Map<number, (reply: Reply) => void>()
    const ready = yield* Deferred.make<void, Error>()
    let next = 0
    const child: ChildProcess = yield* Effect.acquireRelease(
      Effect.sync(() =>
        fork(workerScript, [], {
          env: { ...process.env, FLEET_ID: String(id), FLEET_PG_URL: pgUrl, FLEET_REDIS_URL: redisUrl },
          execArgv: [],
          silent: true
        })
      ),
      (child) =>
        Effect.callback<void>((resume) => {
          if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
          child.once("exit", () => resume(Effect.void))
          child.kill("SIGKILL")
        })
    )
    child.stderr?.on("data", (chunk: Buffer) => stderr.push(chunk.toString("utf8")))
    child.once("exit", (code) =>
      Deferred.doneUnsafe(
        ready,
        Effect.fail(new Error(`fleet worker ${id} exited with ${code}: ${stderr.join("").slice(-2000)}`))
      )
    )
    child.on("message", (reply: Reply) => {
      if (reply.type === "ready") Deferred.doneUnsafe(ready, Effect.void)
      else if (reply.type === "transition") transitions.push(reply)
      else pending.get(reply.id)?.(reply)
    })
    yield* Effect.orDie(Deferred.await(ready))
    const request = (command: (id: number) => Command) =>
      Effect.callback<Reply>((resume) => {
        const requestId = ++next
        pending.set(requestId, (reply) => {
          pending.delete(requestId)
          resume(Effect.succeed(reply))
        })
        child.send(command(requestId))
      })
    return {
      id,
      transitions,
      call: (count) =>
        Effect.map(
          request((id) => ({ type: "call", id, count })),
          (reply) => (reply.type === "called" ? reply.outcomes : [])
        ),
      report: Effect.flatMap(
        request((id) => ({ type: "report", id })),
        (reply) =>
          reply.type === "report" ? Effect.succeed(reply.report) : Effect.die(new Error(`unexpected ${reply.type}`))
      )
    } satisfies Worker
  })

const reports = (workers: ReadonlyArray<Worker>) => Effect.forEach(workers, (worker) => worker.report)
const lastTo = (worker: Worker, to: string) => worker.transitions.findLast((t) => t.to === to)

describe("SharedBreaker: 4 processes, one PostgreSQL, one Redis", () => {
  layer(PgServer.layerEmbedded, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.effect(
      "an opening reaches the other processes at once; one probe closes all; Redis killed: nothing fails, breakers work locally",
      () =>
        Effect.gen(function* () {
          const server = yield* PgServer.PgServer
          yield* Effect.addFinalizer(() => Effect.orDie(server.start))
          const redis = yield* RedisServer.make()
          const workers = yield* Effect.forEach([0, 1, 2, 3], (id) =>
            spawnWorker(id, Redacted.value(server.url), redis.url)
          )
          const [leader, ...followers] = workers as [Worker, ...Array<Worker>]

          // Every process uses the database once (its key's channel is subscribed then) and shares.
          for (const worker of workers) assert.deepStrictEqual(yield* worker.call(1), ["ok"])
          yield* Eventually.holds(
            Effect.map(reports(workers), (all) => all.every((r) => r.sharing && r.shared.subscribed === 1)),
            { timeout: "15 seconds", what: "every process shares and has subscribed" }
          )
          const before = yield* reports(workers)

          // PostgreSQL stops: the leader's breaker opens on its 5th failed attempt.
          yield* server.stop
          assert.deepStrictEqual(yield* leader.call(5), Array(5).fill("TransientError"))
          const opened = lastTo(leader, "Open")
          assert.isDefined(opened)
          yield* Eventually.holds(
            Effect.sync(() => followers.every((worker) => lastTo(worker, "Open") !== undefined)),
            { timeout: "2 seconds", what: "every follower's breaker opened" }
          )
          const propagation = followers.map((worker) => lastTo(worker, "Open")!.at - opened!.at)
          for (const millis of propagation) assert.isBelow(millis, 100, `propagation: ${propagation.join(", ")} ms`)
          for (const worker of followers) {
            assert.strictEqual(lastTo(worker, "Open")!.retryAfterMillis, opened!.retryAfterMillis)
          }
          // The followers reject at once, without an attempt or a connection of their own.
          const callsPerFollower = 20
          for (const worker of followers) {
            assert.deepStrictEqual(yield* worker.call(callsPerFollower), Array(callsPerFollower).fill("CircuitOpen"))
          }
          const whileOpen = yield* reports(workers)
          for (let i = 1; i < workers.length; i++) {
            assert.strictEqual(whileOpen[i]!.attempts, before[i]!.attempts, `follower ${i} made attempts`)
            assert.strictEqual(whileOpen[i]!.connectionsOpened, before[i]!.connectionsOpened)
            assert.strictEqual(whileOpen[i]!.rejections - before[i]!.rejections, callsPerFollower)
            assert.strictEqual(whileOpen[i]!.state, "Open")
          }
          const leaderAttempts = whileOpen[0]!.attempts - before[0]!.attempts
          // One process probes for the fleet while the circuit is open: the others leave their probes to it.
          yield* Eventually.holds(
            Effect.map(
              reports(workers),
              (all) => all.filter((r, i) => r.shared.probesLeft > before[i]!.shared.probesLeft).length === 3
            ),
            { timeout: "5 seconds", what: "three processes left their probes to the fourth" }
          )
          const probing = yield* reports(workers)
          const probers = probing.filter((r, i) => r.shared.probesRun > before[i]!.shared.probesRun)
          assert.strictEqual(probers.length, 1, "processes that probed while the circuit was open")

          // PostgreSQL is back: a health probe in one process closes its breaker, and the close reaches the others.
          yield* server.start
          yield* Eventually.holds(
            Effect.sync(() => workers.every((worker) => (lastTo(worker, "Closed")?.at ?? 0) > opened!.at)),
            { timeout: "10 seconds", what: "every breaker closed" }
          )
          const closes = workers.map((worker) => lastTo(worker, "Closed")!.at)
          const closeSpread = Math.max(...closes) - Math.min(...closes)
          const afterClose = yield* reports(workers)
          const closedHere = afterClose.map((r, i) => r.shared.published - whileOpen[i]!.shared.published)
          const closedByOthers = afterClose.filter((r, i) => r.shared.applied - whileOpen[i]!.shared.applied > 0)
          assert.strictEqual(closedHere.filter((n) => n > 0).length, 1, "processes whose own probe closed the circuit")
          assert.strictEqual(closedByOthers.length, 3, "breakers closed by the one process's probe")
          assert.isBelow(closeSpread, 100, `closes spread over ${closeSpread} ms`)
          for (const worker of workers) assert.deepStrictEqual(yield* worker.call(3), ["ok", "ok", "ok"])

          // Redis dies: no call fails because of it; each process says so once and falls back to its own breaker.
          yield* redis.stop
          yield* Eventually.holds(
            Effect.map(reports(workers), (all) => all.every((r) => !r.sharing && r.gauge === 0)),
            { timeout: "10 seconds", what: "every process noticed Redis is gone" }
          )
          for (const worker of workers) assert.deepStrictEqual(yield* worker.call(5), Array(5).fill("ok"))
          const alone = yield* reports(workers)
          for (const r of alone) {
            const warnings = r.sharingLogs.filter((l) => l.sharing === "local")
            assert.strictEqual(warnings.length, 1, JSON.stringify(r.sharingLogs))
            assert.strictEqual(warnings[0]!.level, "WARN")
          }
          // PostgreSQL stops again: every breaker opens on its own failed attempts, nobody else's.
          yield* server.stop
          for (const worker of workers) {
            assert.deepStrictEqual(yield* worker.call(6), [...Array(5).fill("TransientError"), "CircuitOpen"])
          }
          const localOpen = yield* reports(workers)
          for (let i = 0; i < workers.length; i++) {
            assert.strictEqual(localOpen[i]!.state, "Open")
            assert.strictEqual(localOpen[i]!.attempts - alone[i]!.attempts, 5)
          }
          yield* server.start

          // Redis is back: sharing resumes, and says so.
          yield* redis.start
          yield* Eventually.holds(
            Effect.map(reports(workers), (all) => all.every((r) => r.sharing && r.gauge === 1)),
            { timeout: "15 seconds", what: "every process shares again" }
          )
          const resumed = yield* reports(workers)
          for (const r of resumed)
            assert.deepStrictEqual(
              r.sharingLogs.map((l) => l.sharing),
              ["shared", "local", "shared"]
            )

          const avoided = followers.length * callsPerFollower
          console.log(
            [
              "SharedBreaker fleet (4 processes):",
              `  open propagation to the 3 followers: ${propagation.join(", ")} ms`,
              `  leader attempts before opening: ${leaderAttempts}; follower attempts while open: 0 (${avoided} calls rejected, ${avoided} attempts avoided, plus the 5 each would have made to open on its own: ${followers.length * 5})`,
              `  probes while open: ${probing.map((r, i) => `${r.shared.probesRun - before[i]!.shared.probesRun} run/${r.shared.probesLeft - before[i]!.shared.probesLeft} left`).join(", ")}`,
              `  closes: published by ${closedHere.filter((n) => n > 0).length} process(es), applied by ${closedByOthers.length}; spread ${closeSpread} ms`,
              "  Redis killed: 0 calls failed; every process warned once and opened on its own 5 attempts"
            ].join("\n")
          )
        }).pipe(Effect.scoped),
      120_000
    )
  })
})

describe("SharedBreaker in one process, against a real Redis", () => {
  const key = "127.0.0.1:5432/app"
  const make = (url: string, origin: string) =>
    SharedBreaker.make({
      tripPolicy: Breaker.consecutive(2),
      openDuration: "5 seconds",
      redis: NodeRedis.layer({ url }),
      checkInterval: "100 millis",
      origin
    })
  const fail = (breaker: SharedBreaker.Service) => {
    const admission = breaker.local.admit(key)
    if (admission._tag === "Admitted") breaker.local.record(key, admission.generation, "Failure")
    return admission._tag
  }
  const stateOf = (breaker: SharedBreaker.Service) => Effect.map(breaker.state(key), (state) => state._tag)
  const subscribed = (...breakers: ReadonlyArray<SharedBreaker.Service>) =>
    Effect.map(
      Effect.forEach(breakers, (b) => b.stats),
      (all) => all.every((stats) => stats.subscribed === 1)
    )

  it.live(
    "Redis down at start: the breakers build and work alone, say so once, and share once Redis is up; a late joiner opens from the state key",
    () =>
      Effect.gen(function* () {
        const redis = yield* RedisServer.make()
        yield* redis.stop
        const logs = yield* LogCapture.make
        yield* Effect.gen(function* () {
          const a = yield* make(redis.url, "a")
          const b = yield* make(redis.url, "b")
          assert.notStrictEqual(a.origin, b.origin)
          // Keys are subscribed on first use.
          assert.strictEqual(b.local.admit(key)._tag, "Admitted")
          yield* logs.waitFor((e) => e.annotations["sturdy.sharing"] === "local")
          yield* logs.waitFor((e) => e.annotations["sturdy.sharing"] === "local")
          assert.isFalse(yield* a.sharing)
          // Alone, a opens on its own failures; b is not told.
          fail(a)
          fail(a)
          assert.strictEqual(yield* stateOf(a), "Open")
          assert.strictEqual(yield* stateOf(b), "Closed")
          yield* Eventually.holds(
            Effect.map(a.stats, (stats) => stats.unpublished === 1 && stats.published === 0),
            { timeout: "2 seconds", what: "a's opening dropped, not sent" }
          )

          yield* redis.start
          yield* Eventually.holds(subscribed(a, b), { timeout: "10 seconds", what: "both subscribed" })
          yield* logs.waitFor((e) => e.annotations["sturdy.sharing"] === "shared")
          yield* logs.waitFor((e) => e.annotations["sturdy.sharing"] === "shared")
          // Shared now: b's opening opens a's (already open: it stays open longer) and c, a late joiner, opens from
          // the state key without failing once.
          fail(b)
          fail(b)
          assert.strictEqual(yield* stateOf(b), "Open")
          yield* Eventually.holds(
            Effect.map(a.stats, (stats) => stats.applied === 1),
            { timeout: "2 seconds", what: "a applied b's opening" }
          )
          const c = yield* make(redis.url, "c")
          assert.strictEqual(c.local.admit(key)._tag, "Admitted")
          const opened = yield* Eventually.until(c.state(key), {
            timeout: "5 seconds",
            what: "c opened from the state key",
            accept: (state) => state._tag === "Open"
          })
          const left = opened._tag === "Open" ? Duration.toMillis(opened.retryAfter) : 0
          assert.isAbove(left, 3000)
          assert.isAtMost(left, 5000)
          // A probe of c's closes everyone.
          c.local.probeSucceeded(key)
          yield* Eventually.holds(
            Effect.map(Effect.forEach([a, b], stateOf), (states) => states.every((s) => s === "Closed")),
            { timeout: "2 seconds", what: "a and b closed by c's probe" }
          )
          assert.strictEqual((yield* b.stats).own, 1)
          const warnings = (yield* logs.entries).filter((e) => e.annotations["sturdy.sharing"] === "local")
          assert.strictEqual(warnings.length, 2)
        }).pipe(Effect.provide(logs.layer))
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "retry budgets: what one process spends is gone for the others after a sync; the fleet's floor refills it",
    () =>
      Effect.gen(function* () {
        const redis = yield* RedisServer.make()
        const options = { redis: NodeRedis.layer({ url: redis.url }), budgetSyncInterval: "50 millis" } as const
        const a = yield* SharedBreaker.make({
          ...options,
          tripPolicy: Breaker.consecutive(2),
          openDuration: "5 seconds"
        })
        const b = yield* SharedBreaker.make({
          ...options,
          tripPolicy: Breaker.consecutive(2),
          openDuration: "5 seconds"
        })
        yield* Eventually.holds(
          Effect.map(Effect.all([a.sharing, b.sharing]), (all) => all.every(Boolean)),
          { timeout: "10 seconds", what: "both share" }
        )
        const settings = { ratio: 0.1, minRetriesPerSecond: 2 }
        const budgetA = yield* a.budgets.make(key, settings, Date.now())
        const budgetB = yield* b.budgets.make(key, settings, Date.now())
        // Apart, each would allow 100 retries; together they allow the fleet's 100 and what its floor adds.
        let granted = 0
        while (budgetA.tryAcquire(Date.now())) granted++
        assert.isAtLeast(granted, 100)
        yield* Eventually.holds(
          Effect.sync(() => budgetB.available(Date.now()) < 1),
          { timeout: "5 seconds", what: "b's budget lowered to the fleet's" }
        )
        assert.isFalse(budgetB.tryAcquire(Date.now()))
        // The fleet's floor (2 per second) gives a retry back within about half a second, to either process.
        const refilled = yield* Eventually.until(
          Effect.sync(() => budgetB.tryAcquire(Date.now())),
          { timeout: "5 seconds", what: "b retries again on the fleet's floor", accept: (ok) => ok }
        )
        assert.isTrue(refilled)
        assert.isAbove((yield* b.stats).budgetSyncs, 0)
      }).pipe(Effect.scoped),
    30_000
  )

  it.effect("a duration option that is not positive and finite is a RangeError naming it", () =>
    Effect.gen(function* () {
      const messages = yield* Effect.forEach(
        ["checkInterval", "maxMessageAge", "probeLease", "budgetSyncInterval"],
        (name) =>
          Effect.map(
            Effect.exit(
              Effect.scoped(
                SharedBreaker.make({
                  tripPolicy: Breaker.consecutive(2),
                  openDuration: "5 seconds",
                  redis: NodeRedis.layer({ url: "redis://127.0.0.1:1" }),
                  [name]: name === "probeLease" ? "0 millis" : "Infinity"
                })
              )
            ),
            (exit) => (exit._tag === "Failure" ? String(Cause.squash(exit.cause)) : "built")
          )
      )
      assert.deepStrictEqual(messages, [
        "RangeError: SharedBreaker.make: checkInterval must be a positive finite duration, got Infinity",
        "RangeError: SharedBreaker.make: maxMessageAge must be a positive finite duration, got Infinity",
        "RangeError: SharedBreaker.make: probeLease must be a positive finite duration, got 0",
        "RangeError: SharedBreaker.make: budgetSyncInterval must be a positive finite duration, got Infinity"
      ])
    })
  )

  it("messages: own, other key, too old and malformed ones are not applied", () => {
    const context = { origin: "me", key, now: 10_000, maxAgeMillis: 5000 }
    const open = SharedBreaker.messageOf(
      { key, from: "Closed", to: "Open", retryAfter: Duration.seconds(1), consecutiveOpenings: 2 },
      "other",
      9000
    )
    assert.deepStrictEqual(SharedBreaker.parseMessage(JSON.stringify(open)), open)
    assert.strictEqual(SharedBreaker.decide(open, context), "apply")
    assert.strictEqual(SharedBreaker.decide({ ...open!, origin: "me" }, context), "own")
    assert.strictEqual(SharedBreaker.decide({ ...open!, key: "other:5432/app" }, context), "ignore")
    assert.strictEqual(SharedBreaker.decide({ ...open!, sentAt: 4000 }, context), "ignore")
    assert.isUndefined(SharedBreaker.parseMessage("not json"))
    assert.isUndefined(SharedBreaker.parseMessage(JSON.stringify({ kind: "open", origin: "x", key, sentAt: 1 })))
    assert.isUndefined(
      SharedBreaker.messageOf({ key, from: "Open", to: "HalfOpen" }, "me", 0),
      "half-open is not shared: each process probes on its own schedule"
    )
    assert.deepStrictEqual(SharedBreaker.messageOf({ key, from: "HalfOpen", to: "Closed" }, "me", 5), {
      kind: "close",
      origin: "me",
      key,
      sentAt: 5
    })
  })
})
