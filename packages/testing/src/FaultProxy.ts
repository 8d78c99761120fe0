/**
 * A TCP proxy between a PostgreSQL client and its server, with network and
 * protocol faults a test switches on and off while the client runs.
 *
 * **Details**
 *
 * `make` listens on a free port of `127.0.0.1` and forwards every connection
 * to the upstream server byte for byte until a test calls `set` with one or
 * more faults. Faults apply at once, to existing and new connections alike;
 * `clear` (or `set()` with no fault) restores faithful forwarding. Closing the
 * scope closes the listener and every connection.
 *
 * The proxy reads the PostgreSQL wire protocol only as far as its faults need:
 * it splits the client's stream into messages (so `ResetOnMessage` can stop a
 * given statement, also when the driver reuses a named prepared statement),
 * and it finds message boundaries in the server's answers (so
 * `ResetOnMessage` with `"after-server-answers"` can withhold exactly the
 * answer to that statement). A TLS session is forwarded without being read.
 *
 * A reset stops forwarding, closes or resets the server side, and sends the
 * client an RST about 20 ms later: an RST that reaches a client with unread
 * data can surface as a plain end of stream, so the client is given time to
 * read what it was already sent.
 *
 * **When to use**
 *
 * Integration tests of a client's resilience against a real server: what does
 * the client report, and what has the server done, when the network fails
 * mid-query, when a COMMIT's answer is lost, when the server refuses new
 * sessions at start-up? Server-side faults (terminating backends, stopping the
 * server) are `PgServer`'s job; use both together.
 *
 * **Gotchas**
 *
 * - The faults that act on a connection's start (`Blackhole`, `StartupError`)
 *   apply to connections accepted after `set`; the ones that act on traffic
 *   apply to every connection.
 * - `pause` holds everything forwarded, start-up included: a client that
 *   connects while the proxy is paused waits for `resume` or its own connect
 *   timeout. `StartupError` answers come from the proxy itself, paused or not.
 * - A reset connection is gone from `connections.open` at once, but a client
 *   learns of it only when its socket reports the RST: a pooled client may
 *   still hand out that connection for one more statement.
 * - The listener closes while `Refuse` is active and listens again on the
 *   same port when it is removed; should another process take the port in
 *   between, that `set` dies with a `FaultProxyError`.
 * - The proxy is the network, so its delays run on wall-clock time (Node
 *   timers in the socket callbacks), never on `TestClock`: a test that
 *   adjusts a `TestClock` still sees real latency, pacing and reset grace.
 *
 * **Example** (A COMMIT whose answer is lost)
 *
 * ```ts
 * import * as PgClient from "@effect/sql-pg/PgClient"
 * import { layer } from "@effect/vitest"
 * import { FaultProxy, PgServer } from "@sturdy/testing"
 * import { Effect } from "effect"
 * import * as Reactivity from "effect/reactivity/Reactivity"
 *
 * layer(PgServer.layerEmbedded, { excludeTestServices: true })((it) => {
 *   it.effect("the server commits, the client never hears it", () =>
 *     Effect.gen(function*() {
 *       const server = yield* PgServer.PgServer
 *       yield* server.admin`CREATE TABLE t (id int)`
 *       const proxy = yield* FaultProxy.make(server)
 *       const sql = yield* PgClient.make({ url: proxy.url }).pipe(Effect.provide(Reactivity.layer))
 *       yield* proxy.set(FaultProxy.resetOnMessage("COMMIT", "after-server-answers"))
 *       const exit = yield* Effect.exit(sql.withTransaction(sql`INSERT INTO t VALUES (1)`))
 *       // => a SqlError: ConnectionError "PgConnection: Socket error" (ECONNRESET), operation "query"
 *       yield* server.admin`SELECT count(*)::int AS n FROM t`
 *       // => [{ n: 1 }]
 *     }))
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Redacted, Schema, type Scope, Semaphore } from "effect"
import * as Net from "node:net"
import { ProxyState } from "./internal/relay.ts"
import { PgServer } from "./PgServer.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface FaultProxyService {
  /** Always `"127.0.0.1"`. */
  readonly host: string
  /** The port the proxy listens on; it stays the same across `Refuse`. */
  readonly port: number
  /** The upstream URL rewritten to point at the proxy (same user, password, database), redacted. */
  readonly url: Redacted.Redacted<string>
  /**
   * Replaces the active faults (an empty list = forward faithfully). Applies to
   * existing and new connections. Dies with a `FaultProxyError` if, on leaving
   * `Refuse`, the port cannot be listened on again.
   */
  readonly set: (...faults: ReadonlyArray<Fault>) => Effect.Effect<void>
  /** Removes every fault: the same as `set()`. */
  readonly clear: Effect.Effect<void>
  /** Resets (RST) every open connection now; returns how many, once every client has been sent its RST. */
  readonly resetAll: Effect.Effect<number>
  /** Stops forwarding in both directions, buffering; `resume` flushes. */
  readonly pause: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
  /** Open client connections right now, and accepted since start. */
  readonly connections: Effect.Effect<{ readonly open: number; readonly accepted: number }>
  /**
   * Bytes received and not yet forwarded, per direction, over every open
   * connection (held by `pause`, `Latency` or `Bandwidth`): for synchronising
   * tests, for example to know a query reached the proxy while it is paused.
   */
  readonly held: Effect.Effect<{ readonly toServer: number; readonly toClient: number }>
  /**
   * Waits until a client message matching a `ResetOnMessage` fault has been
   * handled (its client has been sent the RST) since the faults were last replaced, then
   * returns how many have been since: for synchronising tests.
   */
  readonly messageFaultsFired: Effect.Effect<number>
}

