import { assert, describe, it } from "@effect/vitest"
import {
  type BackendState,
  backendStart,
  encryptionAnswer,
  endsCycle,
  errorResponse,
  type FrameKind,
  type FrontendState,
  frontendStart,
  isStartupMessage,
  readCString,
  requestsEncryption,
  scanBackend,
  splitFrontend,
  startupCode,
  statementOf
} from "../src/internal/wire.ts"

/** Bytes written as hex, spaces allowed between them. */
const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ""), "hex")

// --- what a client sends ---

/** StartupMessage, protocol 3.0: user=postgres database=test. */
const startup = hex("00000025 00030000 7573657200 706f737467726573 00 646174616261736500 7465737400 00")
/** SSLRequest: length 8, code 1234 << 16 | 5679. */
const sslRequest = hex("00000008 04d2162f")
/** GSSENCRequest: length 8, code 1234 << 16 | 5680. */
const gssEncRequest = hex("00000008 04d21630")
/** CancelRequest: length 16, code 1234 << 16 | 5678, process id 12345, secret key 0xdeadbeef. */
const cancelRequest = hex("00000010 04d2162e 00003039 deadbeef")
/** Query "SELECT 1". */
const query = hex("51 0000000d 53454c4543542031 00")
/** Parse of statement "s1", "SELECT $1::int", one parameter of type int4 (OID 23). */
const parse = hex("50 0000001c 733100 53454c4543542024313a3a696e74 00 0001 00000017")
/** Parse of the unnamed statement, "COMMIT", no parameter types. */
const parseUnnamed = hex("50 0000000e 00 434f4d4d4954 00 0000")
/** Bind of statement "s1" to the unnamed portal, one text parameter "7". */
const bind = hex("42 00000013 00 733100 0000 0001 00000001 37 0000")
/** Bind of the unnamed statement to portal "p", no parameters. */
const bindUnnamed = hex("42 0000000d 7000 00 0000 0000 0000")
/** Execute of the unnamed portal, no row limit. */
const execute = hex("45 00000009 00 00000000")
/** Sync. */
const sync = hex("53 00000004")
/** FunctionCall of OID 1, no arguments, text result. */
const functionCall = hex("46 0000000e 00000001 0000 0000 0000")
/** Terminate. */
const terminate = hex("58 00000004")

// --- what a server sends ---

/** AuthenticationOk. */
const authenticationOk = hex("52 00000008 00000000")
/** ParameterStatus client_encoding=UTF8. */
const parameterStatus = hex("53 00000019 636c69656e745f656e636f64696e6700 5554463800")
/** BackendKeyData: process id 12345, secret key 0xdeadbeef. */
const backendKeyData = hex("4b 0000000c 00003039 deadbeef")
/** ReadyForQuery, idle. */
const readyForQuery = hex("5a 00000005 49")
/** DataRow with one column, "1". */
const dataRow = hex("44 0000000b 0001 00000001 31")
/** CommandComplete "SELECT 1". */
const commandComplete = hex("43 0000000d 53454c4543542031 00")
/** ParseComplete, then BindComplete: messages with no body. */
const parseBindComplete = hex("31 00000004 32 00000004")

const typedStart: FrontendState = { mode: "typed", pending: Buffer.alloc(0) }

/** Runs `chunks` through `splitFrontend`: the frames of each chunk (as hex and kind), and the final state. */
const splitAll = (start: FrontendState, chunks: ReadonlyArray<Buffer>) => {
  let state = start
  const frames: Array<Array<readonly [string, FrameKind]>> = []
  for (const chunk of chunks) {
    const split = splitFrontend(state, chunk)
    state = split.state
    frames.push(split.frames.map((frame) => [frame.bytes.toString("hex"), frame.kind] as const))
  }
  return { frames, mode: state.mode, pending: state.pending.toString("hex") }
}

const frame = (bytes: Buffer, kind: FrameKind) => [bytes.toString("hex"), kind] as const

