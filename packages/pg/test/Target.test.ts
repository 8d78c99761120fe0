import { assert, describe, it } from "@effect/vitest"
import { Target } from "@sturdy/pg"
import { Duration, Redacted, Result } from "effect"

const secret = "s3cr3t/p@ss:w0rd9"
const encoded = encodeURIComponent(secret)

interface Good {
  readonly url: string
  readonly hosts: ReadonlyArray<readonly [string, number]>
  readonly database?: string
  readonly username?: string
  readonly password?: string
  readonly targetSessionAttrs?: Target.SessionAttrs
  readonly loadBalanceHosts?: "disable" | "random"
  readonly connectTimeoutSeconds?: number
  readonly parameters?: ReadonlyArray<readonly [string, string]>
}

const good = [
  { url: "postgres://db.internal/app", hosts: [["db.internal", 5432]], database: "app" },
  { url: "postgresql://u@h:6543/d", hosts: [["h", 6543]], database: "d", username: "u" },
  {
    url: `postgres://app:${encoded}@h1:5432,h2:5433/app?target_session_attrs=read-write`,
    hosts: [
      ["h1", 5432],
      ["h2", 5433]
    ],
    database: "app",
    username: "app",
    password: secret,
    targetSessionAttrs: "read-write"
  },
  {
    url: "postgres://u:p@h1,h2:5433,h3/db",
    hosts: [
      ["h1", 5432],
      ["h2", 5433],
      ["h3", 5432]
    ],
    database: "db",
    username: "u",
    password: "p"
  },
  {
    url: "postgres://u:p@[::1]:5433,[fe80::1%25eth0]/db",
    hosts: [
      ["::1", 5433],
      ["fe80::1%eth0", 5432]
    ],
    database: "db",
    username: "u",
    password: "p"
  },
  {
    url: "postgres:///db?host=a,b&port=5432,5433&target_session_attrs=standby&load_balance_hosts=random",
    hosts: [
      ["a", 5432],
      ["b", 5433]
    ],
    database: "db",
    targetSessionAttrs: "standby",
    loadBalanceHosts: "random"
  },
  {
    url: "postgres://ignored:1/db?host=a,b&port=6000",
    hosts: [
      ["a", 6000],
      ["b", 6000]
    ],
    database: "db"
  },
  {
    url: "postgres://h/my%20db?user=al%40ice&password=x%26y&application_name=api&sslmode=disable&connect_timeout=1",
    hosts: [["h", 5432]],
    database: "my db",
    username: "al@ice",
    password: "x&y",
    connectTimeoutSeconds: 2,
    parameters: [
      ["application_name", "api"],
      ["sslmode", "disable"]
    ]
  },
  { url: "postgres://", hosts: [["localhost", 5432]] },
  {
    url: "POSTGRES://h?target_session_attrs=prefer-standby",
    hosts: [["h", 5432]],
    targetSessionAttrs: "prefer-standby"
  }
] as const satisfies ReadonlyArray<Good>

const bad = [
  ["not a url", "must start with postgres:// or postgresql://"],
  [`mysql://app:${secret}@db:3306/app`, "must start with postgres://"],
  ["postgres://%%%", "the host has an invalid percent-encoding"],
  // The unencoded "/" in the password ends the authority, as in libpq: what follows must not be echoed.
  [`postgres://app:${secret}@db:notaport/app`, "the port of host 1 is not a number from 1 to 65535"],
  [`postgres://app:${encoded}@db:70000/app`, "the port of host 1 is not a number"],
  [`postgres://app:${encoded}@h1,h2:0/app`, "the port of host 2 is not a number"],
  [`postgres://app:${encoded}@/app?host=a&port=x`, "port 1 of the port parameter is not a number"],
  [`postgres://app:${encoded}@[::1/app`, "missing its closing ]"],
  [`postgres://app:${encoded}@[::1]x/app`, "unexpected characters after an IPv6 address"],
  [`postgres://app:%zz@h/app`, "the password has an invalid percent-encoding"],
  [`postgres://app:${encoded}@h/a%zzb`, "the database name has an invalid percent-encoding"],
  [`postgres://app:${encoded}@h/app?target_session_attrs=writable`, "target_session_attrs must be one of"],
  [`postgres://app:${encoded}@h/app?load_balance_hosts=yes`, "load_balance_hosts must be disable or random"],
  [`postgres://app:${encoded}@h/app?connect_timeout=soon`, "connect_timeout must be a whole number"],
  [`postgres://app:${encoded}@/app?host=a,b,c&port=1,2`, "lists 2 ports for 3 hosts"],
  [`postgres://app:${encoded}@%2Fvar%2Frun%2Fpostgresql/app`, "Unix-domain socket hosts are not supported"]
] as const

