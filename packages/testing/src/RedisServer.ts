/**
 * A real Redis for tests: Debian's `redis-server` on a free loopback port, in
 * a temporary directory, with no persistence.
 *
 * **Details**
 *
 * `make` starts `redis-server --port <free> --bind 127.0.0.1 --save ""
 * --appendonly no` in a fresh temporary directory and waits for its "Ready to
 * accept connections" line; the process is killed and the directory removed
 * when the scope closes. `stop` kills it (SIGKILL: an abrupt loss, what a
 * test of "Redis died" wants) and `start` brings it back on the same port,
 * empty. `redis-server` is looked up on PATH, then at `/usr/bin/redis-server`;
 * `source scripts/bootstrap.sh` installs it when missing.
 *
 * **Example** (Killing Redis mid-test)
 *
 * ```ts
 * import { RedisServer } from "@sturdy/testing"
 * import { Effect } from "effect"
 *
 * const program = Effect.gen(function*() {
 *   const redis = yield* RedisServer.make()
 *   // connect to redis.url ...
 *   yield* redis.stop
 *   yield* redis.start
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { Context, Deferred, Duration, Effect, Exit, Layer, Schema, type Scope, Semaphore } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Process from "./internal/process.ts"

/**
 * A failure to find, start or stop `redis-server`.
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisServerError extends Schema.TaggedError<RedisServerError>()("RedisServerError", {
  operation: Schema.Literals(["configure", "start", "stop"]),
  message: Schema.String
}) {}

/**
 * @since 0.1.0
 * @category models
 */
export interface RedisServerService {
  readonly host: string
  readonly port: number
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string
  /** Kills the server (SIGKILL) and waits for the process to end; a no-op when it is not running. */
  readonly stop: Effect.Effect<void>
  /** Starts the server again on the same port, empty; a no-op when it is running. */
  readonly start: Effect.Effect<void, RedisServerError>
  readonly running: Effect.Effect<boolean>
  /** The last lines the server wrote. */
  readonly log: Effect.Effect<ReadonlyArray<string>>
}

/**
 * @since 0.1.0
 * @category services
 */
export class RedisServer extends Context.Service<RedisServer, RedisServerService>()("@sturdy/testing/RedisServer") {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long `start` waits for the server to accept connections. Default 10 seconds. */
  readonly startTimeout?: Duration.Input | undefined
  /** The `redis-server` to run. Default: the one on PATH, else `/usr/bin/redis-server`. */
  readonly binary?: string | undefined
}

const host = "127.0.0.1"
const systemBinary = "/usr/bin/redis-server"
const installHint = "install it with `apt-get install -y redis-server` (or `source scripts/bootstrap.sh`)"
const logLines = 500

const describe = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

const freePort = Process.freePort(host).pipe(
  Effect.mapError((message) => new RedisServerError({ operation: "start", message: `RedisServer: ${message}` }))
)

/** The binary given, else `redis-server` on PATH, else Debian's `/usr/bin/redis-server`. */
const findBinary = (given: string | undefined): Effect.Effect<string, RedisServerError> =>
  Effect.promise(async () => {
    const candidates =
      given !== undefined
        ? [given]
        : [
            ...(process.env.PATH ?? "")
              .split(Path.delimiter)
              .filter((dir) => dir.length > 0)
              .map((dir) => Path.join(dir, "redis-server")),
            systemBinary
          ]
    for (const candidate of candidates) {
      if (await Process.isExecutable(candidate)) return candidate
    }
    return undefined
  }).pipe(
    Effect.flatMap((binary) =>
      binary === undefined
        ? Effect.fail(
            new RedisServerError({
              operation: "configure",
              message:
                given === undefined
                  ? `RedisServer: redis-server is not installed (not on PATH, not at ${systemBinary}); ${installHint}`
                  : `RedisServer: ${given} is not an executable; ${installHint}`
            })
          )
        : Effect.succeed(binary)
    )
  )

