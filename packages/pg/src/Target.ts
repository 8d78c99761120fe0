/**
 * Where to connect: one host or several, and which kind of server to accept,
 * with libpq's connection URL semantics.
 *
 * **Details**
 *
 * `parse` reads a libpq connection URL:
 *
 * ```
 * postgres://user:password@host1:5432,host2:5433/database?target_session_attrs=read-write
 * postgres://user:password@/database?host=host1,host2&port=5432,5433
 * ```
 *
 * - hosts in the authority, comma-separated, each with its own port (an IPv6
 *   address in brackets), or in the `host=` parameter, with `port=` giving one
 *   port for all or one per host;
 * - `target_session_attrs`: `any` (default), `read-write`, `read-only`,
 *   `primary`, `standby`, `prefer-standby`;
 * - `load_balance_hosts`: `disable` (default, hosts in order) or `random`;
 * - `connect_timeout`: seconds per host (libpq's minimum of 2 applies);
 * - user, password and database percent-decoded; other parameters (`sslmode`,
 *   `application_name`, `options`...) are kept for the driver.
 *
 * **Gotchas**
 *
 * A URL that cannot be read fails with `InvalidUrl`, naming where it came
 * from (`DATABASE_URL`, or `url` in code) and what is wrong, never echoing
 * the URL: it holds the password.
 *
 * @since 0.1.0
 */
import { Duration, Redacted, Result, Schema } from "effect"

/**
 * @since 0.1.0
 * @category models
 */
export type SessionAttrs = "any" | "read-write" | "read-only" | "primary" | "standby" | "prefer-standby"

/**
 * @since 0.1.0
 * @category models
 */
export const sessionAttrs: ReadonlyArray<SessionAttrs> = [
  "any",
  "read-write",
  "read-only",
  "primary",
  "standby",
  "prefer-standby"
]

/**
 * @since 0.1.0
 * @category models
 */
