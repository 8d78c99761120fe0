/**
 * A fleet through an outage: `processes` OS processes (`fleetWorker.ts`), each
 * with `callers` open-loop readers, on one server behind a counting proxy,
 * which stops for `outage` and comes back. Run twice, side by side: each
 * process on its own (local breakers, no retry budget), then as a fleet (the
 * breaker shared through Redis, and the retry budget). The figure is what the
 * server's port sees: connection attempts per second during the outage and in
 * the first second after it, which the proxy counts as it accepts them.
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
  readonly mode: "local" | "fleet"
  /** Connection attempts that reached the endpoint per second while the server was down. */
  readonly attemptsPerSecondDuringOutage: number
  /** Connection attempts that reached the endpoint in the first second after it was back. */
  readonly attemptsFirstSecondAfter: number
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

const spawn = (mode: "local" | "fleet", env: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.callback<ChildProcess, Error>((resume) => {
      const child = fork(new URL("./fleetWorker.ts", import.meta.url), [], {
        env: { ...process.env, ...env, FLEET_MODE: mode },
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

const side = (mode: "local" | "fleet", options: Options): Effect.Effect<Side, unknown, Scope.Scope> =>
  Effect.scoped(
    Effect.gen(function* () {
      const { server } = options
      const proxy = yield* FaultProxy.make({ host: server.host, port: server.port, url: server.url })
      const env = {
        FLEET_URL: Redacted.value(proxy.url),
        FLEET_REDIS: options.redisUrl,
        FLEET_CALLERS: String(options.callers ?? 50),
        FLEET_PER_CALLER: String(options.perCaller ?? 2)
      }
      const workers = yield* Effect.forEach(Array.from({ length: options.processes ?? 4 }), () => spawn(mode, env), {
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
        mode,
        attemptsPerSecondDuringOutage: Math.round(duringOutage / outageSeconds),
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

/** Both runs, one after the other, on the same server. */
export const compare = (options: Options) =>
  Effect.gen(function* () {
    const local = yield* side("local", options)
    const fleet = yield* side("fleet", options)
    return { local, fleet, outageSeconds: Duration.toSeconds(Duration.fromInputUnsafe(options.outage ?? "10 seconds")) }
  })

export const describe = (result: Effect.Success<ReturnType<typeof compare>>): string => {
  const line = (label: string, s: Side) =>
    `  ${label.padEnd(44)} ${String(s.attemptsPerSecondDuringOutage).padStart(6)}/s during   ${String(
      s.attemptsFirstSecondAfter
    ).padStart(
      5
    )} in the first second after   attempts per call ${s.attemptsPerCall.toFixed(3)}, retries per call ${s.retriesPerCall.toFixed(3)}, rejections ${s.rejections}   connections: ${s.acceptedTotal} accepted, ${s.poolConnectionsOpened} by the pools   calls ${
      s.calls
    }, failed ${s.failed}`
  return [
    `4 processes, a ${result.outageSeconds} s outage: connection attempts reaching the server's port`,
    line("each process on its own (local breakers, no budget)", result.local),
    line("as a fleet (breaker shared on Redis, retry budget)", result.fleet)
  ].join("\n")
}
