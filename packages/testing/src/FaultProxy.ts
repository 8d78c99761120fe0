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
import { PgServer } from "./PgServer.ts"

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

// --- the proxy itself: plain Node sockets, driven by the faults in `ProxyState` ---

const host = "127.0.0.1"
/** How long a client is given to read what it was sent before its RST. */
const resetGraceMillis = 20
/** Above this many queued bytes (paused, slow, delayed), stop reading from the sender. */
const maxQueuedBytes = 4 * 1024 * 1024
/** Bandwidth pacing granularity: each write carries about this much of a second's budget. */
const sliceSeconds = 0.01
const sslRequestCode = 80877103
const gssEncRequestCode = 80877104
const cancelRequestCode = 80877102

const normalizeSql = (sql: string): string => sql.trim().toLowerCase()

/** A NUL-terminated string at `offset`, and the offset after its NUL. */
const readCString = (bytes: Buffer, offset: number): { readonly value: string; readonly next: number } => {
  const end = bytes.indexOf(0, offset)
  const stop = end === -1 ? bytes.length : end
  return { value: bytes.toString("utf8", offset, stop), next: stop + 1 }
}

/** A backend `ErrorResponse`: severity FATAL, the SQLSTATE, the message. */
const errorResponse = (sqlState: string, message: string): Buffer => {
  const fields = [
    ["S", "FATAL"],
    ["V", "FATAL"],
    ["C", sqlState],
    ["M", message]
  ] as const
  const body = Buffer.concat([
    ...fields.map(([code, value]) => Buffer.concat([Buffer.from(code, "ascii"), Buffer.from(`${value}\0`, "utf8")])),
    Buffer.from([0])
  ])
  const header = Buffer.alloc(5)
  header.write("E", 0, "ascii")
  header.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([header, body])
}

type FrameKind = "untyped" | "typed" | "opaque"

/**
 * Splits the client's stream into whole messages: the untyped start-up
 * messages first (length, code), then typed ones (type byte, length). A TLS
 * session, or anything that does not parse, is passed through as it comes.
 */
class FrontendFramer {
  mode: FrameKind = "untyped"
  private pending: Buffer = Buffer.alloc(0)

  push(chunk: Buffer): Array<{ readonly bytes: Buffer; readonly kind: FrameKind }> {
    const data = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    const frames: Array<{ readonly bytes: Buffer; readonly kind: FrameKind }> = []
    let offset = 0
    while (offset < data.length) {
      if (this.mode === "opaque") {
        frames.push({ bytes: data.subarray(offset), kind: "opaque" })
        offset = data.length
        break
      }
      const lengthAt = this.mode === "typed" ? 1 : 0
      if (data.length - offset < lengthAt + 4) break
      const length = data.readInt32BE(offset + lengthAt)
      if (length < (this.mode === "typed" ? 4 : 8)) {
        this.mode = "opaque"
        continue
      }
      const total = lengthAt + length
      if (data.length - offset < total) break
      const bytes = data.subarray(offset, offset + total)
      frames.push({ bytes, kind: this.mode })
      // A StartupMessage (protocol 3.x) ends the untyped part; SSLRequest,
      // GSSENCRequest and CancelRequest do not.
      if (this.mode === "untyped" && bytes.readInt32BE(4) >>> 16 === 3) this.mode = "typed"
      offset += total
    }
    this.pending = data.subarray(offset)
    return frames
  }
}

/**
 * Follows message boundaries in the server's stream as it is forwarded,
 * without holding any bytes back; reports each message's type byte.
 */
class BackendScanner {
  mode: "typed" | "sslResponse" | "opaque" = "typed"
  private headerSeen = 0
  private length = 0
  private remaining = 0