describe("splitFrontend", () => {
  const cases: ReadonlyArray<{
    readonly name: string
    readonly start: FrontendState
    readonly chunks: ReadonlyArray<Buffer>
    readonly frames: ReadonlyArray<ReadonlyArray<readonly [string, FrameKind]>>
    readonly mode: FrameKind
    readonly pending: Buffer
  }> = [
    {
      name: "a StartupMessage is one untyped frame, and typed messages follow",
      start: frontendStart,
      chunks: [startup],
      frames: [[frame(startup, "untyped")]],
      mode: "typed",
      pending: Buffer.alloc(0)
    },
    {
      name: "an SSLRequest does not end the untyped part: the StartupMessage after it does",
      start: frontendStart,
      chunks: [sslRequest, startup],
      frames: [[frame(sslRequest, "untyped")], [frame(startup, "untyped")]],
      mode: "typed",
      pending: Buffer.alloc(0)
    },
    {
      name: "a GSSENCRequest does not end the untyped part either",
      start: frontendStart,
      chunks: [gssEncRequest],
      frames: [[frame(gssEncRequest, "untyped")]],
      mode: "untyped",
      pending: Buffer.alloc(0)
    },
    {
      name: "a CancelRequest is one untyped frame, and the stream stays untyped",
      start: frontendStart,
      chunks: [cancelRequest],
      frames: [[frame(cancelRequest, "untyped")]],
      mode: "untyped",
      pending: Buffer.alloc(0)
    },
    {
      name: "a StartupMessage and a Query in one chunk: an untyped frame, then a typed one",
      start: frontendStart,
      chunks: [Buffer.concat([startup, query])],
      frames: [[frame(startup, "untyped"), frame(query, "typed")]],
      mode: "typed",
      pending: Buffer.alloc(0)
    },
    {
      name: "an extended-protocol cycle in one chunk: Parse, Bind, Execute, Sync",
      start: typedStart,
      chunks: [Buffer.concat([parse, bind, execute, sync])],
      frames: [[frame(parse, "typed"), frame(bind, "typed"), frame(execute, "typed"), frame(sync, "typed")]],
      mode: "typed",
      pending: Buffer.alloc(0)
    },
    {
      name: "a message cut inside its length waits for the rest",
      start: typedStart,
      chunks: [query.subarray(0, 3), query.subarray(3)],
      frames: [[], [frame(query, "typed")]],
      mode: "typed",
      pending: Buffer.alloc(0)
    },
    {
      name: "a whole message and the start of the next: the start is held",
      start: typedStart,
      chunks: [Buffer.concat([sync, terminate.subarray(0, 2)])],
      frames: [[frame(sync, "typed")]],
      mode: "typed",
      pending: terminate.subarray(0, 2)
    },
    {
      name: "a typed length below 4 does not parse: the rest passes through unread",
      start: typedStart,
      chunks: [Buffer.concat([sync, hex("51 00000003 ff")]), query],
      frames: [[frame(sync, "typed"), frame(hex("51 00000003 ff"), "opaque")], [frame(query, "opaque")]],
      mode: "opaque",
      pending: Buffer.alloc(0)
    },
    {
      name: "an untyped length below 8 does not parse",
      start: frontendStart,
      chunks: [hex("00000004 04d2162f")],
      frames: [[frame(hex("00000004 04d2162f"), "opaque")]],
      mode: "opaque",
      pending: Buffer.alloc(0)
    },
    {
      name: "once opaque (TLS agreed), held bytes and new ones pass as they come",
      start: { mode: "opaque", pending: query.subarray(0, 4) },
      chunks: [hex("16 0303")],
      frames: [[frame(Buffer.concat([query.subarray(0, 4), hex("16 0303")]), "opaque")]],
      mode: "opaque",
      pending: Buffer.alloc(0)
    }
  ]
  for (const { name, start, chunks, frames, mode, pending } of cases) {
    it(name, () => {
      assert.deepStrictEqual(splitAll(start, chunks), { frames, mode, pending: pending.toString("hex") })
    })
  }

  it("a Query split across two chunks at any byte comes out whole, once", () => {
    const stream = Buffer.concat([startup, query])
    for (let at = startup.length + 1; at < stream.length; at++) {
      assert.deepStrictEqual(
        splitAll(frontendStart, [stream.subarray(0, at), stream.subarray(at)]),
        { frames: [[frame(startup, "untyped")], [frame(query, "typed")]], mode: "typed", pending: "" },
        `split at byte ${at}`
      )
    }
  })

  it("a start-up and a cycle fed one byte at a time give the same frames as fed at once", () => {
    const stream = Buffer.concat([sslRequest, startup, parse, bind, execute, sync, terminate])
    const bytewise = splitAll(
      frontendStart,
      Array.from(stream, (byte) => Buffer.from([byte]))
    )
    assert.deepStrictEqual(bytewise.frames.flat(), splitAll(frontendStart, [stream]).frames.flat())
    assert.deepStrictEqual(bytewise.frames.flat(), [
      frame(sslRequest, "untyped"),
      frame(startup, "untyped"),
      frame(parse, "typed"),
      frame(bind, "typed"),
      frame(execute, "typed"),
      frame(sync, "typed"),
      frame(terminate, "typed")
    ])
  })
})

