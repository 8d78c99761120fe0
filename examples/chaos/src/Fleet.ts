/**
 * A fleet through an outage: `processes` OS processes (`fleetWorker.ts`), each
 * with `callers` open-loop readers, on one server behind a counting proxy,
 * which stops for `outage` and comes back. Run once per configuration, side by
 * side: plain `@effect/sql-pg`; Sturdy with its defaults, each process on its
 * own, without and with its retry budget; Sturdy as a fleet (the breaker and
 * the budget shared through Redis); and the same three with a breaker that
 * never opens, which shows what the budget alone does. The figures are what
 * the server's port sees (connection attempts per second during the outage
 * and in the first second after it, which the proxy counts as it accepts
 * them), and those attempts over the first attempts the callers made during
 * the outage.
 */
import type { PgServer } from "@sturdy/testing"
import { FaultProxy } from "@sturdy/testing"
import { Duration, Effect, Redacted, type Scope } from "effect"
import { type ChildProcess, fork } from "node:child_process"

export interface Options {
  readonly server: PgServer.PgServerService
  readonly redisUrl: string
  readonly processes?: number | undefined
  readonly callers?: number | undefined
  readonly perCaller?: number | undefined
  readonly outage?: Duration.Input | undefined
}

/** One way of running the fleet's processes (see `fleetWorker.ts`). */
export interface Configuration {
  readonly label: string
  readonly client: "plain" | "sturdy"
  readonly share: boolean
  readonly budget: boolean
  readonly breaker: "default" | "never"
}

export const configurations: ReadonlyArray<Configuration> = [
  { label: "plain @effect/sql-pg", client: "plain", share: false, budget: false, breaker: "default" },
  { label: "Sturdy, each alone, no budget", client: "sturdy", share: false, budget: false, breaker: "default" },
  { label: "Sturdy, each alone (the defaults)", client: "sturdy", share: false, budget: true, breaker: "default" },
  { label: "Sturdy as a fleet (shared on Redis)", client: "sturdy", share: true, budget: true, breaker: "default" },
  { label: "breaker never opens, no budget", client: "sturdy", share: false, budget: false, breaker: "never" },
  { label: "breaker never opens, each its budget", client: "sturdy", share: false, budget: true, breaker: "never" },
  { label: "breaker never opens, fleet budget", client: "sturdy", share: true, budget: true, breaker: "never" }
]

/** What one process reports when it stops. */
export interface Worker {
  readonly calls: number
  readonly failed: number
  readonly failuresByReason: Readonly<Record<string, number>>
  readonly attempts: number
  readonly retries: number
  readonly rejections: number
  readonly connectionsOpened: number
}

export interface Side {
  readonly configuration: Configuration
  /** Connection attempts that reached the endpoint per second while the server was down. */
  readonly attemptsPerSecondDuringOutage: number
  /** Connection attempts that reached the endpoint in the first second after it was back. */
  readonly attemptsFirstSecondAfter: number
  /** Connection attempts during the outage over the first attempts the callers made in it (their fixed rate). */
  readonly attemptsPerFirstAttempt: number
  readonly calls: number
  readonly failed: number
  readonly failuresByReason: Readonly<Record<string, number>>
  /** Retries over calls: how much each first attempt was multiplied. */
  readonly retriesPerCall: number
  /** Attempts the clients made (first attempts, retries, rejected ones included) over calls. */
  readonly attemptsPerCall: number
  readonly rejections: number
  /** Connections the processes' pools opened over the whole run (the health probes' own sessions are not among them). */
  readonly poolConnectionsOpened: number
  /** Connections the endpoint accepted over the whole run: the pools' and the health probes'. */
  readonly acceptedTotal: number
}

