import { assert, describe, it } from "@effect/vitest"
import { RedisServer } from "@sturdy/testing"
import { Effect } from "effect"
import * as Fs from "node:fs/promises"
import * as Net from "node:net"

/**
 * Sends one inline command over a fresh socket and returns the first `lines` lines of the reply (RESP), or the
 * socket error's code.
 */
const command = (port: number, line: string, lines = 1) =>
  Effect.callback<ReadonlyArray<string>>((resume) => {
    const socket = Net.connect(port, "127.0.0.1")
    let reply = ""
    socket.once("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed([error.code ?? error.message])))
    socket.on("data", (chunk) => {
      reply += chunk.toString("utf8")
      const parts = reply.split("\r\n")
      if (parts.length > lines) {
        socket.destroy()
        resume(Effect.succeed(parts.slice(0, lines)))
      }
    })
    socket.once("connect", () => socket.write(`${line}\r\n`))
  })
const first = (port: number, line: string) => Effect.map(command(port, line), (reply) => reply[0])

describe("RedisServer", () => {
  it.live(
    "answers on loopback with no persistence; stop refuses connections, start comes back empty on the same port; the scope removes everything",
    () =>
      Effect.gen(function* () {
        let dir = ""
        yield* Effect.gen(function* () {
          const redis = yield* RedisServer.make()
          assert.strictEqual(redis.url, `redis://127.0.0.1:${redis.port}`)
          assert.strictEqual(yield* first(redis.port, "PING"), "+PONG")
          assert.strictEqual(yield* first(redis.port, "SET k v"), "+OK")
          assert.deepStrictEqual(yield* command(redis.port, "CONFIG GET save", 5), ["*2", "$4", "save", "$0", ""])
          assert.deepStrictEqual(yield* command(redis.port, "CONFIG GET appendonly", 5), [
            "*2",
            "$10",
            "appendonly",
            "$2",
            "no"
          ])
          assert.deepStrictEqual((yield* command(redis.port, "CONFIG GET bind", 5))[4], "127.0.0.1")
          dir = (yield* command(redis.port, "CONFIG GET dir", 5))[4]!
          assert.match(dir, /sturdy-redis-/)
          yield* redis.stop
          assert.isFalse(yield* redis.running)
          assert.strictEqual(yield* first(redis.port, "PING"), "ECONNREFUSED")
          yield* redis.start
          assert.isTrue(yield* redis.running)
          assert.strictEqual(yield* first(redis.port, "GET k"), "$-1")
        }).pipe(Effect.scoped)
        const exists = yield* Effect.promise(() =>
          Fs.access(dir).then(
            () => true,
            () => false
          )
        )
        assert.isFalse(exists, `${dir} was not removed`)
      }),
    30_000
  )

  it.effect("a missing binary fails with a message that says how to install it", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(RedisServer.make({ binary: "/nonexistent/redis-server" }))
      assert.strictEqual(error._tag, "RedisServerError")
      assert.strictEqual(error.operation, "configure")
      assert.include(error.message, "apt-get install -y redis-server")
    }).pipe(Effect.scoped)
  )
})