export interface Host {
  readonly host: string
  readonly port: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Target {
  readonly hosts: ReadonlyArray<Host>
  readonly username: string | undefined
  readonly password: Redacted.Redacted<string> | undefined
  readonly database: string | undefined
  readonly targetSessionAttrs: SessionAttrs
  readonly loadBalanceHosts: "disable" | "random"
  /** Per host, from `connect_timeout`. */
  readonly connectTimeout: Duration.Duration | undefined
  /** The other query parameters, for the driver (`sslmode`, `application_name`, `options`...). */
  readonly parameters: ReadonlyArray<readonly [string, string]>
}

/**
 * A connection URL that cannot be read. `source` says where it came from;
 * the message never contains the URL.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidUrl extends Schema.TaggedError<InvalidUrl>()("InvalidUrl", {
  source: Schema.String,
  problem: Schema.String
}) {
  override get message(): string {
    return `${this.source} is not a valid PostgreSQL connection URL: ${this.problem}`
  }
}

const decode = (value: string, what: string, source: string): Result.Result<string, InvalidUrl> => {
  try {
    return Result.succeed(decodeURIComponent(value))
  } catch {
    return Result.fail(new InvalidUrl({ source, problem: `the ${what} has an invalid percent-encoding` }))
  }
}

/** `where` names the port without quoting it: a password with an unencoded "/" or "@" spills into the host list. */
const parsePort = (value: string, where: string, source: string): Result.Result<number, InvalidUrl> => {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN
  return port >= 1 && port <= 65535
    ? Result.succeed(port)
    : Result.fail(new InvalidUrl({ source, problem: `${where} is not a number from 1 to 65535` }))
}

/** `host`, `host:port`, `[v6]`, `[v6]:port`, or empty. */
const parseHostSpec = (
  spec: string,
  index: number,
  source: string
): Result.Result<{ readonly host: string | undefined; readonly port: number | undefined }, InvalidUrl> => {
  let host = spec
  let port: string | undefined
  if (spec.startsWith("[")) {
    const close = spec.indexOf("]")
    if (close < 0) return Result.fail(new InvalidUrl({ source, problem: "an IPv6 address is missing its closing ]" }))
    host = spec.slice(1, close)
    const rest = spec.slice(close + 1)
    if (rest !== "") {
      if (!rest.startsWith(":")) {
        return Result.fail(new InvalidUrl({ source, problem: "unexpected characters after an IPv6 address" }))
      }
      port = rest.slice(1)
    }
  } else {
    const colon = spec.lastIndexOf(":")
    if (colon >= 0) {
      host = spec.slice(0, colon)
      port = spec.slice(colon + 1)
    }
  }
  const decodedHost = decode(host, "host", source)
  if (Result.isFailure(decodedHost)) return Result.fail(decodedHost.failure)
  if (port === undefined || port === "")
    return Result.succeed({ host: decodedHost.success || undefined, port: undefined })
  const parsedPort = parsePort(port, `the port of host ${index + 1}`, source)
  if (Result.isFailure(parsedPort)) return Result.fail(parsedPort.failure)
  return Result.succeed({ host: decodedHost.success || undefined, port: parsedPort.success })
}

/**
 * Reads a libpq connection URL. `source` names where it came from, for the
 * error: `"DATABASE_URL"`, `"url"`.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (url: string, source: string): Result.Result<Target, InvalidUrl> => {
  const fail = (problem: string) => Result.fail(new InvalidUrl({ source, problem }))
  const scheme = /^(postgres|postgresql):\/\//i.exec(url)
  if (scheme === null) return fail("it must start with postgres:// or postgresql://")
  const rest = url.slice(scheme[0].length)
  // The authority ends at the first "/", "?" or "#"; a password may contain none of them unencoded.
  const end = rest.search(/[/?#]/)
  const authority = end < 0 ? rest : rest.slice(0, end)
  const afterAuthority = end < 0 ? "" : rest.slice(end)
  const at = authority.lastIndexOf("@")
  const userinfo = at < 0 ? undefined : authority.slice(0, at)
  const hostList = at < 0 ? authority : authority.slice(at + 1)

  let username: string | undefined
  let password: Redacted.Redacted<string> | undefined
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(":")
    const user = decode(colon < 0 ? userinfo : userinfo.slice(0, colon), "user name", source)
    if (Result.isFailure(user)) return Result.fail(user.failure)
    username = user.success || undefined
    if (colon >= 0) {
      const secret = decode(userinfo.slice(colon + 1), "password", source)
      if (Result.isFailure(secret)) return Result.fail(secret.failure)
      password = Redacted.make(secret.success)
    }
  }

  const hash = afterAuthority.indexOf("#")
  const pathAndQuery = hash < 0 ? afterAuthority : afterAuthority.slice(0, hash)
  const question = pathAndQuery.indexOf("?")
  const path = question < 0 ? pathAndQuery : pathAndQuery.slice(0, question)
  const query = question < 0 ? "" : pathAndQuery.slice(question + 1)
  let database: string | undefined
  if (path.length > 1) {
    const name = decode(path.slice(1), "database name", source)
    if (Result.isFailure(name)) return Result.fail(name.failure)
    database = name.success
  }

  const specs: Array<{ host: string | undefined; port: number | undefined }> = []
  if (hostList !== "") {
    for (const [index, spec] of hostList.split(",").entries()) {
      const parsed = parseHostSpec(spec, index, source)
      if (Result.isFailure(parsed)) return Result.fail(parsed.failure)
      specs.push({ ...parsed.success })
    }
  }

  let targetSessionAttrs: SessionAttrs = "any"
  let loadBalanceHosts: "disable" | "random" = "disable"
  let connectTimeout: Duration.Duration | undefined
  let hostParam: Array<string> | undefined
  let portParam: Array<string> | undefined
  const parameters: Array<readonly [string, string]> = []
  if (query !== "") {
    for (const pair of query.split("&")) {
      if (pair === "") continue
      const equals = pair.indexOf("=")
      const key = decode(equals < 0 ? pair : pair.slice(0, equals), "query parameter name", source)
      if (Result.isFailure(key)) return Result.fail(key.failure)
      const value = decode(
        (equals < 0 ? "" : pair.slice(equals + 1)).replaceAll("+", " "),
        `${key.success} parameter`,
        source
      )
      if (Result.isFailure(value)) return Result.fail(value.failure)
      switch (key.success) {
        case "host":
          hostParam = value.success.split(",")
          break
        case "port":
          portParam = value.success.split(",")
          break
        case "user":
          username = value.success || undefined
          break
        case "password":
          password = Redacted.make(value.success)
          break
        case "dbname":
          database = value.success || undefined
          break
        case "target_session_attrs":
          if (!(sessionAttrs as ReadonlyArray<string>).includes(value.success)) {
            return fail(
              `target_session_attrs must be one of ${sessionAttrs.join(", ")}, got ${JSON.stringify(value.success)}`
            )
          }
          targetSessionAttrs = value.success as SessionAttrs
          break
        case "load_balance_hosts":
          if (value.success !== "disable" && value.success !== "random") {
            return fail(`load_balance_hosts must be disable or random, got ${JSON.stringify(value.success)}`)
          }
          loadBalanceHosts = value.success
          break
        case "connect_timeout": {
          const seconds = /^-?\d+$/.test(value.success) ? Number(value.success) : Number.NaN
          if (!Number.isInteger(seconds)) {
            return fail(`connect_timeout must be a whole number of seconds, got ${JSON.stringify(value.success)}`)
          }
          // libpq: zero or negative waits forever; the minimum is 2 seconds.
          connectTimeout = seconds <= 0 ? undefined : Duration.seconds(Math.max(2, seconds))
          break
        }
        default:
          parameters.push([key.success, value.success])
      }
    }
  }

  if (hostParam !== undefined) {
    specs.length = 0
    for (const host of hostParam) specs.push({ host: host || undefined, port: undefined })
  }
  if (portParam !== undefined) {
    const count = Math.max(specs.length, 1)
    if (portParam.length !== 1 && portParam.length !== count) {
      return fail(`the port parameter lists ${portParam.length} ports for ${count} hosts`)
    }
    if (specs.length === 0) specs.push({ host: undefined, port: undefined })
    for (let i = 0; i < specs.length; i++) {
      const value = portParam.length === 1 ? portParam[0]! : portParam[i]!
      if (value === "") continue
      const port = parsePort(value, `port ${i + 1} of the port parameter`, source)
      if (Result.isFailure(port)) return Result.fail(port.failure)
      specs[i]!.port = port.success
    }
  }
  if (specs.length === 0) specs.push({ host: undefined, port: undefined })
  for (const spec of specs) {
    if (spec.host?.startsWith("/")) {
      return fail("Unix-domain socket hosts are not supported here: give host and port, or the path option in code")
    }
  }
  return Result.succeed({
    hosts: specs.map((spec) => ({ host: spec.host ?? "localhost", port: spec.port ?? 5432 })),
    username,
    password,
    database,
    targetSessionAttrs,
    loadBalanceHosts,
    connectTimeout,
    parameters
  })
}

/**
 * The URL the driver reads for one host of a target: the same credentials,
 * database and driver parameters, that host alone.
 *
 * @since 0.1.0
 * @category parsing
 */
export const singleHostUrl = (target: Target, host: Host): Redacted.Redacted<string> => {
  const user = target.username === undefined ? "" : encodeURIComponent(target.username)
  const secret = target.password === undefined ? "" : `:${encodeURIComponent(Redacted.value(target.password))}`
  const credentials = user === "" && secret === "" ? "" : `${user}${secret}@`
  const hostPart = host.host.includes(":") ? `[${host.host}]` : encodeURIComponent(host.host)
  const database = target.database === undefined ? "" : encodeURIComponent(target.database)
  const query = target.parameters.map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value)}`)
  return Redacted.make(
    `postgres://${credentials}${hostPart}:${host.port}/${database}${query.length === 0 ? "" : `?${query.join("&")}`}`
  )
}