const spawn = (env: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.callback<ChildProcess, Error>((resume) => {
      const child = fork(new URL("./fleetWorker.ts", import.meta.url), [], {
        env: { ...process.env, ...env },
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      child.once("message", (message) => {
        if (message === "ready") resume(Effect.succeed(child))
      })
      child.once("exit", (code) =>
        resume(Effect.fail(new Error(`fleetWorker exited with ${code} before it was ready`)))
      )
    }),
    (child) => Effect.sync(() => child.exitCode === null && child.kill())
  )

const stopWorker = (child: ChildProcess) =>
  Effect.callback<Worker, Error>((resume) => {
    child.once("message", (message) => resume(Effect.succeed(message as Worker)))
    child.once("exit", (code) => resume(Effect.fail(new Error(`fleetWorker exited with ${code} before it reported`))))
    child.send("stop")
  })

const side = (configuration: Configuration, options: Options): Effect.Effect<Side, unknown, Scope.Scope> =>
  Effect.scoped(
    Effect.gen(function* () {
      const { server } = options
      const proxy = yield* FaultProxy.make({ host: server.host, port: server.port, url: server.url })
      const env = {
        FLEET_URL: Redacted.value(proxy.url),
        FLEET_REDIS: options.redisUrl,
        FLEET_CALLERS: String(options.callers ?? 50),
        FLEET_PER_CALLER: String(options.perCaller ?? 2),
        FLEET_CLIENT: configuration.client,
        FLEET_SHARE: configuration.share ? "1" : "0",
        FLEET_BUDGET: configuration.budget ? "1" : "0",
        FLEET_BREAKER: configuration.breaker
      }
      const processes = options.processes ?? 4
      const firstAttemptsPerSecond = processes * (options.callers ?? 50) * (options.perCaller ?? 2)
      const workers = yield* Effect.forEach(Array.from({ length: processes }), () => spawn(env), {
        concurrency: "unbounded"
      })
      const accepted = Effect.map(proxy.connections, (c) => c.accepted)
      yield* Effect.sleep("2 seconds")
      const stoppedAt = performance.now()
      const before = yield* accepted
      yield* server.stop
      yield* Effect.sleep(options.outage ?? "10 seconds")
      const duringOutage = (yield* accepted) - before
      const outageSeconds = (performance.now() - stoppedAt) / 1000
      yield* server.start
      const back = yield* accepted
      yield* Effect.sleep("1 second")
      const firstSecond = (yield* accepted) - back
      yield* Effect.sleep("2 seconds")
      const reports = yield* Effect.forEach(workers, stopWorker, { concurrency: "unbounded" })
      const acceptedTotal = yield* accepted
      const failuresByReason: Record<string, number> = {}
      for (const report of reports) {
        for (const [reason, n] of Object.entries(report.failuresByReason)) {
          failuresByReason[reason] = (failuresByReason[reason] ?? 0) + n
        }
      }
      const calls = reports.reduce((n, r) => n + r.calls, 0)
      return {
        configuration,
        attemptsPerSecondDuringOutage: Math.round(duringOutage / outageSeconds),
        attemptsPerFirstAttempt: duringOutage / (firstAttemptsPerSecond * outageSeconds),
        attemptsFirstSecondAfter: firstSecond,
        calls,
        failed: reports.reduce((n, r) => n + r.failed, 0),
        failuresByReason,
        retriesPerCall: calls === 0 ? 0 : reports.reduce((n, r) => n + r.retries, 0) / calls,
        attemptsPerCall: calls === 0 ? 0 : reports.reduce((n, r) => n + r.attempts, 0) / calls,
        rejections: reports.reduce((n, r) => n + r.rejections, 0),
        poolConnectionsOpened: reports.reduce((n, r) => n + r.connectionsOpened, 0),
        acceptedTotal
      } satisfies Side
    })
  )

/** Every configuration, one after the other, on the same server. */
export const compare = (options: Options) =>
  Effect.gen(function* () {
    const sides: Array<Side> = []
    for (const configuration of configurations) sides.push(yield* side(configuration, options))
    return {
      sides,
      processes: options.processes ?? 4,
      callers: options.callers ?? 50,
      outageSeconds: Duration.toSeconds(Duration.fromInputUnsafe(options.outage ?? "10 seconds"))
    }
  })

export const describe = (result: Effect.Success<ReturnType<typeof compare>>): string => {
  const line = (s: Side) =>
    `  ${s.configuration.label.padEnd(38)} ${String(s.attemptsPerSecondDuringOutage).padStart(5)}/s ${s.attemptsPerFirstAttempt
      .toFixed(3)
      .padStart(
        7
      )} ${String(s.attemptsFirstSecondAfter).padStart(6)}   ${s.attemptsPerCall.toFixed(3).padStart(6)} ${s.retriesPerCall
      .toFixed(3)
      .padStart(6)}   ${String(s.acceptedTotal).padStart(5)} ${String(s.poolConnectionsOpened).padStart(5)}   ${String(
      s.calls
    ).padStart(5)} ${String(s.failed).padStart(5)}`
  return [
    `${result.processes} processes x ${result.callers} readers, a ${result.outageSeconds} s outage: connection attempts reaching the server's port`,
    "",
    `  ${"".padEnd(38)} ${"during the outage".padStart(15)} ${"1st s".padStart(6)}   ${"per call".padStart(13)}   ${"connections".padStart(11)}   ${"calls".padStart(11)}`,
    `  ${"".padEnd(38)} ${"/s".padStart(7)} ${"/first".padStart(7)} ${"after".padStart(6)}   ${"att.".padStart(6)} ${"retr.".padStart(6)}   ${"all".padStart(5)} ${"pools".padStart(5)}   ${"all".padStart(5)} ${"fail".padStart(5)}`,
    ...result.sides.map(line),
    "",
    "  /first: attempts at the port during the outage over the first attempts the callers made in it. att. and retr.:",
    "  the clients' own attempts (rejected ones excluded) and retries over their calls. pools: connections the pools opened",
    "  (the rest of all are the health probes' own sessions)."
  ].join("\n")
}