/**
 * @since 0.1.0
 * @category services
 */
export class FaultProxy extends Context.Service<FaultProxy, FaultProxyService>()("@sturdy/testing/FaultProxy") {}

/**
 * A failure to start the proxy, or to listen again after `Refuse`.
 *
 * @since 0.1.0
 * @category errors
 */
export class FaultProxyError extends Schema.TaggedError<FaultProxyError>()("FaultProxyError", {
  operation: Schema.Literals(["start", "listen"]),
  message: Schema.String
}) {}

/**
 * Where the proxy forwards to. `PgServerService` has this shape.
 *
 * @since 0.1.0
 * @category models
 */
export interface Upstream {
  readonly host: string
  readonly port: number
  /** The server's URL; the proxy's `url` is this one pointed at the proxy. */
  readonly url: Redacted.Redacted<string>
}

/**
 * Client to server, or server to client.
 *
 * @since 0.1.0
 * @category models
 */
export type Direction = "toServer" | "toClient"

/**
 * Delays every chunk, in both directions, by `millis`; chunks keep their order.
 * Several `Latency` faults add up.
 *
 * @since 0.1.0
 * @category models
 */
export interface Latency {
  readonly _tag: "Latency"
  readonly millis: number
}

/**
 * Closes the listening socket: new connections get `ECONNREFUSED`, existing
 * ones are untouched. Removing it listens again on the same port.
 *
 * @since 0.1.0
 * @category models
 */
export interface Refuse {
  readonly _tag: "Refuse"
}

/**
 * Resets a connection once `bytes` bytes have been forwarded in `direction`,
 * counted from the later of the connection's start and the `set` call. The
 * first `bytes` bytes are delivered, nothing after them.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResetAfterBytes {
  readonly _tag: "ResetAfterBytes"
  readonly bytes: number
  readonly direction: Direction
}

/**
 * New connections are accepted, then nothing is ever forwarded nor answered:
 * the client waits for its own timeout.
 *
 * @since 0.1.0
 * @category models
 */
export interface Blackhole {
  readonly _tag: "Blackhole"
}

/**
 * Limits each connection's throughput, in each direction, to about
 * `bytesPerSecond`. The slowest of several `Bandwidth` faults wins.
 *
 * @since 0.1.0
 * @category models
 */
export interface Bandwidth {
  readonly _tag: "Bandwidth"
  readonly bytesPerSecond: number
}

/**
 * The proxy answers a new connection's start-up message itself with a
 * PostgreSQL `ErrorResponse` (severity `FATAL`, this SQLSTATE and message),
 * then closes it; the server is never contacted. An `SSLRequest` before the
 * start-up message is answered `N` (no TLS). `57P03` (`cannot_connect_now`) is
 * what a server that is starting up or shutting down sends.
 *
 * @since 0.1.0
 * @category models
 */
export interface StartupError {
  readonly _tag: "StartupError"
  readonly sqlState: string
  readonly message: string
}