/**
 * The hosts in the order a connection attempt walks them: as listed, or
 * shuffled once per walk with `load_balance_hosts=random`.
 *
 * @since 0.1.0
 * @category parsing
 */
export const walkOrder = (target: Target, random: () => number = Math.random): ReadonlyArray<Host> => {
  if (target.loadBalanceHosts === "disable") return target.hosts
  const hosts = target.hosts.slice()
  for (let i = hosts.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[hosts[i], hosts[j]] = [hosts[j]!, hosts[i]!]
  }
  return hosts
}

/**
 * Whether a server in this role satisfies the target, as libpq decides it:
 * `primary`/`standby` ask whether the server is in recovery, `read-write` and
 * `read-only` whether it accepts writes (a primary with
 * `default_transaction_read_only` is read-only). `prefer-standby` accepts any
 * server here; the walk tries standbys first.
 *
 * @since 0.1.0
 * @category parsing
 */
export const accepts = (
  attrs: SessionAttrs,
  role: { readonly inRecovery: boolean; readonly readOnly: boolean }
): boolean => {
  switch (attrs) {
    case "any":
    case "prefer-standby":
      return true
    case "read-write":
      return !role.inRecovery && !role.readOnly
    case "read-only":
      return role.inRecovery || role.readOnly
    case "primary":
      return !role.inRecovery
    case "standby":
      return role.inRecovery
  }
}
