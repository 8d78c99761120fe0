import { assert } from "@effect/vitest"
import { ResilientPg } from "@sturdy/pg"
import type { PgServer } from "@sturdy/testing"
import { Cause, Exit } from "effect"

let apps = 0
/** A unique application name, so each test can find (and kill) only its own backends. */
export const appName = () => `sturdy-test-${process.pid}-${++apps}`

/** Backoff fast enough for real-time tests. */
export const fast = { backoffBase: "20 millis", backoffJitter: "10 millis" } as const

/** The client under test, on the given server, with its own application name. */
export const resilient = (server: PgServer.PgServerService, options: Partial<ResilientPg.Options> = {}) => {
  const applicationName = options.applicationName ?? appName()
  return {
    applicationName,
    layer: ResilientPg.layer({ url: server.url, applicationName, ...options })
  }
}

/** The typed failure of an exit that must have failed. */
export const failureOf = <A, E>(exit: Exit.Exit<A, E>): unknown => {
  assert.isTrue(Exit.isFailure(exit), "expected the call to fail")
  if (Exit.isSuccess(exit)) return undefined
  const failure = exit.cause.reasons.find(Cause.isFailReason)
  assert.isDefined(failure, `expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return failure?.error
}
