/**
 * What can go wrong between an Effect program and PostgreSQL, and whether
 * another attempt may help: the transient reasons, the phase each happened
 * in, and the pure function that classifies what `@effect/sql-pg` reports.
 *
 * **Details**
 *
 * The reasons are the network ones of `@sturdy/resilience/Transient`, the
 * driver's own where `effect/sql` already names the failure, and Sturdy's
 * for what only PostgreSQL and its poolers say: `reasons` lists every one,
 * what triggers it and what it means for a statement that was sent.
 *
 * PgBouncer sends every error with SQLSTATE 08P01, the server's refusals it
 * relays included (their text kept): for 08P01 the message decides. A server
 * refusal relayed that way (`too many connections`, `the database system is
 * shutting down`) gets the reason the server's own SQLSTATE would have.
 *
 * A refusal of the client's configuration (bad credentials, an unknown
 * database, a start-up parameter the pooler does not accept, the pooler's
 * client limit) is not transient: `refusal` names it, and the client fails the
 * call with `ConfigurationRefused`, once, without counting it as an outage.
 * Anything else (a syntax error, a constraint violation) is not transient and
 * stays the driver's `SqlError`.
 *
 * **Phase and outcome**
 *
 * Each reason says whether the failure happened before the statement was
 * written (`"connect"`) or after (`"sent"`). `outcome` follows from it:
 * `"not-applied"` when the statement cannot have taken effect (the connect
 * phase, or a server that refused or cancelled the statement, as 25006 and
 * 57014 say) and
 * `"unknown"` when the connection was lost with the statement in flight.
 *
 * **Gotchas**
 *
 * The driver reports a backend killed by `pg_terminate_backend` as a closed
 * connection with no SQLSTATE, and a connection killed while idle in the pool
 * as a `"query"`-phase failure although the server never saw the statement.
 * The client cannot tell that apart from a statement lost in flight, so it is
 * `"sent"`: a write gets `OutcomeUnknown` rather than a silent duplicate.
 *
 * @since 0.1.0
 */
import { type Breaker, Transient } from "@sturdy/resilience"
import { Cause, Duration, Option, Predicate, Schema } from "effect"
import {
  ConnectionError as ConnectionErrorReason,
  DeadlockError,
  isSqlError,
  SerializationError,
  SqlError,
  StatementTimeoutError,
  UnknownError as UnknownErrorReason
} from "effect/sql/SqlError"

const fields = Transient.reasonFields