  /**
   * Scans `bytes`; stops at the first message whose type `cutBefore` accepts
   * and returns its offset, or returns `bytes.length`.
   */
  scan(bytes: Buffer, onOpaque: () => void, cutBefore: (type: number) => boolean): number {
    let offset = 0
    while (offset < bytes.length) {
      if (this.mode === "opaque") return bytes.length
      const byte = bytes[offset]!
      if (this.mode === "sslResponse") {
        // 'S' / 'G': TLS or GSS encryption follows, unreadable from here on.
        // 'N': plaintext start-up follows. Anything else is an ErrorResponse.
        if (byte === 0x53 || byte === 0x47) {
          this.mode = "opaque"
          onOpaque()
          return bytes.length
        }
        this.mode = "typed"
        if (byte === 0x4e) offset++
        continue
      }
      if (this.headerSeen === 0) {
        if (cutBefore(byte)) return offset
        this.headerSeen = 1
        this.length = 0
        offset++
      } else if (this.headerSeen < 5) {
        this.length = this.length * 256 + byte
        this.headerSeen++
        offset++
        if (this.headerSeen === 5) {
          this.remaining = this.length - 4
          if (this.remaining < 0) this.mode = "opaque"
          else if (this.remaining === 0) this.headerSeen = 0
        }
      } else {
        const take = Math.min(this.remaining, bytes.length - offset)
        offset += take
        this.remaining -= take
        if (this.remaining === 0) this.headerSeen = 0
      }
    }
    return bytes.length
  }
}

type Outgoing =
  | {
      readonly _tag: "Data"
      readonly bytes: Buffer
      readonly notBefore: number
      /** Client→server only: the one whole message these bytes are. */
      readonly kind: FrameKind | undefined
    }
  | { readonly _tag: "End"; readonly notBefore: number }

/** What the proxy holds for one accepted client connection. */
interface Tracked {
  /** Starts a reset; `onClientReset` runs once the client has been sent its RST. False if already closing. */
  readonly reset: (onClientReset: () => void) => boolean
  /** Re-evaluates queued traffic after the faults or the pause changed. */
  readonly kick: (faultsReplaced: boolean) => void
  /** Closes everything at once (the proxy's scope is closing). */
  readonly destroy: () => void
  /** Bytes received in `direction` and not yet forwarded. */
  readonly held: (direction: Direction) => number
}

/** An RST, or a plain close for a socket still connecting (an RST needs a connection). */
const resetSocket = (socket: Net.Socket): void => {
  if (socket.connecting || socket.destroyed) socket.destroy()
  else socket.resetAndDestroy()
}

class ProxyState {
  readonly upstream: Upstream
  faults: ReadonlyArray<Fault> = []
  paused = false
  closed = false
  accepted = 0
  readonly connections = new Set<Tracked>()
  fired = 0
  readonly firedWaiters = new Set<(fired: number) => void>()

  constructor(upstream: Upstream) {
    this.upstream = upstream
  }

  replaceFaults(faults: ReadonlyArray<Fault>): void {
    this.faults = faults
    this.fired = 0
    for (const connection of this.connections) connection.kick(true)
  }

  setPaused(paused: boolean): void {
    this.paused = paused
    for (const connection of this.connections) connection.kick(false)
  }

  messageFaultFired(): void {
    this.fired++
    for (const waiter of this.firedWaiters) waiter(this.fired)
    this.firedWaiters.clear()
  }

  latencyMillis(): number {
    let millis = 0
    for (const fault of this.faults) if (fault._tag === "Latency") millis += fault.millis
    return millis
  }

  bytesPerSecond(): number | undefined {
    let slowest: number | undefined
    for (const fault of this.faults) {
      if (fault._tag === "Bandwidth") slowest = Math.min(slowest ?? Infinity, fault.bytesPerSecond)
    }
    return slowest
  }

  resetAfter(direction: Direction): number | undefined {
    let fewest: number | undefined
    for (const fault of this.faults) {
      if (fault._tag === "ResetAfterBytes" && fault.direction === direction) {
        fewest = Math.min(fewest ?? Infinity, fault.bytes)
      }
    }
    return fewest
  }

  messageFault(sql: string): ResetOnMessage | undefined {
    const normalized = normalizeSql(sql)
    for (const fault of this.faults) {
      if (fault._tag === "ResetOnMessage" && normalizeSql(fault.sql) === normalized) return fault
    }
    return undefined
  }

  readonly accept = (client: Net.Socket): void => {
    if (this.closed) {
      client.destroy()
      return
    }
    this.accepted++
    client.setNoDelay(true)
    const startup = this.faults.find((fault): fault is StartupError => fault._tag === "StartupError")
    const connection = this.faults.some((fault) => fault._tag === "Blackhole")
      ? blackholed(this, client)
      : startup !== undefined
        ? answeredWithError(this, client, startup)
        : new ForwardedConnection(this, client)
    this.connections.add(connection)
    client.once("close", () => this.connections.delete(connection))
  }
}

