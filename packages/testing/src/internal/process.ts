/**
 * What the helpers that start a real server process share: a free loopback
 * port, and whether a binary can run.
 *
 * @internal
 */
import { Effect } from "effect"
import * as Fs from "node:fs/promises"
import * as Net from "node:net"

/** A port nothing listens on now, on `host`; fails with the listener's error message. */
export const freePort = (host: string): Effect.Effect<number, string> =>
  Effect.callback<number, string>((resume) => {
    const server = Net.createServer()
    server.once("error", (cause) => resume(Effect.fail(`no free port: ${cause.message}`)))
    server.listen(0, host, () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resume(Effect.succeed(port)))
    })
  })

/** Whether `file` exists and may be executed. */
export const isExecutable = (file: string): Promise<boolean> =>
  Fs.access(file, Fs.constants.X_OK).then(
    () => true,
    () => false
  )