describe("start-up packets", () => {
  const cases = [
    { name: "StartupMessage 3.0", packet: startup, code: 196608, startup: true, encryption: false },
    { name: "StartupMessage 3.2", packet: hex("00000008 00030002"), code: 196610, startup: true, encryption: false },
    { name: "protocol 2.0", packet: hex("00000008 00020000"), code: 131072, startup: false, encryption: false },
    { name: "SSLRequest", packet: sslRequest, code: 80877103, startup: false, encryption: true },
    { name: "GSSENCRequest", packet: gssEncRequest, code: 80877104, startup: false, encryption: true },
    { name: "CancelRequest", packet: cancelRequest, code: 80877102, startup: false, encryption: false }
  ] as const
  for (const { name, packet, code, startup, encryption } of cases) {
    it(`${name}: code ${code}, ${startup ? "ends" : "does not end"} the start-up, ${encryption ? "asks" : "does not ask"} for encryption`, () => {
      assert.deepStrictEqual(
        { code: startupCode(packet), startup: isStartupMessage(packet), encryption: requestsEncryption(packet) },
        { code, startup, encryption }
      )
    })
  }
})

describe("statementOf and endsCycle", () => {
  const cases = [
    { name: "Query", message: query, statement: { _tag: "Query", sql: "SELECT 1" }, endsCycle: true },
    {
      name: "Parse, named",
      message: parse,
      statement: { _tag: "Parse", name: "s1", sql: "SELECT $1::int" },
      endsCycle: false
    },
    {
      name: "Parse, unnamed",
      message: parseUnnamed,
      statement: { _tag: "Parse", name: "", sql: "COMMIT" },
      endsCycle: false
    },
    {
      name: "Bind of a named statement",
      message: bind,
      statement: { _tag: "Bind", statement: "s1" },
      endsCycle: false
    },
    {
      name: "Bind of the unnamed statement to a portal",
      message: bindUnnamed,
      statement: { _tag: "Bind", statement: "" },
      endsCycle: false
    },
    { name: "Execute", message: execute, statement: undefined, endsCycle: false },
    { name: "Sync", message: sync, statement: undefined, endsCycle: true },
    { name: "FunctionCall", message: functionCall, statement: undefined, endsCycle: true },
    { name: "Terminate", message: terminate, statement: undefined, endsCycle: false }
  ] as const
  for (const { name, message, statement, endsCycle: ends } of cases) {
    it(`${name}: ${statement === undefined ? "no statement" : statement._tag}, ${ends ? "ends" : "does not end"} a cycle`, () => {
      assert.deepStrictEqual(
        { statement: statementOf(message), endsCycle: endsCycle(message) },
        { statement, endsCycle: ends }
      )
    })
  }
})