interface Running {
  readonly child: ChildProcess
  readonly exited: Deferred.Deferred<string>
  readonly ready: Deferred.Deferred<void>
}

/**
 * Starts `redis-server`; the process and its directory are removed when the
 * scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (options?: Options) => Effect.Effect<RedisServerService, RedisServerError, Scope.Scope> =
  Effect.fnUntraced(function* (options?: Options) {
    const startTimeout = Duration.fromInputUnsafe(options?.startTimeout ?? Duration.seconds(10))
    const binary = yield* findBinary(options?.binary)
    const port = yield* freePort
    const dir = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => Fs.mkdtemp(Path.join(Os.tmpdir(), "sturdy-redis-")),
        catch: (cause) => new RedisServerError({ operation: "configure", message: `RedisServer: ${describe(cause)}` })
      }),
      (dir) => Effect.promise(() => Fs.rm(dir, { recursive: true, force: true }))
    )
    const lines: Array<string> = []
    const lock = Semaphore.makeUnsafe(1)
    let running: Running | undefined

    const spawnProcess = Effect.sync((): Running => {
      const exited = Deferred.makeUnsafe<string>()
      const ready = Deferred.makeUnsafe<void>()
      const args = ["--port", String(port), "--bind", host, "--save", "", "--appendonly", "no", "--dir", dir]
      const child = spawn(binary, args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })
      const current: Running = { child, exited, ready }
      for (const stream of [child.stdout, child.stderr]) {
        let partial = ""
        stream?.on("data", (chunk: Buffer) => {
          const parts = (partial + chunk.toString("utf8")).split("\n")
          partial = parts.pop() ?? ""
          for (const line of parts) {
            if (line.length === 0) continue
            lines.push(line)
            if (lines.length > logLines) lines.shift()
            if (line.includes("Ready to accept connections")) Deferred.doneUnsafe(ready, Exit.void)
          }
        })
      }
      child.once("error", (cause) => {
        if (running === current) running = undefined
        Deferred.doneUnsafe(exited, Exit.succeed(cause.message))
      })
      child.once("close", (code, signal) => {
        if (running === current) running = undefined
        Deferred.doneUnsafe(
          exited,
          Exit.succeed(signal === null ? `redis-server exited with code ${code}` : `redis-server ended by ${signal}`)
        )
      })
      running = current
      return current
    })

    const kill = (instance: Running) =>
      Effect.suspend(() => {
        instance.child.kill("SIGKILL")
        return Effect.asVoid(Deferred.await(instance.exited))
      })

    const notReady = (ended: string) =>
      new RedisServerError({
        operation: "start",
        message: `RedisServer: ${ended} before accepting connections on ${host}:${port}; last log lines: ${lines.slice(-5).join(" | ")}`
      })

    const start = lock.withPermit(
      Effect.suspend(() => {
        if (running !== undefined) return Effect.void
        return Effect.flatMap(spawnProcess, (instance) =>
          Effect.raceFirst(
            Deferred.await(instance.ready),
            Effect.flatMap(Deferred.await(instance.exited), (ended) => Effect.fail(notReady(ended)))
          ).pipe(
            Effect.timeoutOrElse({
              duration: startTimeout,
              orElse: () => Effect.fail(notReady(`still starting after ${Duration.format(startTimeout)}`))
            }),
            Effect.onError(() => kill(instance))
          )
        )
      })
    )
    const stop = lock.withPermit(Effect.suspend(() => (running === undefined ? Effect.void : kill(running))))
    yield* Effect.acquireRelease(start, () =>
      Effect.suspend(() => (running === undefined ? Effect.void : kill(running)))
    )

    return {
      host,
      port,
      url: `redis://${host}:${port}`,
      stop,
      start,
      running: Effect.sync(() => running !== undefined),
      log: Effect.sync(() => lines.slice())
    } satisfies RedisServerService
  })

/**
 * A Redis server as the `RedisServer` service.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<RedisServer, RedisServerError> =>
  Layer.effect(RedisServer, make(options))
