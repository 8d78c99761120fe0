/**
 * The pool's socket factory: it counts the sockets (the only way to know how
 * many connections the pool holds), refuses every new one while the circuit
 * is open (the pool itself retries a failed connection for its waiters), and
 * sends each one to the host the router chose.
 *
 * @internal
 */
import type { Breaker } from "@sturdy/resilience"
import { Duration } from "effect"
import * as Net from "node:net"
import type * as Target from "../Target.ts"
import * as Router from "./router.ts"
import type { Sessions } from "./sessions.ts"

export class Sockets {
  /** Sockets open now. */
  open = 0
  /** Sockets opened since the client was built. */
  opened = 0
  /** Why a new connection is refused now, if it is: the breaker's rejection. */
  gate: () => Breaker.Rejection | undefined = () => undefined
  private readonly target: Target.Target
  private readonly router: Router.Router
  private readonly sessions: Sessions
  private readonly keepAliveMillis: number | undefined
  constructor(options: {
    readonly target: Target.Target
    readonly router: Router.Router
    readonly sessions: Sessions
    readonly keepAlive: Duration.Input | undefined
  }) {
    this.target = options.target
    this.router = options.router
    this.sessions = options.sessions
    this.keepAliveMillis =
      options.keepAlive === undefined ? undefined : Duration.toMillis(Duration.fromInputUnsafe(options.keepAlive))
  }
  readonly connect = (): Net.Socket => {
    const refused = this.gate()
    if (refused !== undefined) throw refused
    const host = this.router.current()
    if (host === undefined) throw Router.noMatchingHost(this.target)
    const socket = Net.connect({
      host: host.host,
      port: host.port,
      noDelay: true,
      ...(this.keepAliveMillis !== undefined && { keepAlive: true, keepAliveInitialDelay: this.keepAliveMillis })
    })
    this.sessions.mark(socket)
    this.open++
    this.opened++
    socket.once("close", () => this.open--)
    return socket
  }
}
