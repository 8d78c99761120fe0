import { assert, describe, it } from "@effect/vitest"
import { PgFailure } from "@sturdy/pg"
import { Transient } from "@sturdy/resilience"
import { Cause, Duration } from "effect"
import {
  AuthenticationError,
  AuthorizationError,
  ConnectionError,
  DeadlockError,
  SerializationError,
  SqlError,
  SqlSyntaxError,
  StatementTimeoutError,
  UniqueViolation,
  UnknownError
} from "effect/sql/SqlError"

// Each error is built the way @effect/sql-pg 4.0.5 builds it (PgConnection.ts):
// socket errors are a ConnectionError whose cause is Node's error with `code`;
// server errors go through classifySqlState, which maps class 08 to
// ConnectionError, 57014 to StatementTimeoutError, 40001/40P01 to their own
// reasons and everything else (57P03, 57P01, 53300, 25006...) to UnknownError,
// with a cause carrying the ErrorResponse fields, `code` among them.
const socket = (code: string, operation: "connect" | "query", message = "PgConnection: Failed to connect") =>
  new SqlError({
    reason: new ConnectionError({
      cause: Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code, errno: -111, syscall: "connect" }),
      message,
      operation
    })
  })

type Reason = ConstructorParameters<typeof SqlError>[0]["reason"]
const server = (
  make: (props: { cause: unknown; message: string; operation: string }) => Reason,
  code: string,
  operation: "connect" | "query"
) =>
  new SqlError({
    reason: make({
      cause: Object.assign(new Error(`server says ${code}`), { code, severity: "FATAL" }),
      message: operation === "connect" ? "PgConnection: Failed to connect" : "PgConnection: Query failed",
      operation
    })
  })

const closed = (message: string, operation: "connect" | "query") =>
  new SqlError({
    reason: new ConnectionError({ cause: new Error(message.replace("PgConnection: ", "")), message, operation })
  })

// PgBouncer 1.18 sends every error of its own (and every server refusal it relays) with SQLSTATE 08P01 and only
// S, C and M fields; the driver maps class 08 to ConnectionError (docs/pgbouncer-errors.md, measured here).
const bouncer = (message: string, operation: "connect" | "query") =>
  new SqlError({
    reason: new ConnectionError({
      cause: Object.assign(new Error(message), { severity: "FATAL", code: "08P01" }),
      message:
        operation === "connect" ? "PgConnection: Failed to connect" : "PgConnection: The server reported an error",
      operation
    })
  })

interface Case {
  readonly name: string
  readonly error: SqlError
  readonly scope?: "statement" | "transaction"
  readonly expected:
    | { readonly tag: string; readonly phase: "connect" | "sent"; readonly outcome: "not-applied" | "unknown" }
    | "not transient"
}