/** A connection with no server side: the proxy answers it itself, or never. */
const withoutServer = (proxy: ProxyState, client: Net.Socket): Tracked => {
  let resetTimer: NodeJS.Timeout | undefined
  client.on("error", () => {})
  const self: Tracked = {
    reset: (onClientReset) => {
      if (client.destroyed || resetTimer !== undefined) return false
      client.pause()
      resetTimer = setTimeout(() => {
        proxy.connections.delete(self)
        resetSocket(client)
        onClientReset()
      }, resetGraceMillis)
      return true
    },
    kick: () => {},
    held: () => 0,
    destroy: () => {
      clearTimeout(resetTimer)
      client.destroy()
    }
  }
  return self
}

/** Accepts and reads, never answers. */
const blackholed = (proxy: ProxyState, client: Net.Socket): Tracked => {
  // Reading (and discarding) keeps the client's writes from blocking: it is its read that must hang.
  client.on("data", () => {})
  return withoutServer(proxy, client)
}

/** Answers the start-up message with the fault's ErrorResponse and closes. */
const answeredWithError = (proxy: ProxyState, client: Net.Socket, fault: StartupError): Tracked => {
  const framer = new FrontendFramer()
  client.on("data", (chunk: Buffer) => {
    for (const frame of framer.push(chunk)) {
      const code = frame.kind === "untyped" ? frame.bytes.readInt32BE(4) : undefined
      if (code === sslRequestCode || code === gssEncRequestCode) {
        client.write("N")
        continue
      }
      if (code === undefined || code === cancelRequestCode) client.end()
      else client.end(errorResponse(fault.sqlState, fault.message))
      client.removeAllListeners("data")
      client.resume()
      return
    }
  })
  return withoutServer(proxy, client)
}

/** One direction of a forwarded connection: a queue between a source socket and a sink socket. */
class Lane {
  readonly direction: Direction
  readonly source: Net.Socket
  readonly sink: Net.Socket
  readonly queue: Array<Outgoing> = []
  /** How much of the head of the queue has been written (bandwidth slices, byte limits). */
  headOffset = 0
  queuedBytes = 0
  timer: NodeJS.Timeout | undefined = undefined
  waitingForDrain = false
  /** Bandwidth pacing: the earliest time the next slice may be written. */
  nextSliceAt = 0
  /** Bytes written since the connection started or the faults were last replaced. */
  forwarded = 0

  constructor(direction: Direction, source: Net.Socket, sink: Net.Socket) {
    this.direction = direction
    this.source = source
    this.sink = sink
  }

  enqueue(item: Outgoing): void {
    this.queue.push(item)
    if (item._tag === "Data") {
      this.queuedBytes += item.bytes.length
      if (this.queuedBytes > maxQueuedBytes) this.source.pause()
    }
  }

  dequeue(): void {
    const head = this.queue.shift()
    this.headOffset = 0
    if (head?._tag === "Data") {
      this.queuedBytes -= head.bytes.length
      if (this.queuedBytes <= maxQueuedBytes && this.source.isPaused()) this.source.resume()
    }
  }

  cancelTimer(): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }

  stop(): void {
    this.cancelTimer()
    this.queue.length = 0
    this.queuedBytes = 0
  }
}

/** A client connection forwarded to a server connection of its own. */
class ForwardedConnection implements Tracked {
  readonly proxy: ProxyState
  readonly client: Net.Socket
  readonly server: Net.Socket
  readonly toServer: Lane
  readonly toClient: Lane
  readonly framer = new FrontendFramer()
  readonly scanner = new BackendScanner()
  state: "forwarding" | "resetting" | "closed" = "forwarding"
  resetTimer: NodeJS.Timeout | undefined = undefined
  /** Prepared statement names (`""` is the unnamed one) and their SQL, from the Parse messages forwarded. */
  readonly statements = new Map<string, string>()
  /** Query cycles (Sync, Query, FunctionCall) forwarded to the server. */
  cyclesSent = 0
  /** ReadyForQuery messages from the server, the start-up one included. */
  readyForQuery = 0
  /** An `"after-server-answers"` fault matched a message of this cycle (an index into `cyclesSent`). */
  withheldCycle: number | undefined = undefined
  /** That cycle has been forwarded up to its end: later client messages are dropped. */
  withheldCycleSent = false