/**
 * Resets a connection at the client message that runs `sql`: a simple
 * `Query` with that text, a `Parse` of it, or a `Bind` of a statement that
 * was prepared from it (compared trimmed and case-insensitively).
 *
 * **Details**
 *
 * - `"before-server"`: the message and everything after it are dropped, and
 *   both the client and the server connection are reset; the server never
 *   sees the statement.
 * - `"after-server-answers"`: the statement runs to the end of its cycle
 *   (`Sync`); the server's answer (its `CommandComplete` or `ErrorResponse`)
 *   is withheld, the server connection is closed and the client connection is
 *   reset. For a `COMMIT`, the server has committed and the client never
 *   hears it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResetOnMessage {
  readonly _tag: "ResetOnMessage"
  readonly sql: string
  readonly when: "before-server" | "after-server-answers"
}

/**
 * A fault the proxy can inject; build one with the constructors below, which
 * validate their arguments.
 *
 * @since 0.1.0
 * @category models
 */
export type Fault = Latency | Refuse | ResetAfterBytes | Blackhole | Bandwidth | StartupError | ResetOnMessage

// --- starting the proxy: the listener and the URL; the relay itself is in internal/relay.ts ---

const host = "127.0.0.1"

/** Listens on `port` of `host` (0: a free one), handing each accepted client to `accept`. */
const listen = (port: number, accept: (client: Net.Socket) => void): Effect.Effect<Net.Server, FaultProxyError> =>
  Effect.callback<Net.Server, FaultProxyError>((resume) => {
    const server = Net.createServer({ allowHalfOpen: true, noDelay: true }, accept)
    const onError = (cause: Error) =>
      resume(
        Effect.fail(
          new FaultProxyError({
            operation: port === 0 ? "start" : "listen",
            message: `FaultProxy: cannot listen on ${host}:${port}: ${cause.message}`
          })
        )
      )
    server.once("error", onError)
    server.listen(port, host, () => {
      server.off("error", onError)
      resume(Effect.succeed(server))
    })
    return Effect.sync(() => {
      server.close()
    })
  })

/** The upstream URL pointed at the proxy's `port`. */
const pointedAt = (
  url: Redacted.Redacted<string>,
  port: number
): Effect.Effect<Redacted.Redacted<string>, FaultProxyError> =>
  Effect.try({
    try: () => {
      const parsed = new URL(Redacted.value(url))
      parsed.hostname = host
      parsed.port = String(port)
      // libpq lets query parameters override the authority.
      parsed.searchParams.delete("host")
      parsed.searchParams.delete("port")
      return Redacted.make(parsed.toString())
    },
    // The URL carries a password: never quote it.
    catch: () =>
      new FaultProxyError({ operation: "start", message: "FaultProxy.make: upstream.url is not a valid URL" })
  })

/**
 * Starts a proxy in front of `upstream`; the listener and every connection are
 * closed when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (upstream: Upstream) => Effect.Effect<FaultProxyService, FaultProxyError, Scope.Scope> =
  Effect.fnUntraced(function* (upstream: Upstream) {
    const proxy = new ProxyState(upstream)
    let listener: Net.Server | undefined = yield* listen(0, proxy.accept)
    const port = (listener.address() as Net.AddressInfo).port
    const url = yield* pointedAt(upstream.url, port)
    // Serialises `set` (which may listen again) with itself and with closing.
    const lock = Semaphore.makeUnsafe(1)
    yield* Effect.addFinalizer(() =>
      lock.withPermit(
        Effect.sync(() => {
          proxy.closed = true
          listener?.close()
          listener = undefined
          for (const connection of proxy.connections) connection.destroy()
          proxy.connections.clear()
        })
      )
    )

    const set = (...faults: ReadonlyArray<Fault>): Effect.Effect<void> =>
      lock.withPermit(
        Effect.suspend(() => {
          if (proxy.closed) return Effect.void
          proxy.replaceFaults(faults)
          const refusing = faults.some((fault) => fault._tag === "Refuse")
          if (refusing && listener !== undefined) {
            // Closing the listening socket is immediate; connections already accepted live on.
            listener.close()
            listener = undefined
          } else if (!refusing && listener === undefined) {
            return listen(port, proxy.accept).pipe(
              Effect.flatMap((server) =>
                Effect.sync(() => {
                  listener = server
                })
              ),
              Effect.orDie
            )
          }
          return Effect.void
        })
      )

    const resetAll = Effect.callback<number>((resume) => {
      let started = 0
      let pending = 0
      const clientReset = () => {
        pending--
        if (pending === 0) resume(Effect.succeed(started))
      }
      for (const connection of Array.from(proxy.connections)) {
        if (connection.reset(clientReset)) {
          started++
          pending++
        }
      }
      if (started === 0) resume(Effect.succeed(0))
    })

    const messageFaultsFired = Effect.callback<number>((resume) => {
      if (proxy.fired > 0) return resume(Effect.succeed(proxy.fired))
      const waiter = (fired: number) => resume(Effect.succeed(fired))
      proxy.firedWaiters.add(waiter)
      return Effect.sync(() => {
        proxy.firedWaiters.delete(waiter)
      })
    })

    return {
      host,
      port,
      url,
      set,
      clear: set(),
      resetAll,
      pause: Effect.sync(() => proxy.setPaused(true)),
      resume: Effect.sync(() => proxy.setPaused(false)),
      connections: Effect.sync(() => ({ open: proxy.connections.size, accepted: proxy.accepted })),
      held: Effect.sync(() => {
        let toServer = 0
        let toClient = 0
        for (const connection of proxy.connections) {
          toServer += connection.held("toServer")
          toClient += connection.held("toClient")
        }
        return { toServer, toClient }
      }),
      messageFaultsFired
    } satisfies FaultProxyService
  })

/**
 * A proxy in front of `upstream`, as the `FaultProxy` service.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (upstream: Upstream): Layer.Layer<FaultProxy, FaultProxyError> =>
  Layer.effect(FaultProxy, make(upstream))

/**
 * A proxy in front of the `PgServer` the layer is given: tests reach the
 * server through `FaultProxy.url` and control it through `PgServer`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromPgServer: Layer.Layer<FaultProxy, FaultProxyError, PgServer> = Layer.effect(
  FaultProxy,
  Effect.flatMap(PgServer, make)
)

// --- fault constructors ---

const show = (value: unknown): string => (typeof value === "string" ? JSON.stringify(value) : String(value))

const invalid = (name: string, rule: string, value: unknown): never => {
  throw new RangeError(`FaultProxy.${name}: ${rule}, got ${show(value)}`)
}

/**
 * Delays every chunk by `millis` in each direction.
 *
 * @since 0.1.0
 * @category constructors
 */