const cases = [
  // The seed's table (DESIGN §4).
  {
    name: "ETIMEDOUT",
    error: socket("ETIMEDOUT", "connect"),
    expected: { tag: "NetworkTimeout", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "ECONNRESET on a query",
    error: socket("ECONNRESET", "query", "PgConnection: Socket error"),
    expected: { tag: "ConnectionReset", phase: "sent", outcome: "unknown" }
  },
  {
    name: "ENOTFOUND",
    error: socket("ENOTFOUND", "connect"),
    expected: { tag: "HostNotFound", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "ECONNREFUSED",
    error: socket("ECONNREFUSED", "connect"),
    expected: { tag: "ConnectionRefused", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "EPIPE writing a query",
    error: socket("EPIPE", "query", "PgConnection: Failed to write query"),
    expected: { tag: "BrokenPipe", phase: "sent", outcome: "unknown" }
  },
  {
    name: "EAI_AGAIN",
    error: socket("EAI_AGAIN", "connect"),
    expected: { tag: "DnsTemporaryFailure", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "08006",
    error: server((p) => new ConnectionError(p), "08006", "query"),
    expected: { tag: "ConnectionFailure", phase: "sent", outcome: "unknown" }
  },
  {
    name: "57P03 at start-up",
    error: server((p) => new UnknownError(p), "57P03", "connect"),
    expected: { tag: "CannotConnectNow", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "08003",
    error: server((p) => new ConnectionError(p), "08003", "query"),
    expected: { tag: "ConnectionDoesNotExist", phase: "sent", outcome: "unknown" }
  },
  {
    name: "08000",
    error: server((p) => new ConnectionError(p), "08000", "connect"),
    expected: { tag: "ConnectionException", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "08001 (rest of class 08)",
    error: server((p) => new ConnectionError(p), "08001", "connect"),
    expected: { tag: "ConnectionException", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "08P01 (rest of class 08)",
    error: server((p) => new ConnectionError(p), "08P01", "query"),
    expected: { tag: "ConnectionException", phase: "sent", outcome: "unknown" }
  },
  // The extra transient ones.
  {
    name: "57P01 on a query",
    error: server((p) => new UnknownError(p), "57P01", "query"),
    expected: { tag: "AdminShutdown", phase: "sent", outcome: "unknown" }
  },
  {
    name: "57P02",
    error: server((p) => new UnknownError(p), "57P02", "query"),
    expected: { tag: "CrashShutdown", phase: "sent", outcome: "unknown" }
  },
  {
    name: "53300 at start-up",
    error: server((p) => new UnknownError(p), "53300", "connect"),
    expected: { tag: "TooManyConnections", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "25006 read-only after a failover",
    error: server((p) => new UnknownError(p), "25006", "query"),
    expected: { tag: "ReadOnlyTransaction", phase: "sent", outcome: "not-applied" }
  },
  {
    name: "57014 statement_timeout",
    error: server((p) => new StatementTimeoutError(p), "57014", "query"),
    expected: { tag: "StatementTimeoutError", phase: "sent", outcome: "not-applied" }
  },
  {
    name: "EHOSTUNREACH",
    error: socket("EHOSTUNREACH", "connect"),
    expected: { tag: "NetworkUnreachable", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "ECONNABORTED",
    error: socket("ECONNABORTED", "query", "PgConnection: Socket error"),
    expected: { tag: "ConnectionReset", phase: "sent", outcome: "unknown" }
  },
  {
    name: "55000 while connecting (ALLOW_CONNECTIONS false)",
    error: server((p) => new UnknownError(p), "55000", "connect"),
    expected: { tag: "ConnectionsNotAllowed", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "55000 on a query (another meaning)",
    error: server((p) => new UnknownError(p), "55000", "query"),
    expected: "not transient"
  },
  // What a killed backend and a dying server really produce: no code at all.
  {
    name: "Connection closed, no SQLSTATE",
    error: closed("PgConnection: Connection closed", "query"),
    expected: { tag: "ConnectionClosed", phase: "sent", outcome: "unknown" }
  },
  {
    name: "closed during start-up",
    error: closed("PgConnection: Connection closed during startup", "connect"),
    expected: { tag: "ConnectionClosed", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "socket error without a code",
    error: closed("PgConnection: Socket error", "query"),
    expected: { tag: "ConnectionClosed", phase: "sent", outcome: "unknown" }
  },
  {
    name: "the driver's connect timeout",
    error: closed("PgConnection: Connection timed out", "connect"),
    expected: { tag: "NetworkTimeout", phase: "connect", outcome: "not-applied" }
  },
  // Whole transactions only.
  {
    name: "40001 on a statement",
    error: server((p) => new SerializationError(p), "40001", "query"),
    expected: "not transient"
  },
  {
    name: "40001 in a transaction",
    error: server((p) => new SerializationError(p), "40001", "query"),
    scope: "transaction",
    expected: { tag: "SerializationError", phase: "sent", outcome: "not-applied" }
  },
  {
    name: "40P01 on a statement",
    error: server((p) => new DeadlockError(p), "40P01", "query"),
    expected: "not transient"
  },
  {
    name: "40P01 in a transaction",
    error: server((p) => new DeadlockError(p), "40P01", "query"),
    scope: "transaction",
    expected: { tag: "DeadlockError", phase: "sent", outcome: "not-applied" }
  },
  // The caller's problem: returned unchanged.
  {
    name: "42601 syntax error",
    error: server((p) => new SqlSyntaxError(p), "42601", "query"),
    expected: "not transient"
  },
  {
    name: "23505 unique violation",
    error: server((p) => new UniqueViolation({ ...p, constraint: "pk" }), "23505", "query"),
    expected: "not transient"
  },
  {
    name: "42501 permission denied",
    error: server((p) => new AuthorizationError(p), "42501", "query"),
    expected: "not transient"
  },
  {
    name: "28P01 bad password",
    error: server((p) => new AuthenticationError(p), "28P01", "connect"),
    expected: "not transient"
  },
  { name: "EACCES (not a network failure)", error: socket("EACCES", "connect"), expected: "not transient" },
  {
    name: "a configuration error (no code)",
    error: closed("PgConnection: No username configured", "connect"),
    expected: "not transient"
  },
  {
    name: "the client closed the connection itself",
    error: closed("PgConnection: Connection is closed", "query"),
    expected: "not transient"
  },
  {
    name: "a released pin",
    error: closed("PgConnection: Pinned connection was released", "query"),
    expected: "not transient"
  },
  // Behind PgBouncer (08P01, the message decides).
  {
    name: "PgBouncer relays a backend killed mid-statement: Unexpected ErrorResponse after ErrorResponse",
    error: closed("PgConnection: Unexpected ErrorResponse after ErrorResponse", "query"),
    expected: { tag: "ConnectionClosed", phase: "sent", outcome: "unknown" }
  },
  {
    name: "PgBouncer: server login has been failing (server down)",
    error: bouncer("server login has been failing, try again later (server_login_retry)", "query"),
    expected: { tag: "PoolerUnavailable", phase: "sent", outcome: "unknown" }
  },
  {
    name: "PgBouncer: pgbouncer cannot connect to server",
    error: bouncer("pgbouncer cannot connect to server", "connect"),
    expected: { tag: "PoolerUnavailable", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "PgBouncer: server conn crashed?",
    error: bouncer("server conn crashed?", "query"),
    expected: { tag: "PoolerUnavailable", phase: "sent", outcome: "unknown" }
  },
  {
    name: "PgBouncer: query_wait_timeout during start-up",
    error: bouncer("query_wait_timeout", "connect"),
    expected: { tag: "PoolerUnavailable", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "PgBouncer relays the server's 53300 as 08P01",
    error: bouncer('too many connections for role "app"', "connect"),
    expected: { tag: "TooManyConnections", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "PgBouncer relays the server's 57P03 as 08P01",
    error: bouncer("the database system is shutting down", "connect"),
    expected: { tag: "CannotConnectNow", phase: "connect", outcome: "not-applied" }
  },
  {
    name: "PgBouncer: unsupported startup parameter is a configuration refusal, not transient",
    error: bouncer("unsupported startup parameter: statement_timeout", "connect"),
    expected: "not transient"
  },
  {
    name: "PgBouncer: SASL authentication failed is not transient",
    error: bouncer("SASL authentication failed", "connect"),
    expected: "not transient"
  },
  {
    name: "PgBouncer: no such database is not transient",
    error: bouncer("no such database: nosuchdb", "connect"),
    expected: "not transient"
  },
  {
    name: "PgBouncer: max_client_conn is not transient",
    error: bouncer("no more connections allowed (max_client_conn)", "connect"),
    expected: "not transient"
  },
  {
    name: "26000 prepared statement does not exist (a pooler moved the session): not applied",
    error: server((p) => new UnknownError(p), "26000", "query"),
    expected: { tag: "PreparedStatementUnavailable", phase: "sent", outcome: "not-applied" }
  },
  {
    name: "42P05 prepared statement already exists (a pooler moved the session): not applied",
    error: server((p) => new UnknownError(p), "42P05", "query"),
    expected: { tag: "PreparedStatementUnavailable", phase: "sent", outcome: "not-applied" }
  },
  {
    name: "another 08P01 (a protocol violation) stays ConnectionException",
    error: bouncer("invalid message length", "query"),
    expected: { tag: "ConnectionException", phase: "sent", outcome: "unknown" }
  }
] as const satisfies ReadonlyArray<Case>

describe("PgFailure.classify", () => {
  for (const c of cases as ReadonlyArray<Case>) {
    it(c.name, () => {
      const reason = PgFailure.classify(c.error, c.scope)
      if (c.expected === "not transient") {
        assert.isUndefined(reason)
        return
      }
      assert.isDefined(reason)
      assert.strictEqual(reason!._tag, c.expected.tag)
      assert.strictEqual(PgFailure.phaseOf(reason!), c.expected.phase)
      assert.strictEqual(PgFailure.outcome(reason!), c.expected.outcome)
      assert.strictEqual(reason!.isRetryable, true)
    })
  }

  interface RefusalCase {
    readonly error: SqlError
    readonly expected: PgFailure.Refusal | undefined
  }
  const refusals = [
    { error: server((p) => new AuthenticationError(p), "28P01", "connect"), expected: "AuthenticationFailed" },
    { error: server((p) => new AuthenticationError(p), "28000", "connect"), expected: "AuthenticationFailed" },
    { error: server((p) => new UnknownError(p), "3D000", "connect"), expected: "UnknownDatabase" },
    { error: bouncer("SASL authentication failed", "connect"), expected: "AuthenticationFailed" },
    { error: bouncer("password authentication failed", "connect"), expected: "AuthenticationFailed" },
    { error: bouncer("no such database: app", "connect"), expected: "UnknownDatabase" },
    { error: bouncer('database "app" does not exist', "connect"), expected: "UnknownDatabase" },
    {
      error: bouncer("unsupported startup parameter: statement_timeout", "connect"),
      expected: "UnsupportedStartupParameter"
    },
    { error: bouncer("no more connections allowed (max_client_conn)", "connect"), expected: "ClientLimit" },
    { error: bouncer("query_wait_timeout", "connect"), expected: undefined },
    { error: socket("ECONNREFUSED", "connect"), expected: undefined },
    { error: server((p) => new SqlSyntaxError(p), "42601", "query"), expected: undefined }
  ] as const satisfies ReadonlyArray<RefusalCase>
  for (const c of refusals as ReadonlyArray<RefusalCase>) {
    it(`refusal: ${(c.error.reason.cause as Error).message} -> ${c.expected ?? "none"}`, () => {
      const refused = PgFailure.refusal(c.error)
      assert.strictEqual(refused?.refusal, c.expected)
      if (refused !== undefined) {
        assert.strictEqual(refused._tag, "ConfigurationRefused")
        assert.isFalse(refused.isRetryable)
        assert.include(refused.message, (c.error.reason.cause as Error).message)
      }
    })
  }

  it("sessionLost: the session is gone after a closed connection, a reset or 57P01; not after 25006, 57014 or 57P03", () => {
    assert.isTrue(PgFailure.sessionLost(closed("PgConnection: Connection closed", "query")))
    assert.isTrue(PgFailure.sessionLost(socket("ECONNRESET", "query", "PgConnection: Socket error")))
    assert.isTrue(PgFailure.sessionLost(server((p) => new UnknownError(p), "57P01", "query")))
    assert.isFalse(PgFailure.sessionLost(server((p) => new UnknownError(p), "25006", "query")))
    assert.isFalse(PgFailure.sessionLost(server((p) => new StatementTimeoutError(p), "57014", "query")))
    assert.isFalse(PgFailure.sessionLost(server((p) => new UnknownError(p), "57P03", "connect")))
    assert.isFalse(PgFailure.sessionLost(server((p) => new SqlSyntaxError(p), "42601", "query")))
  })

  it("countsAgainstBreaker: failing to get a session and timeouts count; a session lost mid-statement and 25006 do not", () => {
    const counts = (error: SqlError) => PgFailure.countsAgainstBreaker(PgFailure.classify(error)!)
    assert.isTrue(counts(socket("ECONNREFUSED", "connect")))
    assert.isTrue(counts(server((p) => new UnknownError(p), "57P03", "connect")))
    assert.isTrue(counts(server((p) => new UnknownError(p), "53300", "connect")))
    assert.isTrue(counts(closed("PgConnection: Connection timed out", "connect")))
    assert.isTrue(counts(server((p) => new StatementTimeoutError(p), "57014", "query")))
    assert.isTrue(counts(server((p) => new UnknownError(p), "57P02", "query")))
    assert.isFalse(counts(closed("PgConnection: Connection closed", "query")))
    assert.isFalse(counts(socket("ECONNRESET", "query", "PgConnection: Socket error")))
    assert.isFalse(counts(server((p) => new UnknownError(p), "57P01", "query")))
    assert.isFalse(counts(server((p) => new UnknownError(p), "25006", "query")))
    assert.isTrue(
      PgFailure.countsAgainstBreaker(new Transient.AttemptTimeout({ phase: "sent", timeout: Duration.seconds(1) }))
    )
  })

  it("a policy failure survives the round trip through SqlError", () => {
    const reason = PgFailure.classify(socket("ECONNREFUSED", "connect"))!
    const transient = new PgFailure.TransientError({ reason })
    const wrapped = PgFailure.toSqlError(transient, "execute")
    assert.strictEqual(wrapped.reason._tag, "ConnectionError")
    assert.strictEqual(PgFailure.fromSqlError(wrapped), transient)
    const unknown = PgFailure.toSqlError(new PgFailure.OutcomeUnknown({ reason }), "execute")
    // A generic retry on isRetryable must not repeat a write Sturdy declined to retry.
    assert.strictEqual(unknown.isRetryable, false)
    assert.isUndefined(PgFailure.fromSqlError(socket("ECONNREFUSED", "connect")))
    // A retry the budget refused: retryable later, like the transient failure it carries.
    const refused = new PgFailure.RetryBudgetExhausted({ reason })
    const budget = PgFailure.toSqlError(refused, "execute")
    assert.deepStrictEqual(
      [
        budget.reason._tag,
        budget.isRetryable,
        PgFailure.fromSqlError(budget) === refused,
        PgFailure.isPolicyFailure(refused)
      ],
      ["ConnectionError", true, true, true]
    )
  })
})

describe("PgFailure.findSqlError", () => {
  const sqlError = closed("PgConnection: Connection closed", "query")
  /** A library's wrapper that keeps the driver's error inside an Effect Cause, as drizzle's EffectDrizzleQueryError does. */
  class QueryError extends Error {
    override readonly cause: Cause.Cause<unknown>
    constructor(cause: Cause.Cause<unknown>) {
      super("Failed query")
      this.cause = cause
    }
  }
  it("finds the SqlError itself, in an Error cause chain, and inside an Effect Cause held as cause", () => {
    assert.strictEqual(PgFailure.findSqlError(sqlError), sqlError)
    assert.strictEqual(
      PgFailure.findSqlError(new Error("outer", { cause: new Error("inner", { cause: sqlError }) })),
      sqlError
    )
    assert.strictEqual(PgFailure.findSqlError(new QueryError(Cause.fail(sqlError))), sqlError)
    assert.strictEqual(
      PgFailure.findSqlError(new Error("wrapped", { cause: new QueryError(Cause.fail(sqlError)) })),
      sqlError
    )
  })
  it("finds nothing where there is none, and stops on a cycle", () => {
    assert.isUndefined(PgFailure.findSqlError(new Error("plain")))
    assert.isUndefined(PgFailure.findSqlError("a string"))
    assert.isUndefined(PgFailure.findSqlError(new QueryError(Cause.die("boom"))))
    const a = new Error("a") as Error & { cause?: unknown }
    const b = new Error("b", { cause: a })
    a.cause = b
    assert.isUndefined(PgFailure.findSqlError(a))
  })
})