  constructor(proxy: ProxyState, client: Net.Socket) {
    this.proxy = proxy
    this.client = client
    this.server = Net.connect({
      host: proxy.upstream.host,
      port: proxy.upstream.port,
      allowHalfOpen: true,
      noDelay: true
    })
    this.toServer = new Lane("toServer", client, this.server)
    this.toClient = new Lane("toClient", this.server, client)
    let serverConnected = false
    this.server.once("connect", () => {
      serverConnected = true
    })
    client.on("data", (chunk: Buffer) => {
      if (this.state !== "forwarding") return
      const notBefore = Date.now() + proxy.latencyMillis()
      for (const frame of this.framer.push(chunk)) {
        this.toServer.enqueue({ _tag: "Data", bytes: frame.bytes, notBefore, kind: frame.kind })
      }
      this.pump(this.toServer)
    })
    this.server.on("data", (chunk: Buffer) => {
      if (this.state !== "forwarding") return
      const notBefore = Date.now() + proxy.latencyMillis()
      this.toClient.enqueue({ _tag: "Data", bytes: chunk, notBefore, kind: undefined })
      this.pump(this.toClient)
    })
    client.on("end", () => this.endOf(this.toServer))
    this.server.on("end", () => this.endOf(this.toClient))
    // A client's RST is passed on to the server as an RST, and a server's to the client.
    client.on("error", () => {
      if (this.state !== "forwarding") return
      this.state = "closed"
      this.stopLanes()
      resetSocket(this.server)
    })
    this.server.on("error", () => {
      if (this.state !== "forwarding") return
      if (serverConnected) {
        this.resetWith("reset", () => {})
      } else {
        // The server is down: accept and close, as a client would see a real proxy do.
        this.state = "closed"
        this.stopLanes()
        client.end()
      }
    })
    client.on("close", () => {
      this.state = "closed"
      this.stopLanes()
      clearTimeout(this.resetTimer)
      this.server.destroy()
    })
  }

  reset(onClientReset: () => void): boolean {
    return this.resetWith("reset", onClientReset)
  }

  kick(faultsReplaced: boolean): void {
    if (faultsReplaced && this.state === "forwarding") {
      // A cycle whose answer was to be withheld is let through again.
      this.withheldCycle = undefined
      this.withheldCycleSent = false
    }
    for (const lane of [this.toServer, this.toClient]) {
      if (faultsReplaced) lane.forwarded = 0
      lane.cancelTimer()
      this.pump(lane)
    }
  }

  held(direction: Direction): number {
    const lane = direction === "toServer" ? this.toServer : this.toClient
    return lane.queuedBytes - lane.headOffset
  }

  destroy(): void {
    this.state = "closed"
    this.stopLanes()
    clearTimeout(this.resetTimer)
    this.client.destroy()
    this.server.destroy()
  }

  /**
   * Stops forwarding, resets (or just closes) the server side at once, and
   * resets the client after a grace period in which it reads what it was sent.
   */
  private resetWith(server: "reset" | "close", onClientReset: () => void): boolean {
    if (this.state !== "forwarding") return false
    this.state = "resetting"
    this.stopLanes()
    this.client.pause()
    if (server === "reset") resetSocket(this.server)
    else this.server.destroy()
    this.resetTimer = setTimeout(() => {
      this.state = "closed"
      this.proxy.connections.delete(this)
      resetSocket(this.client)
      onClientReset()
    }, resetGraceMillis)
    return true
  }

  private endOf(lane: Lane): void {
    if (this.state !== "forwarding") return
    lane.enqueue({ _tag: "End", notBefore: Date.now() + this.proxy.latencyMillis() })
    this.pump(lane)
  }

  private stopLanes(): void {
    this.toServer.stop()
    this.toClient.stop()
  }

