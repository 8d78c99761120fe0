import type * as PgConnection from "@effect/sql-pg/PgConnection"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { ConnectionError, SqlError } from "effect/sql/SqlError"
import * as Router from "../../src/internal/router.ts"
import type * as Target from "../../src/Target.ts"

// What each fake server is: down (connecting fails), a role, or a server whose role query fails.
type Server = "down" | "role query fails" | { readonly inRecovery: boolean; readonly readOnly: boolean }

const primary: Server = { inRecovery: false, readOnly: false }
const readOnlyPrimary: Server = { inRecovery: false, readOnly: true }
const standby: Server = { inRecovery: true, readOnly: true }

const target = (hosts: ReadonlyArray<string>, targetSessionAttrs: Target.SessionAttrs = "any"): Target.Target => ({
  hosts: hosts.map((host) => ({ host, port: 5432 })),
  username: "app",
  password: undefined,
  database: "app",
  targetSessionAttrs,
  loadBalanceHosts: "disable",
  connectTimeout: undefined,
  parameters: []
})

const refused = (host: string) =>
  new SqlError({
    reason: new ConnectionError({
      cause: Object.assign(new Error(`connect ECONNREFUSED ${host}:5432`), { code: "ECONNREFUSED" }),
      message: `refused by ${host}`,
      operation: "connect"
    })
  })

/**
 * A router over fake servers (mutable, so a role can change), recording every session opened and closed,
 * every query and every move.
 */
const fake = (servers: Record<string, Server>, attrs: Target.SessionAttrs = "any") => {
  const events: Array<string> = []
  const moves: Array<string> = []
  const connect = (host: Target.Host) =>
    Effect.gen(function* () {
      const server = servers[host.host]!
      if (server === "down") return yield* Effect.fail(refused(host.host))
      events.push(`open ${host.host}`)
      yield* Effect.addFinalizer(() => Effect.sync(() => events.push(`close ${host.host}`)))
      const connection = {
        host: host.host,
        query: (sql: string) =>
          Effect.suspend(() => {
            events.push(`query ${host.host}: ${sql.startsWith("SELECT pg_is_in_recovery()") ? "role" : sql}`)
            const now = servers[host.host]!
            if (now === "down" || now === "role query fails") return Effect.fail(refused(host.host))
            return Effect.succeed({
              rows: [{ in_recovery: now.inRecovery, read_only: now.readOnly }]
            })
          })
      }
      return connection as unknown as PgConnection.PgConnection
    })
  const router = Router.make({
    target: target(Object.keys(servers), attrs),
    connect,
    moved: (from, to) => moves.push(`${from.host} -> ${to.host}`)
  })
  return { router, events, moves, servers }
}

const hostOf = (connection: PgConnection.PgConnection) => (connection as unknown as { readonly host: string }).host

/** Discovers in a scope of its own: the chosen session's host, and the scope that holds the session. */
const discover = (router: Router.Router) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const exit = yield* Effect.exit(Scope.provide(router.discover, scope))
    return { exit, host: Exit.isSuccess(exit) ? hostOf(exit.value) : undefined, scope }
  })

/** The error a failed walk ends with: the ConnectionError's message, and its cause's message and code. */
const failureOf = (exit: Exit.Exit<unknown, SqlError>) => {
  assert.isTrue(Exit.isFailure(exit), "expected the walk to fail")
  const error = Exit.isFailure(exit) ? Exit.findErrorOption(exit) : undefined
  assert.isTrue(error?._tag === "Some")
  const reason = error?._tag === "Some" ? error.value.reason : undefined
  assert.instanceOf(reason, ConnectionError)
  const cause = (reason as ConnectionError).cause as Error & { readonly code?: string }
  return { message: (reason as ConnectionError).message, cause: cause.message, code: cause.code }
}