export const latency = (millis: number): Latency => {
  if (!Number.isFinite(millis) || millis < 0) invalid("latency", "millis must be a finite number >= 0", millis)
  return { _tag: "Latency", millis }
}

/**
 * New connections get `ECONNREFUSED`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const refuse: Refuse = { _tag: "Refuse" }

/**
 * Resets a connection after `bytes` bytes in `direction`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resetAfterBytes = (bytes: number, direction: Direction): ResetAfterBytes => {
  if (!Number.isInteger(bytes) || bytes < 0) invalid("resetAfterBytes", "bytes must be an integer >= 0", bytes)
  if (direction !== "toServer" && direction !== "toClient") {
    invalid("resetAfterBytes", `direction must be "toServer" or "toClient"`, direction)
  }
  return { _tag: "ResetAfterBytes", bytes, direction }
}

/**
 * New connections hang: accepted, never answered.
 *
 * @since 0.1.0
 * @category constructors
 */
export const blackhole: Blackhole = { _tag: "Blackhole" }

/**
 * Limits throughput to about `bytesPerSecond` per connection and direction.
 *
 * @since 0.1.0
 * @category constructors
 */
export const bandwidth = (bytesPerSecond: number): Bandwidth => {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < 1) {
    invalid("bandwidth", "bytesPerSecond must be a finite number >= 1", bytesPerSecond)
  }
  return { _tag: "Bandwidth", bytesPerSecond }
}

/**
 * New connections fail at start-up with a `FATAL` error of this SQLSTATE.
 *
 * @since 0.1.0
 * @category constructors
 */
export const startupError = (sqlState: string, message: string): StartupError => {
  if (typeof sqlState !== "string" || !/^[0-9A-Z]{5}$/.test(sqlState)) {
    invalid("startupError", "sqlState must be 5 digits or upper-case letters", sqlState)
  }
  if (typeof message !== "string" || message.includes("\0")) {
    invalid("startupError", "message must be a string without NUL", message)
  }
  return { _tag: "StartupError", sqlState, message }
}

/**
 * Resets a connection at the statement `sql`, before the server sees it or
 * after it has answered.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resetOnMessage = (sql: string, when: ResetOnMessage["when"]): ResetOnMessage => {
  if (typeof sql !== "string" || sql.trim().length === 0) {
    invalid("resetOnMessage", "sql must be a non-empty statement", sql)
  }
  if (when !== "before-server" && when !== "after-server-answers") {
    invalid("resetOnMessage", `when must be "before-server" or "after-server-answers"`, when)
  }
  return { _tag: "ResetOnMessage", sql, when }
}
