import { assert, describe, it } from "@effect/vitest"
import { Transient } from "@sturdy/resilience"
import { Duration, Effect, Exit, Schema } from "effect"

// The module's table: each errno and the reason it maps to.
const mapped: ReadonlyArray<readonly [string, new (props: Transient.ReasonProps) => Transient.NetworkReason]> = [
  ["ETIMEDOUT", Transient.NetworkTimeout],
  ["ECONNRESET", Transient.ConnectionReset],
  ["ECONNABORTED", Transient.ConnectionReset],
  ["ENOTFOUND", Transient.HostNotFound],
  ["ECONNREFUSED", Transient.ConnectionRefused],
  ["EPIPE", Transient.BrokenPipe],
  ["EAI_AGAIN", Transient.DnsTemporaryFailure],
  ["EHOSTUNREACH", Transient.NetworkUnreachable],
  ["ENETUNREACH", Transient.NetworkUnreachable],
  ["ENETDOWN", Transient.NetworkUnreachable],
  ["EHOSTDOWN", Transient.NetworkUnreachable]
]

const phases: ReadonlyArray<Transient.Phase> = ["connect", "sent"]

describe("Transient.fromErrno", () => {
  for (const [code, Reason] of mapped) {
    for (const phase of phases) {
      it(`${code} in phase ${phase} is ${Reason.name}, with the code, phase, message and cause kept`, () => {
        const cause = new Error(`connect ${code} 10.0.0.1:5432`)
        const reason = Transient.fromErrno(code, { phase, message: `socket said ${code}`, cause })
        assert.instanceOf(reason, Reason)
        assert.instanceOf(reason, Error)
        assert.strictEqual(reason?._tag, Reason.name)
        assert.strictEqual(reason?.code, code)
        assert.strictEqual(reason?.phase, phase)
        assert.strictEqual(reason?.message, `socket said ${code}`)
        assert.strictEqual(reason?.cause, cause)
        assert.isTrue(reason?.isRetryable)
      })
    }
  }

  it("an errno that is not a transient network failure, or not an errno at all, is undefined", () => {
    const unknown = [
      "EADDRINUSE",
      "EACCES",
      "ENOENT",
      "EPROTO",
      "ERR_SSL_WRONG_VERSION_NUMBER",
      "57P03",
      "08006",
      "econnrefused",
      " ECONNREFUSED",
      "ECONNREFUSED ",
      "",
      // Names every object has: the lookup must not find Object.prototype's members.
      "toString",
      "constructor",
      "hasOwnProperty",
      "valueOf",
      "__proto__"
    ]
    for (const code of unknown) {
      for (const phase of phases) {
        assert.isUndefined(
          Transient.fromErrno(code, { phase, message: "m", cause: undefined }),
          `${JSON.stringify(code)} in phase ${phase}`
        )
      }
    }
  })

  it.effect("a reason is a tagged error: it fails an effect and is caught by its tag", () =>
    Effect.gen(function* () {
      const reason = Transient.fromErrno("ECONNREFUSED", { phase: "connect", message: "refused", cause: undefined })
      assert.isDefined(reason)
      const exit = yield* Effect.exit(Effect.fail(reason!))
      assert.deepStrictEqual(exit, Exit.fail(reason!))
      const caught = yield* Effect.fail(reason!).pipe(
        Effect.catchTag("ConnectionRefused", (error) => Effect.succeed(`caught ${error.code}`)),
        Effect.catchTag("ConnectionReset", () => Effect.succeed("wrong tag"))
      )
      assert.strictEqual(caught, "caught ECONNREFUSED")
    })
  )
})

describe("Transient.AttemptTimeout", () => {
  const cases = [
    ["connect", Duration.seconds(1), "The attempt did not finish within 1s (waiting for a connection)"],
    ["sent", Duration.seconds(1), "The attempt did not finish within 1s (running)"],
    ["connect", Duration.millis(1500), "The attempt did not finish within 1s 500ms (waiting for a connection)"],
    ["sent", Duration.millis(250), "The attempt did not finish within 250ms (running)"],
    ["sent", Duration.minutes(2), "The attempt did not finish within 2m (running)"]
  ] as const
  for (const [phase, timeout, message] of cases) {
    it(`in phase ${phase} after ${Duration.format(timeout)}: ${JSON.stringify(message)}`, () => {
      const error = new Transient.AttemptTimeout({ phase, timeout })
      assert.strictEqual(error.message, message)
      assert.strictEqual(String(error), `AttemptTimeout: ${message}`)
    })
  }

  it("is retryable in both phases, and no errno maps to it", () => {
    for (const phase of phases) {
      const error = new Transient.AttemptTimeout({ phase, timeout: Duration.seconds(10) })
      assert.isTrue(error.isRetryable)
      assert.strictEqual(error._tag, "AttemptTimeout")
    }
    for (const [code] of mapped) {
      assert.notInstanceOf(
        Transient.fromErrno(code, { phase: "sent", message: "m", cause: undefined }),
        Transient.AttemptTimeout
      )
    }
  })
})

describe("Transient.Phase", () => {
  it('is "connect" or "sent", nothing else', () => {
    const is = Schema.is(Transient.Phase)
    assert.deepStrictEqual(
      ["connect", "sent", "Connect", "send", "", undefined].map((value) => is(value)),
      [true, true, false, false, false, false]
    )
  })
})