describe("noMatchingHost", () => {
  it("is an Error with the router's code, saying how many hosts there are and what the target wants", () => {
    const cases = [
      [target(["h1"], "standby"), "no host of 1 is of the kind target_session_attrs=standby wants yet"],
      [
        target(["h1", "h2", "h3"], "read-write"),
        "no host of 3 is of the kind target_session_attrs=read-write wants yet"
      ]
    ] as const
    for (const [t, message] of cases) {
      const error = Router.noMatchingHost(t)
      assert.instanceOf(error, Error)
      assert.strictEqual(error.message, message)
      assert.strictEqual((error as Error & { readonly code?: string }).code, "STURDY_NO_MATCHING_HOST")
    }
    assert.strictEqual(Router.noMatchingHostCode, "STURDY_NO_MATCHING_HOST")
  })
})

describe("Router.make", () => {
  it("routed only with several hosts or a target that wants a kind of server; current is the first host until a walk", () => {
    const cases = [
      [["h1"], "any", false],
      [["h1", "h2"], "any", true],
      [["h1"], "read-write", true],
      [["h1"], "prefer-standby", true]
    ] as const
    for (const [hosts, attrs, routed] of cases) {
      const { router } = fake(Object.fromEntries(hosts.map((host) => [host, primary])), attrs)
      assert.strictEqual(router.routed, routed, `${hosts.join(",")} ${attrs}`)
      assert.deepStrictEqual(router.current(), { host: "h1", port: 5432 })
    }
  })

  it.effect("any: walks past a host that refuses to the next, settles there and tells who moved, once", () =>
    Effect.gen(function* () {
      const { router, events, moves } = fake({ h1: "down", h2: primary, h3: primary })
      const first = yield* discover(router)
      assert.strictEqual(first.host, "h2")
      assert.deepStrictEqual(router.current(), { host: "h2", port: 5432 })
      // "any" asks no role: the session is accepted as it opens.
      assert.deepStrictEqual(events, ["open h2"])
      assert.deepStrictEqual(moves, ["h1 -> h2"])
      // The session lives in the caller's scope.
      yield* Scope.close(first.scope, Exit.void)
      assert.deepStrictEqual(events, ["open h2", "close h2"])
      const second = yield* discover(router)
      assert.strictEqual(second.host, "h2")
      assert.deepStrictEqual(moves, ["h1 -> h2"], "settling on the same host again is no move")
    })
  )

  it.effect("the first host satisfies the target: no move", () =>
    Effect.gen(function* () {
      const { router, moves } = fake({ h1: primary, h2: standby }, "read-write")
      assert.strictEqual((yield* discover(router)).host, "h1")
      assert.deepStrictEqual(moves, [])
    })
  )

  const byRole = [
    ["read-write", { h1: standby, h2: readOnlyPrimary, h3: primary }, "h3"],
    ["primary", { h1: standby, h2: readOnlyPrimary, h3: primary }, "h2"],
    ["read-only", { h1: primary, h2: readOnlyPrimary, h3: standby }, "h2"],
    ["standby", { h1: primary, h2: readOnlyPrimary, h3: standby }, "h3"],
    ["prefer-standby", { h1: primary, h2: standby, h3: standby }, "h2"]
  ] as const
  for (const [attrs, servers, chosen] of byRole) {
    it.effect(`${attrs}: the first host of the kind wanted, closing the sessions it turned down`, () =>
      Effect.gen(function* () {
        const { router, events } = fake(servers, attrs)
        const { host } = yield* discover(router)
        assert.strictEqual(host, chosen)
        const turnedDown = Object.keys(servers).slice(0, Object.keys(servers).indexOf(chosen))
        assert.deepStrictEqual(events, [
          ...turnedDown.flatMap((h) => [`open ${h}`, `query ${h}: role`, `close ${h}`]),
          `open ${chosen}`,
          `query ${chosen}: role`
        ])
      })
    )
  }

  it.effect("prefer-standby without a standby: a second pass takes the first server that answers", () =>
    Effect.gen(function* () {
      const { router, events } = fake({ h1: "down", h2: primary, h3: readOnlyPrimary }, "prefer-standby")
      assert.strictEqual((yield* discover(router)).host, "h2")
      assert.deepStrictEqual(events, [
        "open h2",
        "query h2: role",
        "close h2",
        "open h3",
        "query h3: role",
        "close h3",
        "open h2",
        "query h2: role"
      ])
    })
  )

  it.effect(
    "hosts answer but none is of the kind wanted: a typed connect failure; current is none until a walk finds one",
    () =>
      Effect.gen(function* () {
        const { router, events, servers } = fake({ h1: primary, h2: readOnlyPrimary }, "standby")
        const { exit } = yield* discover(router)
        assert.deepStrictEqual(failureOf(exit), {
          message: "Sturdy: no host satisfies target_session_attrs",
          cause: "2 of the 2 hosts answered, none of the kind wanted (target_session_attrs=standby)",
          code: Router.noMatchingHostCode
        })
        assert.isUndefined(router.current())
        assert.deepStrictEqual(events, [
          "open h1",
          "query h1: role",
          "close h1",
          "open h2",
          "query h2: role",
          "close h2"
        ])
        // h2 is promoted... to a standby: the next walk finds it.
        servers.h2 = standby
        assert.strictEqual((yield* discover(router)).host, "h2")
        assert.deepStrictEqual(router.current(), { host: "h2", port: 5432 })
      })
  )

  it.effect("a host of the wrong kind and a host that refuses: the mismatch, not the refusal", () =>
    Effect.gen(function* () {
      const { router } = fake({ h1: primary, h2: "down" }, "standby")
      const failure = failureOf((yield* discover(router)).exit)
      assert.strictEqual(failure.message, "Sturdy: no host satisfies target_session_attrs")
      assert.strictEqual(failure.code, Router.noMatchingHostCode)
      assert.strictEqual(
        failure.cause,
        "1 of the 2 hosts answered, none of the kind wanted, the others did not answer (target_session_attrs=standby)"
      )
      assert.isUndefined(router.current())
    })
  )

  it.effect("no host answers: the last host's own failure, and current is none", () =>
    Effect.gen(function* () {
      const { router } = fake({ h1: "down", h2: "role query fails" }, "read-write")
      const { exit } = yield* discover(router)
      assert.deepStrictEqual(failureOf(exit), {
        message: "refused by h2",
        cause: "connect ECONNREFUSED h2:5432",
        code: "ECONNREFUSED"
      })
      assert.isUndefined(router.current())
    })
  )

  it.effect("a single host with target any is not routed: a failed walk leaves current on it", () =>
    Effect.gen(function* () {
      const { router } = fake({ h1: "down" })
      const { exit } = yield* discover(router)
      assert.strictEqual(failureOf(exit).message, "refused by h1")
      assert.deepStrictEqual(router.current(), { host: "h1", port: 5432 })
    })
  )
})