describe("readCString", () => {
  const cases = [
    { name: "a string and its NUL", bytes: hex("61626300 64"), offset: 0, value: "abc", next: 4 },
    { name: "from an offset", bytes: hex("61626300 6400"), offset: 4, value: "d", next: 6 },
    { name: "an empty string", bytes: hex("00 61"), offset: 0, value: "", next: 1 },
    { name: "UTF-8", bytes: hex("c3a9 00"), offset: 0, value: "é", next: 3 },
    { name: "no NUL: to the end", bytes: hex("6162"), offset: 0, value: "ab", next: 3 }
  ] as const
  for (const { name, bytes, offset, value, next } of cases) {
    it(name, () => {
      assert.deepStrictEqual(readCString(bytes, offset), { value, next })
    })
  }
})

describe("errorResponse", () => {
  it("is a FATAL ErrorResponse with the SQLSTATE and the message, length counted in bytes", () => {
    assert.strictEqual(
      errorResponse("57P03", "the database system is starting up").toString("hex"),
      hex(
        "45 0000003e 53 464154414c00 56 464154414c00 43 3537503033 00" +
          "4d 7468652064617461626173652073797374656d206973207374617274696e67207570 00 00"
      ).toString("hex")
    )
    // "é" is two bytes: the length is 4 + 7 + 7 + 7 + 4 + 1.
    assert.strictEqual(
      errorResponse("XX000", "é").toString("hex"),
      hex("45 0000001e 53464154414c00 56464154414c00 435858303030 00 4d c3a9 00 00").toString("hex")
    )
  })
})

describe("encryptionAnswer", () => {
  const cases = [
    [0x53, "encrypted"],
    [0x47, "encrypted"],
    [0x4e, "declined"],
    [0x45, "message"]
  ] as const
  for (const [byte, answer] of cases) {
    it(`${String.fromCharCode(byte)}: ${answer}`, () => {
      assert.strictEqual(encryptionAnswer(byte), answer)
    })
  }
})

/** Runs `chunks` through `scanBackend`, cutting before the types in `cutTypes`: each chunk's cut, and every type byte shown. */
const scanAll = (start: BackendState, chunks: ReadonlyArray<Buffer>, cutTypes: ReadonlyArray<number> = []) => {
  let state = start
  const seen: Array<string> = []
  const cuts: Array<{ readonly cut: number; readonly encrypted: boolean }> = []
  for (const chunk of chunks) {
    const scanned = scanBackend(state, chunk, (type) => {
      seen.push(String.fromCharCode(type))
      return cutTypes.includes(type)
    })
    state = scanned.state
    cuts.push({ cut: scanned.cut, encrypted: scanned.encrypted })
  }
  return { seen, cuts, mode: state.mode, atBoundary: state.headerSeen === 0 }
}

const sslResponse: BackendState = { ...backendStart, mode: "sslResponse" }

