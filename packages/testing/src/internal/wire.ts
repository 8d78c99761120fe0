// The PostgreSQL wire protocol (version 3), as far as FaultProxy reads it:
// the untyped start-up packets (StartupMessage, SSLRequest, GSSENCRequest,
// CancelRequest), the framing of the client's typed messages, the statement a
// client message runs, the message boundaries in the server's stream, and the
// ErrorResponse the proxy sends itself.
//
// Pure functions over bytes: the framing and the scanning take a state and
// return the next one, so the relay keeps the state and nothing here touches
// a socket.

/** The request code of an `SSLRequest`: 1234 << 16 | 5679. */
export const sslRequestCode = 80877103
/** The request code of a `GSSENCRequest`: 1234 << 16 | 5680. */
export const gssEncRequestCode = 80877104
/** The request code of a `CancelRequest`: 1234 << 16 | 5678. */
export const cancelRequestCode = 80877102

/** The type byte of the server's `ReadyForQuery` (`Z`). */
export const readyForQueryType = 0x5a
/** The type byte of the server's `CommandComplete` (`C`). */
export const commandCompleteType = 0x43
/** The type byte of the server's `ErrorResponse` (`E`). */
export const errorResponseType = 0x45

/** A NUL-terminated string at `offset`, and the offset after its NUL. */
export const readCString = (bytes: Buffer, offset: number): { readonly value: string; readonly next: number } => {
  const end = bytes.indexOf(0, offset)
  const stop = end === -1 ? bytes.length : end
  return { value: bytes.toString("utf8", offset, stop), next: stop + 1 }
}

