import { assert, describe, it } from "@effect/vitest"
import type { ResilientPg } from "@sturdy/pg"
import { Profile } from "@sturdy/resilience"
import { Duration, Redacted, Result } from "effect"
import {
  databaseKey,
  retryBudgetOf,
  statementTimeoutMillis,
  targetOf,
  validateOptions
} from "../../src/internal/options.ts"
import type * as Target from "../../src/Target.ts"

const secret = "s3cr3t-Passw0rd"

/** The RangeError's message, or a failure when the call does not throw one. */
const rangeError = (run: () => unknown): string => {
  try {
    run()
  } catch (error) {
    assert.instanceOf(error, RangeError)
    return (error as RangeError).message
  }
  return assert.fail("expected a RangeError")
}

describe("validateOptions", () => {
  it("no options: the development profile; profile: the named one, with the overrides applied", () => {
    assert.deepStrictEqual(validateOptions({}), Profile.development)
    assert.deepStrictEqual(validateOptions({ profile: "development" }), Profile.development)
    assert.deepStrictEqual(validateOptions({ profile: "production" }), Profile.production)
    const overridden = validateOptions({ profile: "production", retriesAfterFirst: 1, attemptTimeout: "2 seconds" })
    assert.deepStrictEqual(
      [overridden.retriesAfterFirst, Duration.toMillis(overridden.attemptTimeout), overridden.breakerFailures],
      [1, 2000, Profile.production.breakerFailures]
    )
  })

  it("accepts every value each checked option allows", () => {
    const valid: ReadonlyArray<ResilientPg.Options> = [
      { sentPhaseRetry: "safe" },
      { sentPhaseRetry: "always" },
      { whenCircuitOpen: "fail-fast" },
      { whenCircuitOpen: "wait-and-retry" },
      ...(["any", "read-write", "read-only", "primary", "standby", "prefer-standby"] as const).map(
        (targetSessionAttrs) => ({ targetSessionAttrs })
      ),
      { loadBalanceHosts: "disable" },
      { loadBalanceHosts: "random" },
      { hosts: [{ host: "db1" }] },
      { hosts: [{ host: "db1", port: 5433 }, { host: "db2" }] },
      { statementTimeoutVia: "transaction" },
      { statementTimeoutVia: "startup" },
      { statementStatsSize: 0 },
      { statementStatsSize: 10_000 }
    ]
    for (const options of valid) {
      assert.deepStrictEqual(validateOptions(options), Profile.development, JSON.stringify(options))
    }
  })

  const invalid: ReadonlyArray<readonly [ResilientPg.Options, string]> = [
    [{ profile: "qa" as never }, 'profile must be "development" or "production", got "qa"'],
    [{ profile: "" as never }, 'profile must be "development" or "production", got ""'],
    [{ profile: "Production" as never }, 'profile must be "development" or "production", got "Production"'],
    [{ sentPhaseRetry: "yes" as never }, 'sentPhaseRetry must be "safe" or "always", got "yes"'],
    [{ sentPhaseRetry: "never" as never }, 'sentPhaseRetry must be "safe" or "always", got "never"'],
    [{ whenCircuitOpen: "panic" as never }, 'whenCircuitOpen must be "fail-fast" or "wait-and-retry", got "panic"'],
    [{ whenCircuitOpen: "wait" as never }, 'whenCircuitOpen must be "fail-fast" or "wait-and-retry", got "wait"'],
    [
      { targetSessionAttrs: "writable" as never },
      'targetSessionAttrs must be one of any, read-write, read-only, primary, standby, prefer-standby, got "writable"'
    ],
    [
      { targetSessionAttrs: "read_write" as never },
      'targetSessionAttrs must be one of any, read-write, read-only, primary, standby, prefer-standby, got "read_write"'
    ],
    [{ loadBalanceHosts: "shuffle" as never }, 'loadBalanceHosts must be "disable" or "random", got "shuffle"'],
    [{ loadBalanceHosts: "enable" as never }, 'loadBalanceHosts must be "disable" or "random", got "enable"'],
    [{ hosts: [] }, "hosts must list at least one host"],
    [
      { statementTimeoutVia: "session" as never },
      'statementTimeoutVia must be "transaction" or "startup", got "session"'
    ],
    [{ statementStatsSize: -1 }, "statementStatsSize must be an integer >= 0, got -1"],
    [{ statementStatsSize: 1.5 }, "statementStatsSize must be an integer >= 0, got 1.5"],
    [{ statementStatsSize: Number.NaN }, "statementStatsSize must be an integer >= 0, got NaN"],
    [{ statementStatsSize: Number.POSITIVE_INFINITY }, "statementStatsSize must be an integer >= 0, got Infinity"]
  ]
  for (const [options, message] of invalid) {
    it(`throws a RangeError naming the option and the value: ${message}`, () => {
      assert.strictEqual(
        rangeError(() => validateOptions(options)),
        `ResilientPg.make: ${message}`
      )
    })
  }

  it("retryBudget: the defaults, the values given, undefined when false, a RangeError naming the option and value", () => {
    assert.deepStrictEqual(
      [retryBudgetOf({}), retryBudgetOf({ retryBudget: { ratio: 0.5 } }), retryBudgetOf({ retryBudget: false })],
      [{ ratio: 0.1, minRetriesPerSecond: 1 }, { ratio: 0.5, minRetriesPerSecond: 1 }, undefined]
    )
    assert.deepStrictEqual(
      [
        rangeError(() => retryBudgetOf({ retryBudget: { ratio: 2 } })),
        rangeError(() => retryBudgetOf({ retryBudget: { minRetriesPerSecond: -1 } })),
        rangeError(() => retryBudgetOf({ retryBudget: true as never }))
      ],
      [
        "ResilientPg.make: retryBudget.ratio must be a number in [0, 1], got 2",
        "ResilientPg.make: retryBudget.minRetriesPerSecond must be a finite number >= 0, got -1",
        "ResilientPg.make: retryBudget must be { ratio, minRetriesPerSecond } or false, got true"
      ]
    )
  })

  it("the profile's own checks name ResilientPg.make too", () => {
    assert.strictEqual(
      rangeError(() => validateOptions({ breakerFailures: 0 })),
      "ResilientPg.make: breakerFailures must be an integer >= 1, got 0"
    )
  })
})