describe("Target.parse", () => {
  for (const c of good as ReadonlyArray<Good>) {
    it(`reads ${c.url.replace(encoded, "…")}`, () => {
      const parsed = Target.parse(c.url, "url")
      assert.isTrue(Result.isSuccess(parsed), Result.isFailure(parsed) ? parsed.failure.message : "")
      if (Result.isFailure(parsed)) return
      const target = parsed.success
      assert.deepStrictEqual(
        target.hosts.map((h) => [h.host, h.port]),
        c.hosts.map(([host, port]) => [host, port])
      )
      assert.strictEqual(target.database, c.database)
      assert.strictEqual(target.username, c.username)
      assert.strictEqual(target.password === undefined ? undefined : Redacted.value(target.password), c.password)
      assert.strictEqual(target.targetSessionAttrs, c.targetSessionAttrs ?? "any")
      assert.strictEqual(target.loadBalanceHosts, c.loadBalanceHosts ?? "disable")
      assert.strictEqual(
        target.connectTimeout === undefined ? undefined : Duration.toSeconds(target.connectTimeout),
        c.connectTimeoutSeconds
      )
      assert.deepStrictEqual(target.parameters, c.parameters ?? [])
    })
  }

  for (const [url, problem] of bad) {
    for (const source of ["DATABASE_URL", "url"]) {
      it(`${source}=${JSON.stringify(url.replace(secret, "…").replace(encoded, "…"))}: an InvalidUrl naming ${source}, without the URL`, () => {
        const parsed = Target.parse(url, source)
        assert.isTrue(Result.isFailure(parsed))
        if (Result.isSuccess(parsed)) return
        assert.strictEqual(parsed.failure._tag, "InvalidUrl")
        assert.strictEqual(parsed.failure.source, source)
        assert.include(parsed.failure.message, `${source} is not a valid PostgreSQL connection URL`)
        assert.include(parsed.failure.message, problem)
        assert.notInclude(parsed.failure.message, secret)
        assert.notInclude(parsed.failure.message, encoded)
        for (const fragment of secret.split(/[/@:]/).filter((f) => f.length >= 4))
          assert.notInclude(parsed.failure.message, fragment)
      })
    }
  }

  it("singleHostUrl gives the driver one host with the same credentials, database and driver parameters", () => {
    const parsed = Target.parse(
      `postgres://app:${encoded}@h1:5432,[::1]:5433/my%20db?application_name=api&target_session_attrs=primary`,
      "url"
    )
    assert.isTrue(Result.isSuccess(parsed))
    if (Result.isFailure(parsed)) return
    const url = new URL(Redacted.value(Target.singleHostUrl(parsed.success, parsed.success.hosts[1]!)))
    assert.deepStrictEqual(
      [url.hostname, url.port, decodeURIComponent(url.username), decodeURIComponent(url.password), url.pathname],
      ["[::1]", "5433", "app", secret, "/my%20db"]
    )
    assert.deepStrictEqual([...url.searchParams], [["application_name", "api"]])
  })

  it("walkOrder keeps the list, or shuffles it with load_balance_hosts=random", () => {
    const parsed = Target.parse("postgres://a,b,c/db?load_balance_hosts=random", "url")
    assert.isTrue(Result.isSuccess(parsed))
    if (Result.isFailure(parsed)) return
    const names = (random: () => number) => Target.walkOrder(parsed.success, random).map((h) => h.host)
    assert.deepStrictEqual(
      names(() => 0.99),
      ["a", "b", "c"]
    )
    assert.deepStrictEqual(
      names(() => 0),
      ["b", "c", "a"]
    )
    const ordered = Target.parse("postgres://a,b,c/db", "url")
    if (Result.isSuccess(ordered))
      assert.deepStrictEqual(
        Target.walkOrder(ordered.success, () => 0).map((h) => h.host),
        ["a", "b", "c"]
      )
  })

  it("accepts: libpq's rules for each target_session_attrs value", () => {
    const primary = { inRecovery: false, readOnly: false }
    const readOnlyPrimary = { inRecovery: false, readOnly: true }
    const standby = { inRecovery: true, readOnly: true }
    const table: ReadonlyArray<readonly [Target.SessionAttrs, boolean, boolean, boolean]> = [
      // attrs, primary, read-only primary, standby
      ["any", true, true, true],
      ["read-write", true, false, false],
      ["read-only", false, true, true],
      ["primary", true, true, false],
      ["standby", false, false, true],
      ["prefer-standby", true, true, true]
    ]
    for (const [attrs, p, r, s] of table) {
      assert.deepStrictEqual(
        [Target.accepts(attrs, primary), Target.accepts(attrs, readOnlyPrimary), Target.accepts(attrs, standby)],
        [p, r, s],
        attrs
      )
    }
  })
})