/** A backend `ErrorResponse`: severity FATAL, the SQLSTATE, the message. */
export const errorResponse = (sqlState: string, message: string): Buffer => {
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

// --- the client's stream ---

/**
 * How a client message was read: an untyped start-up packet (length, code),
 * a typed message (type byte, length), or bytes passed through unread (a TLS
 * session, or anything that does not parse).
 */
export type FrameKind = "untyped" | "typed" | "opaque"

/** One whole client message, or a run of opaque bytes. */
export interface Frame {
  readonly bytes: Buffer
  readonly kind: FrameKind
}

/** Where the client's stream is: how its next bytes are read, and the start of a message not yet whole. */
export interface FrontendState {
  readonly mode: FrameKind
  readonly pending: Buffer
}

/** A new connection: start-up packets come first. */
export const frontendStart: FrontendState = { mode: "untyped", pending: Buffer.alloc(0) }

/** The code of an untyped start-up packet: a protocol version (major << 16 | minor) or a request code. */
export const startupCode = (packet: Buffer): number => packet.readInt32BE(4)

/**
 * A `StartupMessage` (protocol 3.x): it ends the untyped part of the stream,
 * which `SSLRequest`, `GSSENCRequest` and `CancelRequest` do not.
 */
export const isStartupMessage = (packet: Buffer): boolean => startupCode(packet) >>> 16 === 3

/** An `SSLRequest` or a `GSSENCRequest`: the server answers with one byte, and may start encrypting. */
export const requestsEncryption = (packet: Buffer): boolean => {
  const code = startupCode(packet)
  return code === sslRequestCode || code === gssEncRequestCode
}

/**
 * The message at `offset` of `data`, read as `mode` says: its frame,
 * `"incomplete"` if `data` ends before it does, or `"malformed"` if its
 * length is impossible.
 */
export const frameAt = (
  data: Buffer,
  offset: number,
  mode: "untyped" | "typed"
): Frame | "incomplete" | "malformed" => {
  const lengthAt = mode === "typed" ? 1 : 0
  if (data.length - offset < lengthAt + 4) return "incomplete"
  const length = data.readInt32BE(offset + lengthAt)
  if (length < (mode === "typed" ? 4 : 8)) return "malformed"
  const total = lengthAt + length
  if (data.length - offset < total) return "incomplete"
  return { bytes: data.subarray(offset, offset + total), kind: mode }
}

/**
 * Splits the client's stream into whole messages: the untyped start-up
 * packets first, then typed messages. A message cut by the end of `chunk`
 * waits in the state for the next chunk. Once something does not parse, the
 * rest of the stream is passed through as it comes (`"opaque"`).
 */
export const splitFrontend = (
  state: FrontendState,
  chunk: Buffer
): { readonly state: FrontendState; readonly frames: ReadonlyArray<Frame> } => {
  const data = state.pending.length === 0 ? chunk : Buffer.concat([state.pending, chunk])
  const frames: Array<Frame> = []
  let mode = state.mode
  let offset = 0
  while (offset < data.length) {
    if (mode === "opaque") {
      frames.push({ bytes: data.subarray(offset), kind: "opaque" })
      offset = data.length
      break
    }
    const frame = frameAt(data, offset, mode)
    if (frame === "incomplete") break
    if (frame === "malformed") {
      mode = "opaque"
      continue
    }
    frames.push(frame)
    if (mode === "untyped" && isStartupMessage(frame.bytes)) mode = "typed"
    offset += frame.bytes.length
  }
  return { state: { mode, pending: data.subarray(offset) }, frames }
}

/** What a typed client message says about the statement it runs, for the messages that name one. */
export type Statement =
  /** A simple `Query`, with its text. */
  | { readonly _tag: "Query"; readonly sql: string }
  /** A `Parse`: the prepared statement's name (`""` is the unnamed one) and its text. */
  | { readonly _tag: "Parse"; readonly name: string; readonly sql: string }
  /** A `Bind` of the prepared statement of that name. */
  | { readonly _tag: "Bind"; readonly statement: string }

/** The statement a typed client message runs or prepares, if it is a `Query`, a `Parse` or a `Bind`. */
export const statementOf = (message: Buffer): Statement | undefined => {
  switch (message[0]) {
    case 0x51 /* Q */:
      return { _tag: "Query", sql: readCString(message, 5).value }
    case 0x50 /* P */:
      {
        const name = readCString(message, 5)
        return { _tag: "Parse", name: name.value, sql: readCString(message, name.next).value }
      }
    case 0x42 /* B */:
      {
        const portal = readCString(message, 5)
        return { _tag: "Bind", statement: readCString(message, portal.next).value }
      }
    default:
      return undefined
  }
}

/** A `Sync`, `Query` or `FunctionCall`: it ends a query cycle, which the server closes with a `ReadyForQuery`. */
export const endsCycle = (message: Buffer): boolean => message[0] === 0x53 || message[0] === 0x51 || message[0] === 0x46

// --- the server's stream ---

/**
 * Where the server's stream is: reading typed messages, waiting for the
 * one-byte answer to an `SSLRequest` or `GSSENCRequest`, or unreadable.
 */
export interface BackendState {
  readonly mode: "typed" | "sslResponse" | "opaque"
  /** How many bytes of the current message's header (type byte, then length) have been read: 0 at a boundary. */
  readonly headerSeen: number
  /** The current message's length, as far as its header has been read. */
  readonly length: number
  /** Bytes of the current message's body still to come. */
  readonly remaining: number
}

/** A new connection: the server's stream starts at a message boundary. */
export const backendStart: BackendState = { mode: "typed", headerSeen: 0, length: 0, remaining: 0 }

/**
 * The server's one-byte answer to an encryption request: `S` (TLS) or `G`
 * (GSS) mean encryption follows, `N` a plaintext start-up; anything else is
 * the type byte of an `ErrorResponse`.
 */
export const encryptionAnswer = (byte: number): "encrypted" | "declined" | "message" =>
  byte === 0x53 || byte === 0x47 ? "encrypted" : byte === 0x4e ? "declined" : "message"

/** Reads on inside the current message, from `offset` of `bytes`: one byte of its header, or as much of its body as there is. */
export const readWithin = (
  state: BackendState,
  bytes: Buffer,
  offset: number
): { readonly state: BackendState; readonly offset: number } => {
  if (state.headerSeen < 5) {
    const headerSeen = state.headerSeen + 1
    const length = state.length * 256 + bytes[offset]!
    if (headerSeen < 5) return { state: { ...state, headerSeen, length }, offset: offset + 1 }
    const remaining = length - 4
    if (remaining < 0) return { state: { mode: "opaque", headerSeen, length, remaining }, offset: offset + 1 }
    return { state: { ...state, headerSeen: remaining === 0 ? 0 : headerSeen, length, remaining }, offset: offset + 1 }
  }
  const take = Math.min(state.remaining, bytes.length - offset)
  const remaining = state.remaining - take
  return { state: { ...state, headerSeen: remaining === 0 ? 0 : state.headerSeen, remaining }, offset: offset + take }
}

/** What `scanBackend` found in one chunk of the server's stream. */
export interface Scanned {
  readonly state: BackendState
  /** The offset of the message `cutBefore` stopped at, or the chunk's length. */
  readonly cut: number
  /** The server agreed to encrypt in this chunk: both streams are unreadable from here on. */
  readonly encrypted: boolean
}

/**
 * Follows message boundaries in a chunk of the server's stream, without
 * holding any bytes back: each message's type byte is shown to `cutBefore`,
 * and the scan stops at the first message it accepts.
 */
export const scanBackend = (state: BackendState, bytes: Buffer, cutBefore: (type: number) => boolean): Scanned => {
  let current = state
  let offset = 0
  while (offset < bytes.length) {
    if (current.mode === "opaque") break
    const byte = bytes[offset]!
    if (current.mode === "sslResponse") {
      const answer = encryptionAnswer(byte)
      if (answer === "encrypted") return { state: { ...current, mode: "opaque" }, cut: bytes.length, encrypted: true }
      current = { ...current, mode: "typed" }
      if (answer === "declined") offset++
    } else if (current.headerSeen === 0) {
      if (cutBefore(byte)) return { state: current, cut: offset, encrypted: false }
      current = { ...current, headerSeen: 1, length: 0 }
      offset++
    } else {
      const next = readWithin(current, bytes, offset)
      current = next.state
      offset = next.offset
    }
  }
  return { state: current, cut: bytes.length, encrypted: false }
}