describe("statementTimeoutMillis", () => {
  it("defaults to the profile's attempt timeout", () => {
    assert.strictEqual(statementTimeoutMillis({}, Profile.development), 10_000)
    assert.strictEqual(statementTimeoutMillis({}, Profile.production), 30_000)
    const profile = validateOptions({ attemptTimeout: "2500 millis" })
    assert.strictEqual(statementTimeoutMillis({}, profile), 2500)
  })

  it('"off" leaves the server alone: no timeout, whatever the profile', () => {
    assert.isUndefined(statementTimeoutMillis({ statementTimeout: "off" }, Profile.development))
    assert.isUndefined(statementTimeoutMillis({ statementTimeout: "off" }, Profile.production))
  })

  it("a duration given wins over the attempt timeout, in whole milliseconds rounded up", () => {
    const cases: ReadonlyArray<readonly [Duration.Input, number]> = [
      ["5 seconds", 5000],
      [1500, 1500],
      [Duration.minutes(2), 120_000],
      [Duration.micros(2500n), 3],
      [Duration.nanos(1n), 1],
      [0.25, 1],
      [Duration.millis(1000.0001), 1001]
    ]
    for (const [statementTimeout, millis] of cases) {
      assert.strictEqual(
        statementTimeoutMillis({ statementTimeout }, Profile.production),
        millis,
        `${String(statementTimeout)}`
      )
    }
  })

  it('anything but a positive finite duration or "off" throws a RangeError naming the value', () => {
    const cases: ReadonlyArray<readonly [Duration.Input, string]> = [
      [0, "0"],
      ["0 millis", "0"],
      ["-1 seconds", "-1s"],
      [Duration.infinity, "Infinity"]
    ]
    for (const [statementTimeout, shown] of cases) {
      assert.strictEqual(
        rangeError(() => statementTimeoutMillis({ statementTimeout }, Profile.development)),
        `ResilientPg.make: statementTimeout must be a positive finite duration or "off", got ${shown}`
      )
    }
  })
})

const success = (result: Result.Result<Target.Target, Target.InvalidUrl>): Target.Target => {
  assert.isTrue(Result.isSuccess(result), "expected a target")
  return (result as Result.Success<Target.Target, Target.InvalidUrl>).success
}

