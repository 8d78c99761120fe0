import { assert, describe, it } from "@effect/vitest"
import { Breaker, Transient } from "@sturdy/resilience"
import { Duration } from "effect"
import {
  ConnectionError,
  SqlError,
  SqlSyntaxError,
  StatementTimeoutError,
  UniqueViolation,
  UnknownError
} from "effect/sql/SqlError"
import * as PgFailure from "../../src/PgFailure.ts"
import {
  type Attempt,
  breakerOutcome,
  decide,
  type Idempotency,
  type Policy,
  reasonOf,
  shouldRetry
} from "../../src/internal/classify.ts"

// Errors built the way @effect/sql-pg 4.0.5 builds them (as in PgFailure.test.ts).
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
const socket = (code: string, operation: "connect" | "query") =>
  new SqlError({
    reason: new ConnectionError({
      cause: Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code }),
      message: operation === "connect" ? "PgConnection: Failed to connect" : "PgConnection: Socket error",
      operation
    })
  })
const closed = (operation: "connect" | "query") =>
  new SqlError({
    reason: new ConnectionError({
      cause: new Error("Connection closed"),
      message:
        operation === "connect" ? "PgConnection: Connection closed during startup" : "PgConnection: Connection closed",
      operation
    })
  })
const circuitOpen = new Breaker.CircuitOpen({ key: "db", retryAfter: Duration.seconds(2) })
/** What the connection gate makes the driver fail a connect with while the circuit is open. */
const gated = PgFailure.toSqlError(circuitOpen, "connect")
class UserError {
  readonly _tag = "UserError"
}

const timeout = Duration.seconds(5)
const safe: Policy = { sentPhaseRetry: "safe", attemptTimeout: timeout }
const always: Policy = { sentPhaseRetry: "always", attemptTimeout: timeout }

const notSent: Attempt = { sent: false, timedOut: false, sql: undefined }
const sent = (sql: string | undefined, timedOut = false): Attempt => ({ sent: true, timedOut, sql })
const insert = "INSERT INTO t VALUES (1)"
const select = "SELECT 1"

/** What `decide` returned, in a line: the tags, the reason and its phase. */
const describeFailure = (error: unknown, failure: unknown): string => {
  if (failure === error) return "unchanged"
  if (failure === circuitOpen) return "the CircuitOpen it carries"
  if (failure instanceof PgFailure.TransientError || failure instanceof PgFailure.OutcomeUnknown) {
    return `${failure._tag}(${failure.reason._tag}, ${PgFailure.phaseOf(failure.reason)})`
  }
  if (failure instanceof PgFailure.ConfigurationRefused) return `ConfigurationRefused(${failure.refusal})`
  return `something else: ${String(failure)}`
}

interface Case {
  readonly name: string
  readonly error: unknown
  readonly attempt: Attempt
  readonly idempotency?: Idempotency
  readonly policy?: Policy
  readonly decided: string
  readonly breaker: Breaker.Outcome
}