  /** Writes what is due from `lane`, honouring pause, latency, bandwidth and the reset faults. */
  private pump(lane: Lane): void {
    const proxy = this.proxy
    while (
      this.state === "forwarding" &&
      !proxy.paused &&
      !lane.waitingForDrain &&
      lane.timer === undefined &&
      lane.queue.length > 0
    ) {
      const head = lane.queue[0]!
      const bytesPerSecond = proxy.bytesPerSecond()
      const now = Date.now()
      const due = Math.max(head.notBefore, bytesPerSecond === undefined ? 0 : lane.nextSliceAt)
      if (due > now) {
        lane.timer = setTimeout(() => {
          lane.timer = undefined
          this.pump(lane)
        }, due - now)
        return
      }
      if (head._tag === "End") {
        lane.dequeue()
        lane.sink.end()
        continue
      }
      if (lane.direction === "toServer" && lane.headOffset === 0) {
        const verdict = this.inspectClientMessage(head.bytes, head.kind)
        if (verdict === "drop") {
          lane.dequeue()
          continue
        }
        if (verdict === "reset") {
          // The server must never see the statement: nothing of it is written.
          this.resetWith("reset", () => proxy.messageFaultFired())
          return
        }
      }
      let size = head.bytes.length - lane.headOffset
      if (bytesPerSecond !== undefined) size = Math.min(size, Math.max(1, Math.ceil(bytesPerSecond * sliceSeconds)))
      const limit = proxy.resetAfter(lane.direction)
      let limitReached = false
      if (limit !== undefined) {
        const allowed = limit - lane.forwarded
        if (allowed <= 0) {
          this.resetWith("reset", () => {})
          return
        }
        if (size >= allowed) {
          size = allowed
          limitReached = true
        }
      }
      let answerWithheld = false
      if (lane.direction === "toClient") {
        const cut = this.scanner.scan(
          head.bytes.subarray(lane.headOffset, lane.headOffset + size),
          () => {
            this.framer.mode = "opaque"
          },
          (type) => this.isWithheldAnswer(type)
        )
        if (cut < size) {
          size = cut
          answerWithheld = true
        }
      }
      if (size > 0) this.write(lane, head.bytes, size, now, bytesPerSecond)
      if (answerWithheld) {
        // The server has answered (for a COMMIT: committed); the client must not hear it.
        this.resetWith("close", () => proxy.messageFaultFired())
        return
      }
      if (limitReached) {
        this.resetWith("reset", () => {})
        return
      }
    }
  }

  private write(lane: Lane, bytes: Buffer, size: number, now: number, bytesPerSecond: number | undefined): void {
    const flushed = lane.sink.write(bytes.subarray(lane.headOffset, lane.headOffset + size))
    lane.forwarded += size
    lane.headOffset += size
    if (bytesPerSecond !== undefined) {
      lane.nextSliceAt = Math.max(now, lane.nextSliceAt) + (size * 1000) / bytesPerSecond
    }
    if (lane.headOffset === bytes.length) lane.dequeue()
    if (!flushed) {
      lane.waitingForDrain = true
      lane.sink.once("drain", () => {
        lane.waitingForDrain = false
        this.pump(lane)
      })
    }
  }

  /** Decides the fate of one whole client message about to be forwarded, and records what it does. */
  private inspectClientMessage(bytes: Buffer, kind: FrameKind | undefined): "forward" | "drop" | "reset" {
    if (this.withheldCycleSent) return "drop"
    if (kind === "untyped") {
      const code = bytes.readInt32BE(4)
      if (code === sslRequestCode || code === gssEncRequestCode) this.scanner.mode = "sslResponse"
      return "forward"
    }
    if (kind !== "typed") return "forward"
    const type = String.fromCharCode(bytes[0]!)
    let sql: string | undefined
    let prepared: { readonly name: string; readonly sql: string } | undefined
    if (type === "Q") {
      sql = readCString(bytes, 5).value
    } else if (type === "P") {
      const name = readCString(bytes, 5)
      sql = readCString(bytes, name.next).value
      prepared = { name: name.value, sql }
    } else if (type === "B") {
      const portal = readCString(bytes, 5)
      sql = this.statements.get(readCString(bytes, portal.next).value)
    }
    if (sql !== undefined && this.withheldCycle === undefined) {
      const fault = this.proxy.messageFault(sql)
      if (fault?.when === "before-server") return "reset"
      if (fault?.when === "after-server-answers") this.withheldCycle = this.cyclesSent
    }
    if (prepared !== undefined) this.statements.set(prepared.name, prepared.sql)
    if (type === "S" || type === "Q" || type === "F") {
      this.cyclesSent++
      if (this.withheldCycle !== undefined) this.withheldCycleSent = true
    }
    return "forward"
  }

  /** Sees each server message's type byte as it is forwarded: is this the answer to withhold? */
  private isWithheldAnswer(type: number): boolean {
    if (type === 0x5a /* ReadyForQuery */) this.readyForQuery++
    // The answer to the matched cycle is the first CommandComplete or ErrorResponse
    // once every earlier cycle has had its ReadyForQuery (besides the start-up one).
    return (
      this.withheldCycle !== undefined &&
      (type === 0x43 /* CommandComplete */ || type === 0x45) /* ErrorResponse */ &&
      this.readyForQuery - 1 >= this.withheldCycle
    )
  }
}

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