describe("targetOf", () => {
  it("no url and no host options: localhost:5432, libpq's defaults, nothing else", () => {
    assert.deepStrictEqual(success(targetOf({})), {
      hosts: [{ host: "localhost", port: 5432 }],
      username: undefined,
      password: undefined,
      database: undefined,
      targetSessionAttrs: "any",
      loadBalanceHosts: "disable",
      connectTimeout: undefined,
      parameters: []
    })
  })

  it("host and port in code, each defaulting alone; username and database in code", () => {
    assert.deepStrictEqual(success(targetOf({ host: "db.internal" })).hosts, [{ host: "db.internal", port: 5432 }])
    assert.deepStrictEqual(success(targetOf({ port: 6543 })).hosts, [{ host: "localhost", port: 6543 }])
    const target = success(targetOf({ host: "db", port: 6000, username: "app", database: "notes" }))
    assert.deepStrictEqual(
      [target.hosts, target.username, target.database],
      [[{ host: "db", port: 6000 }], "app", "notes"]
    )
  })

  it("the url alone: its hosts, credentials, database, attributes, connect timeout and driver parameters", () => {
    const target = success(
      targetOf({
        url: Redacted.make(
          `postgres://app:${secret}@h1:5433,h2/notes?target_session_attrs=primary&load_balance_hosts=random&connect_timeout=10&sslmode=require`
        )
      })
    )
    assert.deepStrictEqual(target.hosts, [
      { host: "h1", port: 5433 },
      { host: "h2", port: 5432 }
    ])
    assert.strictEqual(target.username, "app")
    assert.strictEqual(target.password === undefined ? undefined : Redacted.value(target.password), secret)
    assert.strictEqual(target.database, "notes")
    assert.strictEqual(target.targetSessionAttrs, "primary")
    assert.strictEqual(target.loadBalanceHosts, "random")
    assert.isTrue(target.connectTimeout !== undefined && Duration.equals(target.connectTimeout, Duration.seconds(10)))
    assert.deepStrictEqual(target.parameters, [["sslmode", "require"]])
  })

  it("options in code win over the url's: host, port, username, database, targetSessionAttrs, loadBalanceHosts", () => {
    const url = Redacted.make(
      `postgres://app:${secret}@h1:5433/notes?target_session_attrs=primary&load_balance_hosts=random`
    )
    const target = success(
      targetOf({
        url,
        host: "other",
        port: 6000,
        username: "admin",
        database: "audit",
        targetSessionAttrs: "standby",
        loadBalanceHosts: "disable"
      })
    )
    assert.deepStrictEqual(target.hosts, [{ host: "other", port: 6000 }])
    assert.deepStrictEqual(
      [target.username, target.database, target.targetSessionAttrs, target.loadBalanceHosts],
      ["admin", "audit", "standby", "disable"]
    )
    // The password is only ever the url's.
    assert.strictEqual(target.password === undefined ? undefined : Redacted.value(target.password), secret)
    // A host alone keeps the url's port, a port alone the url's host.
    assert.deepStrictEqual(success(targetOf({ url, host: "other" })).hosts, [{ host: "other", port: 5433 }])
    assert.deepStrictEqual(success(targetOf({ url, port: 6000 })).hosts, [{ host: "h1", port: 6000 }])
  })

  it("hosts in code replace the url's list and host/port, in order, each port defaulting to 5432", () => {
    const hosts = [{ host: "a" }, { host: "b", port: 6001 }, { host: "c", port: 5432 }]
    const expected = [
      { host: "a", port: 5432 },
      { host: "b", port: 6001 },
      { host: "c", port: 5432 }
    ]
    assert.deepStrictEqual(success(targetOf({ hosts })).hosts, expected)
    assert.deepStrictEqual(
      success(targetOf({ url: Redacted.make("postgres://u@h1:5433,h2:5434/d"), host: "x", port: 1, hosts })).hosts,
      expected
    )
  })

  it("a url that cannot be read is InvalidUrl, naming urlSource (url by default), never echoing the url", () => {
    const url = Redacted.make(`postgres://app:${secret}@h1:99999/notes`)
    for (const [urlSource, source] of [
      [undefined, "url"],
      ["DATABASE_URL", "DATABASE_URL"]
    ] as const) {
      const result = targetOf({ url, urlSource, host: "fine", hosts: [{ host: "fine" }] })
      assert.isTrue(Result.isFailure(result))
      const error = (result as Result.Failure<Target.Target, Target.InvalidUrl>).failure
      assert.strictEqual(error._tag, "InvalidUrl")
      assert.strictEqual(error.source, source)
      assert.strictEqual(
        error.message,
        `${source} is not a valid PostgreSQL connection URL: the port of host 1 is not a number from 1 to 65535`
      )
      assert.notInclude(error.message, secret)
    }
  })
})

describe("databaseKey", () => {
  const key = (options: ResilientPg.Options) => databaseKey(success(targetOf(options)))

  it("host:port of every host, then the database", () => {
    assert.strictEqual(key({ url: Redacted.make("postgres://u@h1:5433,h2/notes") }), "h1:5433,h2:5432/notes")
    assert.strictEqual(key({ hosts: [{ host: "a" }, { host: "b", port: 6000 }], database: "d" }), "a:5432,b:6000/d")
    assert.strictEqual(key({ host: "db", database: "notes" }), "db:5432/notes")
  })

  it("without a database: the user's name (PostgreSQL's default), from code or from the URL, else postgres", () => {
    assert.strictEqual(key({ host: "db", username: "app" }), "db:5432/app")
    assert.strictEqual(key({ url: Redacted.make("postgres://app@db/") }), "db:5432/app")
    assert.strictEqual(key({}), "localhost:5432/postgres")
  })

  it("an IPv6 host is bracketed, so its port stays readable", () => {
    assert.strictEqual(key({ url: Redacted.make("postgres://u@[::1]:5433/d") }), "[::1]:5433/d")
  })

  it("never holds the credentials", () => {
    const options: ResilientPg.Options = {
      url: Redacted.make(`postgres://app:${secret}@db.internal:5432/notes?password=${secret}x`),
      password: Redacted.make(`${secret}y`)
    }
    const built = key(options)
    assert.strictEqual(built, "db.internal:5432/notes")
    assert.notInclude(built, secret)
    assert.notInclude(built, "app")
  })
})