describe("Router.verify", () => {
  it.effect("any: a plain round trip, no role asked", () =>
    Effect.gen(function* () {
      const { router, events } = fake({ h1: primary })
      const { exit } = yield* discover(router)
      assert.isTrue(Exit.isSuccess(exit))
      if (Exit.isSuccess(exit)) yield* router.verify(exit.value)
      assert.deepStrictEqual(events, ["open h1", "query h1: SELECT 1"])
    })
  )

  it.effect("fails when the session's server is no longer of the kind wanted (a role change), naming the host", () =>
    Effect.gen(function* () {
      const { router, servers } = fake({ h1: standby, h2: primary }, "read-write")
      const { exit } = yield* discover(router)
      assert.isTrue(Exit.isSuccess(exit))
      if (Exit.isFailure(exit)) return
      assert.isTrue(Exit.isSuccess(yield* Effect.exit(router.verify(exit.value))))
      servers.h2 = standby
      assert.deepStrictEqual(failureOf(yield* Effect.exit(router.verify(exit.value))), {
        message: "Sturdy: no host satisfies target_session_attrs",
        cause: "h2:5432 is no longer of the kind wanted (target_session_attrs=read-write)",
        code: Router.noMatchingHostCode
      })
    })
  )

  it.effect("prefer-standby accepts the session whatever its server became", () =>
    Effect.gen(function* () {
      const { router, servers } = fake({ h1: standby }, "prefer-standby")
      const { exit } = yield* discover(router)
      if (Exit.isFailure(exit)) return assert.fail("expected a session")
      servers.h1 = primary
      assert.isTrue(Exit.isSuccess(yield* Effect.exit(router.verify(exit.value))))
    })
  )
})