const cases: ReadonlyArray<Case> = [
  // Before the statement was sent: nothing was applied, always retried; failing to connect counts.
  {
    name: "connection refused",
    error: socket("ECONNREFUSED", "connect"),
    attempt: notSent,
    decided: "TransientError(ConnectionRefused, connect)",
    breaker: "Failure"
  },
  {
    name: "57P03 while the server starts",
    error: server((p) => new UnknownError(p), "57P03", "connect"),
    attempt: notSent,
    decided: "TransientError(CannotConnectNow, connect)",
    breaker: "Failure"
  },
  {
    name: "a write whose connect was refused, not idempotent",
    error: socket("ECONNREFUSED", "connect"),
    attempt: notSent,
    idempotency: "not-idempotent",
    decided: "TransientError(ConnectionRefused, connect)",
    breaker: "Failure"
  },
  // A session lost mid-statement: retried only when running it twice is safe; not the server's fault.
  {
    name: "reset during a write",
    error: socket("ECONNRESET", "query"),
    attempt: sent(insert),
    decided: "OutcomeUnknown(ConnectionReset, sent)",
    breaker: "Ignored"
  },
  {
    name: "reset during a read",
    error: socket("ECONNRESET", "query"),
    attempt: sent(select),
    decided: "TransientError(ConnectionReset, sent)",
    breaker: "Ignored"
  },
  {
    name: "reset during a write marked idempotent",
    error: socket("ECONNRESET", "query"),
    attempt: sent(insert),
    idempotency: "idempotent",
    decided: "TransientError(ConnectionReset, sent)",
    breaker: "Ignored"
  },
  {
    name: "reset during a read marked not idempotent",
    error: socket("ECONNRESET", "query"),
    attempt: sent(select),
    idempotency: "not-idempotent",
    decided: "OutcomeUnknown(ConnectionReset, sent)",
    breaker: "Ignored"
  },
  {
    name: "reset during a write, sentPhaseRetry always",
    error: socket("ECONNRESET", "query"),
    attempt: sent(insert),
    idempotency: "not-idempotent",
    policy: always,
    decided: "TransientError(ConnectionReset, sent)",
    breaker: "Ignored"
  },
  {
    name: "closed before the text was known",
    error: closed("query"),
    attempt: sent(undefined),
    decided: "OutcomeUnknown(ConnectionClosed, sent)",
    breaker: "Ignored"
  },
  {
    name: "a crash during a write: counts, the server is gone",
    error: server((p) => new UnknownError(p), "57P02", "query"),
    attempt: sent(insert),
    decided: "OutcomeUnknown(CrashShutdown, sent)",
    breaker: "Failure"
  },
  {
    name: "read-only answer to a write: not applied, the server answered",
    error: server((p) => new UnknownError(p), "25006", "query"),
    attempt: sent(insert),
    decided: "TransientError(ReadOnlyTransaction, sent)",
    breaker: "Ignored"
  },
  // The watchdog's deadline.
  {
    name: "closed after the watchdog ended the session: the attempt's deadline",
    error: closed("query"),
    attempt: sent(insert, true),
    decided: "OutcomeUnknown(AttemptTimeout, sent)",
    breaker: "Failure"
  },
  {
    name: "closed after the watchdog ended the session, a read",
    error: closed("query"),
    attempt: sent(select, true),
    decided: "TransientError(AttemptTimeout, sent)",
    breaker: "Failure"
  },
  {
    name: "closed during start-up after the deadline",
    error: closed("connect"),
    attempt: { sent: false, timedOut: true, sql: undefined },
    decided: "TransientError(AttemptTimeout, connect)",
    breaker: "Failure"
  },
  {
    name: "the cancel's 57014 after the deadline: the session lives, the reason stays",
    error: server((p) => new StatementTimeoutError(p), "57014", "query"),
    attempt: sent(insert, true),
    decided: "TransientError(StatementTimeoutError, sent)",
    breaker: "Failure"
  },
  {
    name: "a lost session not ended by the watchdog keeps its reason",
    error: closed("query"),
    attempt: sent(select, false),
    decided: "TransientError(ConnectionClosed, sent)",
    breaker: "Ignored"
  },
  {
    name: "the wait for a slot or a connection timed out",
    error: new Transient.AttemptTimeout({ phase: "connect", timeout }),
    attempt: notSent,
    decided: "TransientError(AttemptTimeout, connect)",
    breaker: "Failure"
  },
  // Answers: not transient, passed on unchanged, a success for the breaker.
  {
    name: "syntax error",
    error: server((p) => new SqlSyntaxError(p), "42601", "query"),
    attempt: sent(select),
    decided: "unchanged",
    breaker: "Success"
  },
  {
    name: "unique violation",
    error: server((p) => new UniqueViolation({ ...p, constraint: "t_pkey" }), "23505", "query"),
    attempt: sent(insert),
    decided: "unchanged",
    breaker: "Success"
  },
  {
    name: "40001 on a single statement (transient only for a whole transaction)",
    error: server((p) => new UnknownError(p), "40001", "query"),
    attempt: sent(select),
    decided: "unchanged",
    breaker: "Success"
  },
  {
    name: "a failure of the caller's own",
    error: new UserError(),
    attempt: sent(select),
    decided: "unchanged",
    breaker: "Success"
  },
  {
    name: "wrong password: refused, not an outage",
    error: server((p) => new UnknownError(p), "28P01", "connect"),
    attempt: notSent,
    decided: "ConfigurationRefused(AuthenticationFailed)",
    breaker: "Success"
  },
  // The connection gate: the circuit opened while this attempt was on its way.
  {
    name: "connect refused by the gate",
    error: gated,
    attempt: notSent,
    decided: "the CircuitOpen it carries",
    breaker: "Ignored"
  }
]

describe("decide and breakerOutcome", () => {
  it("classify each failed attempt, and say what the breaker is told", () => {
    const actual = cases.map((c) => {
      const failure = decide(c.error, c.attempt, c.idempotency ?? "auto", c.policy ?? safe)
      return { name: c.name, decided: describeFailure(c.error, failure), breaker: breakerOutcome(failure) }
    })
    assert.deepStrictEqual(
      actual,
      cases.map((c) => ({ name: c.name, decided: c.decided, breaker: c.breaker }))
    )
  })

  it("an attempt's deadline carries the client's attempt timeout", () => {
    const failure = decide(closed("query"), sent(select, true), "auto", safe)
    assert.instanceOf(failure, PgFailure.TransientError)
    const reason = (failure as PgFailure.TransientError).reason
    assert.instanceOf(reason, Transient.AttemptTimeout)
    assert.isTrue(Duration.equals((reason as Transient.AttemptTimeout).timeout, timeout))
  })

  it("breakerOutcome of what decide never returns", () => {
    assert.deepStrictEqual(
      [
        breakerOutcome(circuitOpen),
        // The store path's view of an attempt without a typed failure (interrupted, or a defect).
        breakerOutcome(undefined),
        breakerOutcome(
          new PgFailure.TransientError({ reason: new Transient.AttemptTimeout({ phase: "sent", timeout }) })
        )
      ],
      ["Ignored", "Success", "Failure"]
    )
  })
})

describe("shouldRetry", () => {
  it("retries transient failures, and rejections only when waiting for the circuit", () => {
    const transient = decide(socket("ECONNREFUSED", "connect"), notSent, "auto", safe)
    const unknown = decide(socket("ECONNRESET", "query"), sent(insert), "auto", safe)
    const syntax = server((p) => new SqlSyntaxError(p), "42601", "query")
    const table = [transient, unknown, circuitOpen, syntax].map((failure) => [
      shouldRetry(failure, "fail-fast"),
      shouldRetry(failure, "wait-and-retry")
    ])
    assert.deepStrictEqual(table, [
      [true, true],
      [false, false],
      [false, true],
      [false, false]
    ])
  })
})

describe("reasonOf", () => {
  it("names a failure by its reason, else its tag", () => {
    const transient = decide(socket("ECONNREFUSED", "connect"), notSent, "auto", safe)
    assert.deepStrictEqual(
      [
        transient,
        circuitOpen,
        server((p) => new SqlSyntaxError(p), "42601", "query"),
        new UserError(),
        undefined,
        42
      ].map(reasonOf),
      ["ConnectionRefused", "CircuitOpen", "SqlSyntaxError", "UserError", "Unknown", "Unknown"]
    )
  })
})