/** @since 0.1.0 @category reasons */
export class ConnectionFailure extends Schema.TaggedError<ConnectionFailure>()("ConnectionFailure", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class ConnectionDoesNotExist extends Schema.TaggedError<ConnectionDoesNotExist>()(
  "ConnectionDoesNotExist",
  fields
) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class ConnectionException extends Schema.TaggedError<ConnectionException>()("ConnectionException", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class CannotConnectNow extends Schema.TaggedError<CannotConnectNow>()("CannotConnectNow", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class AdminShutdown extends Schema.TaggedError<AdminShutdown>()("AdminShutdown", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class CrashShutdown extends Schema.TaggedError<CrashShutdown>()("CrashShutdown", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class TooManyConnections extends Schema.TaggedError<TooManyConnections>()("TooManyConnections", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class ReadOnlyTransaction extends Schema.TaggedError<ReadOnlyTransaction>()("ReadOnlyTransaction", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class ConnectionsNotAllowed extends Schema.TaggedError<ConnectionsNotAllowed>()(
  "ConnectionsNotAllowed",
  fields
) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class ConnectionClosed extends Schema.TaggedError<ConnectionClosed>()("ConnectionClosed", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class PoolerUnavailable extends Schema.TaggedError<PoolerUnavailable>()("PoolerUnavailable", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class NoMatchingHost extends Schema.TaggedError<NoMatchingHost>()("NoMatchingHost", fields) {
  readonly isRetryable = true
}
/** @since 0.1.0 @category reasons */
export class PreparedStatementUnavailable extends Schema.TaggedError<PreparedStatementUnavailable>()(
  "PreparedStatementUnavailable",
  fields
) {
  readonly isRetryable = true
}

/**
 * Every transient reason.
 *
 * @since 0.1.0
 * @category models
 */
export const TransientReason = Schema.Union([
  Transient.NetworkTimeout,
  Transient.ConnectionReset,
  Transient.HostNotFound,
  Transient.ConnectionRefused,
  Transient.BrokenPipe,
  Transient.DnsTemporaryFailure,
  Transient.NetworkUnreachable,
  Transient.AttemptTimeout,
  ConnectionFailure,
  ConnectionDoesNotExist,
  ConnectionException,
  CannotConnectNow,
  AdminShutdown,
  CrashShutdown,
  TooManyConnections,
  ReadOnlyTransaction,
  ConnectionsNotAllowed,
  StatementTimeoutError,
  ConnectionClosed,
  PoolerUnavailable,
  NoMatchingHost,
  PreparedStatementUnavailable,
  SerializationError,
  DeadlockError
])

/**
 * @since 0.1.0
 * @category models
 */
export type TransientReason = typeof TransientReason.Type

/**
 * Every transient reason, as data: what triggers it, and what it means for a
 * statement already sent (`"unknown"`: retried only when read-only or
 * idempotent, otherwise `OutcomeUnknown`; `"not applied"`: retried;
 * `"connect only"`: it cannot happen once the statement is sent). A test
 * checks that these are exactly the members of `TransientReason`, and the
 * README's error table is made from this list.
 *
 * @since 0.1.0
 * @category models
 */
export const reasons: ReadonlyArray<{
  readonly reason: TransientReason["_tag"]
  readonly trigger: string
  readonly whenSent: "unknown" | "not applied" | "connect only"
}> = [
  { reason: "NetworkTimeout", trigger: "`ETIMEDOUT`, the driver's connect timeout", whenSent: "unknown" },
  { reason: "ConnectionReset", trigger: "`ECONNRESET`, `ECONNABORTED`", whenSent: "unknown" },
  { reason: "HostNotFound", trigger: "`ENOTFOUND`", whenSent: "connect only" },
  { reason: "ConnectionRefused", trigger: "`ECONNREFUSED`", whenSent: "connect only" },
  { reason: "BrokenPipe", trigger: "`EPIPE`", whenSent: "unknown" },
  { reason: "DnsTemporaryFailure", trigger: "`EAI_AGAIN`", whenSent: "connect only" },
  {
    reason: "NetworkUnreachable",
    trigger: "`EHOSTUNREACH`, `ENETUNREACH`, `ENETDOWN`, `EHOSTDOWN`",
    whenSent: "connect only"
  },
  { reason: "AttemptTimeout", trigger: "the attempt's deadline passed", whenSent: "unknown" },
  { reason: "ConnectionFailure", trigger: "SQLSTATE 08006", whenSent: "unknown" },
  { reason: "ConnectionDoesNotExist", trigger: "SQLSTATE 08003", whenSent: "unknown" },
  { reason: "ConnectionException", trigger: "SQLSTATE 08000 and the rest of class 08", whenSent: "unknown" },
  { reason: "CannotConnectNow", trigger: "SQLSTATE 57P03 (starting up, shutting down)", whenSent: "connect only" },
  {
    reason: "AdminShutdown",
    trigger: "SQLSTATE 57P01 (`pg_terminate_backend`, a fast shutdown)",
    whenSent: "unknown"
  },
  { reason: "CrashShutdown", trigger: "SQLSTATE 57P02", whenSent: "unknown" },
  { reason: "TooManyConnections", trigger: "SQLSTATE 53300", whenSent: "connect only" },
  { reason: "ReadOnlyTransaction", trigger: "SQLSTATE 25006 (a standby after a failover)", whenSent: "not applied" },
  {
    reason: "ConnectionsNotAllowed",
    trigger:
      "SQLSTATE 55000 while connecting: the database does not accept connections now (`ALLOW_CONNECTIONS false`, maintenance)",
    whenSent: "connect only"
  },
  {
    reason: "StatementTimeoutError",
    trigger:
      "SQLSTATE 57014, the driver's own reason: the server cancelled the statement (its `statement_timeout`, or the cancel sent at the attempt's deadline)",
    whenSent: "not applied"
  },
  {
    reason: "ConnectionClosed",
    trigger:
      'the connection closed with no SQLSTATE (how a killed backend arrives, directly or relayed by PgBouncer as "Unexpected ErrorResponse after ErrorResponse")',
    whenSent: "unknown"
  },
  {
    reason: "PoolerUnavailable",
    trigger:
      "a pooler answered for a server it cannot reach, or gave up waiting: PgBouncer's 08P01 `server login has been failing`, `pgbouncer cannot connect to server`, `server conn crashed?`, `query_wait_timeout`, `client_login_timeout`, its shutdown messages",
    whenSent: "unknown"
  },
  {
    reason: "NoMatchingHost",
    trigger: "several hosts, none of the kind `target_session_attrs` wants (during a failover, before the promotion)",
    whenSent: "connect only"
  },
  {
    reason: "PreparedStatementUnavailable",
    trigger:
      "SQLSTATE 26000 or 42P05 on a prepared statement behind a transaction-mode pooler (prepared statements then turn off)",
    whenSent: "not applied"
  },
  {
    reason: "SerializationError",
    trigger: "SQLSTATE 40001, the driver's own reason: for whole transactions only",
    whenSent: "not applied"
  },
  {
    reason: "DeadlockError",
    trigger: "SQLSTATE 40P01, the driver's own reason: for whole transactions only",
    whenSent: "not applied"
  }
]

/**
 * Whether a reason's statement may have taken effect.
 *
 * @since 0.1.0
 * @category classification
 */
export const outcome = (reason: TransientReason): "not-applied" | "unknown" =>
  phaseOf(reason) === "connect" ||
  reason._tag === "ReadOnlyTransaction" ||
  reason._tag === "StatementTimeoutError" ||
  reason._tag === "PreparedStatementUnavailable" ||
  reason._tag === "SerializationError" ||
  reason._tag === "DeadlockError"
    ? "not-applied"
    : "unknown"

/**
 * The phase a reason happened in. The driver's own reasons (57014, 40001,
 * 40P01) are the server's answer to a statement it received: `"sent"`.
 *
 * @since 0.1.0
 * @category classification
 */
export const phaseOf = (reason: TransientReason): Transient.Phase => ("phase" in reason ? reason.phase : "sent")

/**
 * A transient failure: the last one, once the retries ran out.
 *
 * @since 0.1.0
 * @category errors
 */
export class TransientError extends Schema.TaggedError<TransientError>()("TransientError", {
  reason: TransientReason
}) {
  readonly isRetryable = true
  override get message(): string {
    return this.reason.message
  }
}

/**
 * The connection was lost after a statement that may write was sent: it may
 * or may not have taken effect, so it was not retried.
 *
 * **When to use**
 *
 * Catch it where a write's outcome matters: check the table (by the
 * client-generated id you wrote), then decide. Mark statements that are safe
 * to run twice with `ResilientPg.idempotent` so they are retried instead.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutcomeUnknown extends Schema.TaggedError<OutcomeUnknown>()("OutcomeUnknown", {
  reason: TransientReason
}) {
  readonly isRetryable = false
  override get message(): string {
    return `The statement may or may not have taken effect: ${this.reason.message}. It was not retried because it is neither read-only nor marked idempotent.`
  }
}

/**
 * A retry the client's retry budget refused: retries are already at their
 * share of first attempts (`ResilientPg.Options.retryBudget`), so this call
 * ends with its last transient failure instead of adding load to a server
 * that is failing. Retryable later, like the transient failure it carries.
 *
 * @since 0.1.0
 * @category errors
 */
export class RetryBudgetExhausted extends Schema.TaggedError<RetryBudgetExhausted>()("RetryBudgetExhausted", {
  reason: TransientReason
}) {
  readonly isRetryable = true
  override get message(): string {
    return `Not retried: the retry budget is spent (retries are at their share of first attempts). The last failure: ${this.reason.message}`
  }
}

const sqlStateReasons: Record<string, (props: Transient.ReasonProps) => TransientReason> = {
  "08006": (props) => new ConnectionFailure(props),
  "08003": (props) => new ConnectionDoesNotExist(props),
  "57P03": (props) => new CannotConnectNow(props),
  "57P01": (props) => new AdminShutdown(props),
  "57P02": (props) => new CrashShutdown(props),
  "53300": (props) => new TooManyConnections(props),
  "25006": (props) => new ReadOnlyTransaction(props),
  "26000": (props) => new PreparedStatementUnavailable(props),
  // The router's own: every host answered or failed, none is of the kind target_session_attrs wants (yet).
  STURDY_NO_MATCHING_HOST: (props) => new NoMatchingHost({ ...props, phase: "connect" }),
  "42P05": (props) => new PreparedStatementUnavailable(props)
}

/** The driver's own reason for a SQLSTATE it names, kept as the driver made it. */
const driverReason = (error: SqlError, code: string, message: string): TransientReason => {
  const reason = error.reason
  const fields = { cause: reason.cause, message, operation: reason.operation }
  switch (code) {
    case "57014":
      return reason._tag === "StatementTimeoutError" ? reason : new StatementTimeoutError(fields)
    case "40001":
      return reason._tag === "SerializationError" ? reason : new SerializationError(fields)
    default:
      return reason._tag === "DeadlockError" ? reason : new DeadlockError(fields)
  }
}

/**
 * The driver's messages for a connection that closed without a SQLSTATE or
 * errno. Matching them is the only way to tell "the server went away" from a
 * configuration error, which the driver also reports as a `ConnectionError`
 * without a code; the table test pins them to what the driver produces.
 */
const closedMessages = new Set([
  "PgConnection: Connection closed",
  "PgConnection: Connection closed during startup",
  "PgConnection: Socket error",
  "PgConnection: Failed to write query",
  "PgConnection: Failed to write query batch",
  // A pooler relaying a backend killed mid-statement: the server's 57P01, then the pooler's own error.
  "PgConnection: Unexpected ErrorResponse after ErrorResponse"
])
const connectTimeoutMessage = "PgConnection: Connection timed out"

/**
 * PgBouncer's own 08P01 messages (and the server refusals it relays with
 * 08P01) that mean "not now": the pooler cannot reach or wait for a server.
 */
const poolerMessages: ReadonlyArray<readonly [RegExp, (props: Transient.ReasonProps) => TransientReason]> = [
  [/^too many connections/, (props) => new TooManyConnections(props)],
  [
    /^the database system is (starting up|shutting down|not yet accepting connections|in recovery mode)/,
    (props) => new CannotConnectNow(props)
  ],
  [
    /^(server login has been failing|pgbouncer cannot connect to server|server conn crashed\?|query_wait_timeout|client_login_timeout|server shutting down|pgbouncer shutting down|closing because: )/,
    (props) => new PoolerUnavailable(props)
  ]
]

/**
 * Why a server or a pooler refused the client's configuration.
 *
 * @since 0.1.0
 * @category models
 */
export type Refusal = "AuthenticationFailed" | "UnknownDatabase" | "UnsupportedStartupParameter" | "ClientLimit"

const refusalsBySqlState: Record<string, Refusal> = {
  "28P01": "AuthenticationFailed",
  "28000": "AuthenticationFailed",
  "3D000": "UnknownDatabase"
}

/** PgBouncer sends these with 08P01; its relays of the server's own refusals keep the server's text. */
const refusalMessages: ReadonlyArray<readonly [RegExp, Refusal]> = [
  [/^(SASL authentication failed|password authentication failed|no such user|auth failed)/, "AuthenticationFailed"],
  [/^(no such database|database ".*" does not exist)/, "UnknownDatabase"],
  [/^unsupported startup parameter/, "UnsupportedStartupParameter"],
  [/^no more connections allowed \(max_client_conn\)/, "ClientLimit"]
]

const refusalOf = (code: string, detail: string): Refusal | undefined => {
  if (Object.hasOwn(refusalsBySqlState, code)) return refusalsBySqlState[code]
  if (code !== "08P01") return undefined
  for (const [pattern, refusal] of refusalMessages) if (pattern.test(detail)) return refusal
  return undefined
}

/**
 * The server or a pooler refused the client's configuration: retrying cannot
 * help and the database is not down, so it is neither retried nor counted
 * against the breaker. `detail` is the server's (or pooler's) message; it
 * names a user or a database, never a password.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConfigurationRefused extends Schema.TaggedError<ConfigurationRefused>()("ConfigurationRefused", {
  refusal: Schema.Literals(["AuthenticationFailed", "UnknownDatabase", "UnsupportedStartupParameter", "ClientLimit"]),
  code: Schema.String,
  detail: Schema.String
}) {
  readonly isRetryable = false
  override get message(): string {
    const hint =
      this.refusal === "UnsupportedStartupParameter"
        ? ' A pooler (PgBouncer) refuses start-up parameters it does not know: leave statementTimeoutVia at "transaction".'
        : this.refusal === "ClientLimit"
          ? " The pooler's max_client_conn is reached: raise it, or lower maxConnections across the fleet."
          : ""
    return `The database refused the client's configuration (${this.refusal}): ${this.detail} (SQLSTATE ${this.code}).${hint}`
  }
}

/**
 * The configuration refusal a driver error reports, if it is one.
 *
 * @since 0.1.0
 * @category classification
 */
export const refusal = (error: SqlError): ConfigurationRefused | undefined => {
  const cause: unknown = error.reason.cause
  const code = Predicate.hasProperty(cause, "code") && typeof cause.code === "string" ? cause.code : undefined
  if (code === undefined) return undefined
  const detail = describeCause(cause)
  const found = refusalOf(code, detail)
  return found === undefined ? undefined : new ConfigurationRefused({ refusal: found, code, detail })
}

const describeCause = (cause: unknown): string =>
  Predicate.hasProperty(cause, "message") && typeof cause.message === "string" ? cause.message : "no detail"

/**
 * Classifies what the driver reported: a transient reason, or `undefined`
 * when the failure is not transient and must reach the caller unchanged.
 *
 * **Details**
 *
 * Pure and total. It reads `reason.cause.code` (an errno such as
 * `ECONNREFUSED` or a SQLSTATE such as `57P03`) and `reason.operation`
 * (`"connect"` or `"query"`, which gives the phase). `scope` is
 * `"transaction"` when the unit of retry is a whole transaction: only then are
 * 40001 and 40P01 transient.
 *
 * @since 0.1.0
 * @category classification
 */
export const classify = (
  error: SqlError,
  scope: "statement" | "transaction" = "statement"
): TransientReason | undefined => {
  const reason = error.reason
  const cause: unknown = reason.cause
  const code = Predicate.hasProperty(cause, "code") && typeof cause.code === "string" ? cause.code : undefined
  const phase: Transient.Phase = reason.operation === "connect" ? "connect" : "sent"
  const detail = describeCause(cause)
  if (code !== undefined) {
    const network = Transient.fromErrno(code, { phase, message: `${reason.message ?? reason._tag} (${detail})`, cause })
    if (network !== undefined) return network
    const props = { phase, code, message: `${detail} (SQLSTATE ${code})`, cause }
    const bySqlState = Object.hasOwn(sqlStateReasons, code) ? sqlStateReasons[code] : undefined
    if (bySqlState !== undefined) return bySqlState(props)
    if (code === "08P01") {
      if (refusalOf(code, detail) !== undefined) return undefined
      for (const [pattern, make] of poolerMessages) if (pattern.test(detail)) return make(props)
    }
    if (code.startsWith("08")) return new ConnectionException(props)
    // 55000 has many meanings; while connecting it can only be a database refusing connections for now.
    if (code === "55000" && phase === "connect") return new ConnectionsNotAllowed(props)
    if (code === "57014" || (scope === "transaction" && (code === "40001" || code === "40P01"))) {
      return driverReason(error, code, props.message)
    }
    return undefined
  }
  if (reason._tag !== "ConnectionError" || reason.message === undefined) return undefined
  if (reason.message === connectTimeoutMessage) {
    return new Transient.NetworkTimeout({ phase, message: "Connecting timed out", cause })
  }
  if (closedMessages.has(reason.message)) {
    return new ConnectionClosed({ phase, message: `${reason.message} (${detail})`, cause })
  }
  return undefined
}

const sessionLostReasons = new Set<TransientReason["_tag"]>([
  "NetworkTimeout",
  "ConnectionReset",
  "BrokenPipe",
  "NetworkUnreachable",
  "ConnectionFailure",
  "ConnectionDoesNotExist",
  "ConnectionException",
  "AdminShutdown",
  "CrashShutdown",
  "ConnectionClosed"
])

/**
 * Whether a failure shows that named prepared statements do not survive
 * between statements on this connection (26000, 42P05): a pooler in
 * transaction mode.
 *
 * @since 0.1.0
 * @category classification
 */
export const preparedStatementsUnavailable = (error: SqlError): boolean => {
  const code = sqlStateOf(error)
  return code === "26000" || code === "42P05"
}

/**
 * The SQLSTATE (or errno) a driver error carries, if any.
 *
 * @since 0.1.0
 * @category classification
 */
export const sqlStateOf = (error: SqlError): string | undefined => {
  const cause: unknown = error.reason.cause
  return Predicate.hasProperty(cause, "code") && typeof cause.code === "string" ? cause.code : undefined
}

/**
 * The failure to report for a prepared statement the server connection did
 * not have, when the driver's unnamed re-run inside the transaction met the
 * transaction the first attempt had aborted (25P02): SQLSTATE 26000, with the
 * driver's error as its cause.
 *
 * @since 0.1.0
 * @category conversions
 */
export const preparedStatementUnavailable = (error: SqlError): SqlError =>
  new SqlError({
    reason: new UnknownErrorReason({
      cause: Object.assign(
        new Error(
          "prepared statement not on this server connection (a pooler in transaction mode); the transaction was aborted before anything ran",
          { cause: error }
        ),
        { code: "26000" }
      ),
      message: "Sturdy: a prepared statement did not survive the pooler",
      operation: error.reason.operation ?? "query"
    })
  })

/**
 * Whether a transient failure is evidence that the server cannot serve, for
 * the circuit breaker: every failure in the connect phase, every timeout,
 * a crash; not a session lost mid-statement (the next attempt reconnects, and
 * counts if that fails) nor a read-only refusal (the server answered).
 *
 * @since 0.1.0
 * @category classification
 */
export const countsAgainstBreaker = (reason: TransientReason): boolean =>
  phaseOf(reason) === "connect" ||
  reason._tag === "AttemptTimeout" ||
  reason._tag === "StatementTimeoutError" ||
  reason._tag === "NetworkTimeout" ||
  reason._tag === "CrashShutdown"

/**
 * Whether a failure means the session itself is gone (as opposed to a
 * statement the server refused on a live session).
 *
 * @since 0.1.0
 * @category classification
 */
export const sessionLost = (error: SqlError): boolean => {
  const reason = classify(error)
  return reason !== undefined && sessionLostReasons.has(reason._tag)
}

/**
 * Any failure Sturdy's policies produce, besides the driver's own `SqlError`.
 *
 * @since 0.1.0
 * @category models
 */
export type PolicyFailure =
  | TransientError
  | OutcomeUnknown
  | RetryBudgetExhausted
  | Breaker.CircuitOpen
  | Breaker.CircuitHalfOpen
  | CommitOutcomeUnknown
  | ConfigurationRefused

/**
 * The connection was lost after `COMMIT` was sent, and asking the server
 * about the transaction (`pg_xact_status`) gave no answer in time: it may or
 * may not have committed. `transactionId` is what to look up once the
 * database is reachable again (`SELECT pg_xact_status('<id>'::xid8)`).
 *
 * @since 0.1.0
 * @category errors
 */
export class CommitOutcomeUnknown extends Schema.TaggedError<CommitOutcomeUnknown>()("CommitOutcomeUnknown", {
  transactionId: Schema.String,
  /** What the resolution attempts last met. */
  detail: Schema.String
}) {
  readonly isRetryable = false
  override get message(): string {
    return `The connection was lost after COMMIT of transaction ${this.transactionId} was sent, and whether it committed could not be determined (${this.detail})`
  }
}

/**
 * `ResilientPg.withTransaction` ran out of its whole-transaction deadline.
 *
 * @since 0.1.0
 * @category errors
 */
export class TransactionTimeout extends Schema.TaggedError<TransactionTimeout>()("TransactionTimeout", {
  timeout: Schema.Duration
}) {
  readonly isRetryable = false
  override get message(): string {
    return `The transaction did not complete within its deadline of ${Duration.format(this.timeout)}`
  }
}

/**
 * @since 0.1.0
 * @category guards
 */
export const isPolicyFailure = (u: unknown): u is PolicyFailure =>
  Predicate.isTagged(u, "TransientError") ||
  Predicate.isTagged(u, "OutcomeUnknown") ||
  Predicate.isTagged(u, "RetryBudgetExhausted") ||
  Predicate.isTagged(u, "CircuitOpen") ||
  Predicate.isTagged(u, "CircuitHalfOpen") ||
  Predicate.isTagged(u, "CommitOutcomeUnknown") ||
  Predicate.isTagged(u, "ConfigurationRefused")

/**
 * Wraps a policy failure in the `SqlError` that `SqlClient`'s statements are
 * typed with, so code written against `SqlClient` keeps an honest error type.
 * `cause` of the reason is the policy failure; `ResilientPg.unwrapFailures`
 * moves it back into the error channel.
 *
 * A transient failure, a retry the budget refused and a rejection by the
 * open circuit become a `ConnectionError` (retryable, later); an unknown outcome and a refused
 * configuration an `UnknownError` (not retryable: a generic retry on
 * `isRetryable` must not duplicate the write Sturdy declined to retry, nor
 * hammer a server with a wrong password).
 *
 * @since 0.1.0
 * @category conversions
 */
export const toSqlError = (failure: PolicyFailure, operation: string): SqlError =>
  new SqlError({
    reason:
      failure._tag === "TransientError" ||
      failure._tag === "RetryBudgetExhausted" ||
      failure._tag === "CircuitOpen" ||
      failure._tag === "CircuitHalfOpen"
        ? new ConnectionErrorReason({ cause: failure, message: `Sturdy: ${failure.message}`, operation })
        : new UnknownErrorReason({ cause: failure, message: `Sturdy: ${failure.message}`, operation })
  })

/**
 * The policy failure a `SqlError` carries, if it carries one.
 *
 * @since 0.1.0
 * @category conversions
 */
export const fromSqlError = (error: SqlError): PolicyFailure | undefined =>
  isPolicyFailure(error.reason.cause) ? error.reason.cause : undefined

/**
 * The `SqlError` an error carries, at any depth of its cause chain: the
 * error itself, its `cause` (an `Error`'s, or the first failure of an Effect
 * `Cause` held there), and so on.
 *
 * **When to use**
 *
 * Libraries on top of `SqlClient` wrap the driver's errors: drizzle's
 * `EffectDrizzleQueryError` keeps the `SqlError` inside a `Cause` in its
 * `cause`. `ResilientPg.unwrapFailures` and `ResilientPg.withTransaction`
 * look through any such wrapper with this, so Sturdy's typed failures and a
 * serialization conflict are found whoever wrapped them.
 *
 * @since 0.1.0
 * @category conversions
 */
export const findSqlError = (error: unknown): SqlError | undefined => {
  let current: unknown = error
  // Bounded: a cause chain with a cycle must not hang the caller.
  for (let depth = 0; depth < 16 && current !== undefined && current !== null; depth++) {
    if (isSqlError(current)) return current
    const cause: unknown = Predicate.hasProperty(current, "cause") ? current.cause : undefined
    current = Cause.isCause(cause) ? Option.getOrUndefined(Cause.findErrorOption(cause)) : cause
  }
  return undefined
}
