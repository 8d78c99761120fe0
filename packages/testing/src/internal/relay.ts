// The relay behind FaultProxy: plain Node sockets, driven by the faults in
// `ProxyState`. Each accepted client connection gets a `Tracked`: a
// `ForwardedConnection` with a server connection of its own and a `Lane` per
// direction (a queue that applies pause, latency, bandwidth and the reset
// faults), or a connection the proxy answers itself (`StartupError`) or
// never (`Blackhole`).
//
// The delays are Node timers on wall-clock time, not Effect sleeps: the proxy
// is the network, and a test's `TestClock` does not move it.
import * as Net from "node:net"
import type { Direction, Fault, ResetOnMessage, StartupError, Upstream } from "../FaultProxy.ts"
import {
  type BackendState,
  backendStart,
  cancelRequestCode,
  commandCompleteType,
  endsCycle,
  errorResponse,
  errorResponseType,
  type FrameKind,
  type FrontendState,
  frontendStart,
  readyForQueryType,
  requestsEncryption,
  scanBackend,
  splitFrontend,
  startupCode,
  statementOf
} from "./wire.ts"

/** How long a client is given to read what it was sent before its RST. */
const resetGraceMillis = 20
/** Above this many queued bytes (paused, slow, delayed), stop reading from the sender. */
const maxQueuedBytes = 4 * 1024 * 1024
/** Bandwidth pacing granularity: each write carries about this much of a second's budget. */
const sliceSeconds = 0.01

const normalizeSql = (sql: string): string => sql.trim().toLowerCase()

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
export interface Tracked {
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

/** The proxy's state: its faults, its pause, and its connections, with what the faults mean for a connection. */
export class ProxyState {
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
  let frontend = frontendStart
  client.on("data", (chunk: Buffer) => {
    const split = splitFrontend(frontend, chunk)
    frontend = split.state
    for (const frame of split.frames) {
      if (frame.kind === "untyped" && requestsEncryption(frame.bytes)) {
        client.write("N")
        continue
      }
      if (frame.kind !== "untyped" || startupCode(frame.bytes) === cancelRequestCode) client.end()
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
  /** Where the client's stream is, for splitting it into messages. */
  frontend: FrontendState = frontendStart
  /** Where the server's stream is, for finding its message boundaries. */
  backend: BackendState = backendStart
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
      const split = splitFrontend(this.frontend, chunk)
      this.frontend = split.state
      for (const frame of split.frames) {
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
        const scanned = scanBackend(
          this.backend,
          head.bytes.subarray(lane.headOffset, lane.headOffset + size),
          (type) => this.isWithheldAnswer(type)
        )
        this.backend = scanned.state
        // Encryption was agreed: the client's side is unreadable from here on too.
        if (scanned.encrypted) this.frontend = { ...this.frontend, mode: "opaque" }
        if (scanned.cut < size) {
          size = scanned.cut
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
      if (requestsEncryption(bytes)) this.backend = { ...this.backend, mode: "sslResponse" }
      return "forward"
    }
    if (kind !== "typed") return "forward"
    const statement = statementOf(bytes)
    const sql = statement?._tag === "Bind" ? this.statements.get(statement.statement) : statement?.sql
    if (sql !== undefined && this.withheldCycle === undefined) {
      const fault = this.proxy.messageFault(sql)
      if (fault?.when === "before-server") return "reset"
      if (fault?.when === "after-server-answers") this.withheldCycle = this.cyclesSent
    }
    if (statement?._tag === "Parse") this.statements.set(statement.name, statement.sql)
    if (endsCycle(bytes)) {
      this.cyclesSent++
      if (this.withheldCycle !== undefined) this.withheldCycleSent = true
    }
    return "forward"
  }

  /** Sees each server message's type byte as it is forwarded: is this the answer to withhold? */
  private isWithheldAnswer(type: number): boolean {
    if (type === readyForQueryType) this.readyForQuery++
    // The answer to the matched cycle is the first CommandComplete or ErrorResponse
    // once every earlier cycle has had its ReadyForQuery (besides the start-up one).
    return (
      this.withheldCycle !== undefined &&
      (type === commandCompleteType || type === errorResponseType) &&
      this.readyForQuery - 1 >= this.withheldCycle
    )
  }
}