describe("scanBackend", () => {
  const startupAnswer = Buffer.concat([authenticationOk, parameterStatus, backendKeyData, readyForQuery])
  const queryAnswer = Buffer.concat([dataRow, commandComplete, readyForQuery])
  const cases: ReadonlyArray<{
    readonly name: string
    readonly start: BackendState
    readonly chunks: ReadonlyArray<Buffer>
    readonly cutTypes?: ReadonlyArray<number>
    readonly expected: ReturnType<typeof scanAll>
  }> = [
    {
      name: "the start-up answer: every message's type, and nothing cut",
      start: backendStart,
      chunks: [startupAnswer],
      expected: {
        seen: ["R", "S", "K", "Z"],
        cuts: [{ cut: startupAnswer.length, encrypted: false }],
        mode: "typed",
        atBoundary: true
      }
    },
    {
      name: "messages with no body",
      start: backendStart,
      chunks: [parseBindComplete],
      expected: { seen: ["1", "2"], cuts: [{ cut: 10, encrypted: false }], mode: "typed", atBoundary: true }
    },
    {
      name: "a cut before CommandComplete stops at its type byte",
      start: backendStart,
      chunks: [queryAnswer],
      cutTypes: [0x43],
      expected: {
        seen: ["D", "C"],
        cuts: [{ cut: dataRow.length, encrypted: false }],
        mode: "typed",
        atBoundary: true
      }
    },
    {
      name: "a cut at the start of a chunk is at offset 0",
      start: backendStart,
      chunks: [dataRow, Buffer.concat([commandComplete, readyForQuery])],
      cutTypes: [0x43],
      expected: {
        seen: ["D", "C"],
        cuts: [
          { cut: dataRow.length, encrypted: false },
          { cut: 0, encrypted: false }
        ],
        mode: "typed",
        atBoundary: true
      }
    },
    {
      name: "N to an SSLRequest is consumed: a plaintext start-up follows",
      start: sslResponse,
      chunks: [Buffer.concat([hex("4e"), authenticationOk])],
      expected: {
        seen: ["R"],
        cuts: [{ cut: 1 + authenticationOk.length, encrypted: false }],
        mode: "typed",
        atBoundary: true
      }
    },
    {
      name: "S to an SSLRequest: TLS follows, and nothing after it is read",
      start: sslResponse,
      chunks: [hex("53"), hex("16 0303 0040 02")],
      expected: {
        seen: [],
        cuts: [
          { cut: 1, encrypted: true },
          { cut: 6, encrypted: false }
        ],
        mode: "opaque",
        atBoundary: true
      }
    },
    {
      name: "G to a GSSENCRequest: encrypted too",
      start: sslResponse,
      chunks: [hex("47 00000001")],
      expected: { seen: [], cuts: [{ cut: 5, encrypted: true }], mode: "opaque", atBoundary: true }
    },
    {
      name: "an ErrorResponse instead of the one-byte answer is read as a message",
      start: sslResponse,
      chunks: [errorResponse("08P01", "unsupported")],
      expected: { seen: ["E"], cuts: [{ cut: 40, encrypted: false }], mode: "typed", atBoundary: true }
    },
    {
      name: "a length below 4 does not parse: the rest is not read",
      start: backendStart,
      chunks: [Buffer.concat([hex("5a 00000002"), commandComplete]), readyForQuery],
      cutTypes: [0x43],
      expected: {
        seen: ["Z"],
        cuts: [
          { cut: 5 + commandComplete.length, encrypted: false },
          { cut: readyForQuery.length, encrypted: false }
        ],
        mode: "opaque",
        atBoundary: false
      }
    }
  ]
  for (const { name, start, chunks, cutTypes, expected } of cases) {
    it(name, () => {
      assert.deepStrictEqual(scanAll(start, chunks, cutTypes), expected)
    })
  }

  it("a query's answer split across two chunks at any byte shows each type once, in order", () => {
    for (let at = 1; at < queryAnswer.length; at++) {
      assert.deepStrictEqual(
        scanAll(backendStart, [queryAnswer.subarray(0, at), queryAnswer.subarray(at)]),
        {
          seen: ["D", "C", "Z"],
          cuts: [
            { cut: at, encrypted: false },
            { cut: queryAnswer.length - at, encrypted: false }
          ],
          mode: "typed",
          atBoundary: true
        },
        `split at byte ${at}`
      )
    }
  })

  it("a message split inside its body is left mid-message", () => {
    const scanned = scanBackend(backendStart, commandComplete.subarray(0, 8), () => false)
    assert.deepStrictEqual(scanned.state, { mode: "typed", headerSeen: 5, length: 13, remaining: 6 })
  })
})
