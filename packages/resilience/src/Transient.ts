/**
 * Failures worth another attempt that any network client meets: the socket
 * errors (timeouts, resets, refusals, DNS failures) and the attempt timeout, each a tagged class that
 * says in which phase it happened.
 *
 * **Details**
 *
 * | reason | trigger |
 * |---|---|
 * | `NetworkTimeout` | `ETIMEDOUT`, a connect timeout |
 * | `ConnectionReset` | `ECONNRESET`, `ECONNABORTED` |
 * | `HostNotFound` | `ENOTFOUND` |
 * | `ConnectionRefused` | `ECONNREFUSED` |
 * | `BrokenPipe` | `EPIPE` |
 * | `DnsTemporaryFailure` | `EAI_AGAIN` |
 * | `NetworkUnreachable` | `EHOSTUNREACH`, `ENETUNREACH`, `ENETDOWN`, `EHOSTDOWN` |
 * | `AttemptTimeout` | the attempt's deadline passed |
 *
 * **Phase**
 *
 * `"connect"`: the failure happened before the request was written, so
 * nothing reached the server and another attempt is always safe. `"sent"`:
 * the request may have reached the server; whether it took effect is
 * unknown, so only a read or an idempotent request may be tried again.
 *
 * @since 0.1.0
 */
import { Duration, Schema } from "effect"

/**
 * @since 0.1.0
 * @category models
 */
export const Phase = Schema.Literals(["connect", "sent"])

/**
 * @since 0.1.0
 * @category models
 */
export type Phase = typeof Phase.Type

/**
 * The fields every reason carries.
 *
 * @since 0.1.0
 * @category models
 */
export const reasonFields = {
  phase: Phase,
  /** The errno (`ECONNREFUSED`) or SQLSTATE (`57P03`) that identified the failure, if any. */
  code: Schema.optional(Schema.String),
  message: Schema.String,
  /** The original error, as the driver produced it. */
  cause: Schema.Defect()
}

/**
 * @since 0.1.0
 * @category reasons
 */
export class NetworkTimeout extends Schema.TaggedError<NetworkTimeout>()("NetworkTimeout", reasonFields) {
  readonly isRetryable = true
}

/**
 * @since 0.1.0
 * @category reasons
 */
export class ConnectionReset extends Schema.TaggedError<ConnectionReset>()("ConnectionReset", reasonFields) {
  readonly isRetryable = true
}

/**
 * @since 0.1.0
 * @category reasons
 */
export class HostNotFound extends Schema.TaggedError<HostNotFound>()("HostNotFound", reasonFields) {
  readonly isRetryable = true
}

/**
 * @since 0.1.0
 * @category reasons
 */
export class ConnectionRefused extends Schema.TaggedError<ConnectionRefused>()("ConnectionRefused", reasonFields) {
  readonly isRetryable = true
}

/**
 * @since 0.1.0
 * @category reasons
 */
export class BrokenPipe extends Schema.TaggedError<BrokenPipe>()("BrokenPipe", reasonFields) {
  readonly isRetryable = true
}

/**
 * @since 0.1.0
 * @category reasons
 */
export class DnsTemporaryFailure extends Schema.TaggedError<DnsTemporaryFailure>()(
  "DnsTemporaryFailure",
  reasonFields
) {
  readonly isRetryable = true
}

/**
 * @since 0.1.0
 * @category reasons
 */
export class NetworkUnreachable extends Schema.TaggedError<NetworkUnreachable>()("NetworkUnreachable", reasonFields) {
  readonly isRetryable = true
}

/**
 * The attempt's deadline passed: in phase `"connect"` while waiting for a
 * connection (an exhausted pool, a silent network), in phase `"sent"` while
 * the request ran. The attempt was interrupted, which for a PostgreSQL query
 * sends a cancel request to the server.
 *
 * @since 0.1.0
 * @category reasons
 */
export class AttemptTimeout extends Schema.TaggedError<AttemptTimeout>()("AttemptTimeout", {
  phase: Phase,
  timeout: Schema.Duration
}) {
  readonly isRetryable = true
  override get message(): string {
    return `The attempt did not finish within ${Duration.format(this.timeout)} (${
      this.phase === "connect" ? "waiting for a connection" : "running"
    })`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export type NetworkReason =
  | NetworkTimeout
  | ConnectionReset
  | HostNotFound
  | ConnectionRefused
  | BrokenPipe
  | DnsTemporaryFailure
  | NetworkUnreachable

/**
 * What a reason is built from.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReasonProps {
  readonly phase: Phase
  readonly code?: string | undefined
  readonly message: string
  readonly cause: unknown
}

const byErrno: Record<string, (props: ReasonProps) => NetworkReason> = {
  ETIMEDOUT: (props) => new NetworkTimeout(props),
  ECONNRESET: (props) => new ConnectionReset(props),
  ECONNABORTED: (props) => new ConnectionReset(props),
  ENOTFOUND: (props) => new HostNotFound(props),
  ECONNREFUSED: (props) => new ConnectionRefused(props),
  EPIPE: (props) => new BrokenPipe(props),
  EAI_AGAIN: (props) => new DnsTemporaryFailure(props),
  EHOSTUNREACH: (props) => new NetworkUnreachable(props),
  ENETUNREACH: (props) => new NetworkUnreachable(props),
  ENETDOWN: (props) => new NetworkUnreachable(props),
  EHOSTDOWN: (props) => new NetworkUnreachable(props)
}

/**
 * The network reason for a Node.js socket error code, or `undefined` when the
 * code is not a transient network failure.
 *
 * @since 0.1.0
 * @category classification
 */
export const fromErrno = (
  code: string,
  props: { readonly phase: Phase; readonly message: string; readonly cause: unknown }
): NetworkReason | undefined => {
  const make = Object.hasOwn(byErrno, code) ? byErrno[code] : undefined
  return make === undefined ? undefined : make({ ...props, code })
}
