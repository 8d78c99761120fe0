import { assert, describe, it } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Eventually, PgCluster } from "@sturdy/testing"
import { Cause, Effect, Exit, Fiber, Redacted } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import { readFileSync } from "node:fs"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"

const client = (url: Redacted.Redacted<string>, applicationName = "pg-cluster-test") =>
  PgClient.make({ url, applicationName, maxConnections: 2, connectTimeout: "2 seconds" }).pipe(
    Effect.provide(Reactivity.layer)
  )

/** The SQLSTATE a failed statement reported. */
const sqlState = <A, E>(exit: Exit.Exit<A, E>) => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
  return (error as { reason?: { cause?: { code?: string } } }).reason?.cause?.code
}

const replication = (primary: PgClient.PgClient) =>
  primary<{ application_name: string; state: string; sync_state: string }>`
    SELECT application_name, state, sync_state FROM pg_stat_replication`

/** The standby's WAL receiver stopped (SIGSTOP) until the scope closes: nothing reaches the standby meanwhile. */
const freezeWalReceiver = (standby: PgClient.PgClient) =>
  Effect.gen(function* () {
    const [receiver] = yield* standby<{ pid: number }>`SELECT pid FROM pg_stat_wal_receiver`
    assert.isDefined(receiver, "the standby has a WAL receiver")
    yield* Effect.acquireRelease(
      Effect.sync(() => process.kill(receiver!.pid, "SIGSTOP")),
      () => Effect.sync(() => process.kill(receiver!.pid, "SIGCONT"))
    )
  })

/** Node 0 crashes, node 1 is promoted: the failover the later tests start from. */
const failover = (cluster: PgCluster.PgClusterService) =>
  Effect.gen(function* () {
    const [node0, node1] = cluster.nodes
    yield* node0.stop("immediate")
    assert.strictEqual(yield* node0.role, "down")
    yield* node1.promote
    assert.strictEqual(yield* node1.role, "primary")
  })

describe("PgCluster", () => {
  it.live(
    "starts a primary and a synchronous standby: writes replicate, the standby refuses them with 25006",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const cluster = yield* PgCluster.make()
          const [node0, node1] = cluster.nodes
          assert.deepStrictEqual([yield* node0.role, yield* node1.role], ["primary", "standby"])
          assert.strictEqual((yield* cluster.primary).name, node0.name)
          assert.strictEqual(
            Redacted.value(cluster.multiHostUrl),
            `postgres://${cluster.user}:${Redacted.value(cluster.password)}@127.0.0.1:${node0.port},127.0.0.1:${node1.port}/${cluster.database}`
          )
          assert.notInclude(String(cluster.multiHostUrl), Redacted.value(cluster.password))

          const primary = yield* client(node0.url)
          const standby = yield* client(node1.url)
          assert.deepStrictEqual(yield* replication(primary), [
            { application_name: node1.name, state: "streaming", sync_state: "sync" }
          ])
          assert.deepStrictEqual(
            yield* standby<{ on: string }>`SELECT current_setting('transaction_read_only') AS on`,
            [{ on: "on" }]
          )

          yield* primary`CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)`
          yield* primary`INSERT INTO notes VALUES (1, 'written on the primary')`
          // Until the table reaches the standby the query fails (42P01): a failure is checked again too.
          const replicated = yield* Eventually.until(
            standby<{ id: number; body: string }>`SELECT id, body FROM notes`,
            {
              what: "the row on the standby",
              accept: (rows) => rows.length > 0,
              timeout: "15 seconds"
            }
          )
          assert.deepStrictEqual(replicated, [{ id: 1, body: "written on the primary" }])

          const write = yield* Effect.exit(standby`INSERT INTO notes VALUES (2, 'written on the standby')`)
          assert.strictEqual(sqlState(write), "25006")
        })
      ),
    120_000
  )

  it.live(
    "synchronous: a commit waits for the standby's flush",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const cluster = yield* PgCluster.make()
          const [node0, node1] = cluster.nodes
          const primary = yield* client(node0.url)
          const observer = yield* client(node0.url, "observer")
          yield* primary`CREATE TABLE notes (id int PRIMARY KEY)`
          const writer = yield* client(node0.url, "waiting-writer")
          const commit = yield* Effect.scoped(
            Effect.gen(function* () {
              yield* freezeWalReceiver(yield* client(node1.url))
              const commit = yield* Effect.forkChild(writer`INSERT INTO notes VALUES (1)`)
              // The row is written locally, and the commit waits for a standby that cannot answer.
              yield* Eventually.until(
                observer<{ wait_event: string | null }>`
                  SELECT wait_event FROM pg_stat_activity WHERE application_name = 'waiting-writer'`,
                {
                  what: "the commit waiting for synchronous replication",
                  accept: (rows) => rows[0]?.wait_event === "SyncRep",
                  timeout: "15 seconds"
                }
              )
              assert.isUndefined(commit.pollUnsafe(), "the commit must not return before the standby has the row")
              return commit
            })
          )
          // The WAL receiver runs again: the standby flushes, the commit returns.
          yield* Fiber.join(commit)
          assert.deepStrictEqual(yield* primary<{ n: number }>`SELECT count(*)::int AS n FROM notes`, [{ n: 1 }])
        })
      ),
    120_000
  )

  it.live(
    "asynchronous: the standby streams with sync_state 'async' and a commit does not wait for it",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const cluster = yield* PgCluster.make({ synchronous: false })
          const [node0, node1] = cluster.nodes
          assert.isFalse(cluster.synchronous)
          const primary = yield* client(node0.url)
          const standby = yield* client(node1.url)
          assert.deepStrictEqual(yield* replication(primary), [
            { application_name: node1.name, state: "streaming", sync_state: "async" }
          ])
          yield* primary`CREATE TABLE notes (id int PRIMARY KEY)`
          yield* Effect.scoped(
            Effect.gen(function* () {
              yield* freezeWalReceiver(standby)
              const committed = yield* Effect.timeoutOption(primary`INSERT INTO notes VALUES (1)`, "10 seconds")
              assert.isTrue(committed._tag === "Some", "the commit returned while the standby was frozen")
            })
          )
          const replicated = yield* Eventually.until(standby<{ n: number }>`SELECT count(*)::int AS n FROM notes`, {
            what: "the row on the standby",
            accept: (rows) => rows[0]?.n === 1,
            timeout: "15 seconds"
          })
          assert.deepStrictEqual(replicated, [{ n: 1 }])
        })
      ),
    120_000
  )

  it.live(
    "unplanned failover: node 0 crashes, node 1 is promoted, takes writes and has every acknowledged row",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const cluster = yield* PgCluster.make()
          const [node0, node1] = cluster.nodes
          const acknowledged = yield* Effect.scoped(
            Effect.gen(function* () {
              const primary = yield* client(node0.url)
              yield* primary`CREATE TABLE ledger (id int PRIMARY KEY)`
              const ids: Array<number> = []
              for (let id = 1; id <= 50; id++) {
                yield* primary`INSERT INTO ledger VALUES (${id})`
                ids.push(id)
              }
              return ids
            })
          )
          yield* failover(cluster)
          assert.strictEqual((yield* cluster.primary).name, node1.name)

          const promoted = yield* client(node1.url)
          const present = yield* promoted<{ id: number }>`SELECT id FROM ledger ORDER BY id`
          assert.deepStrictEqual(
            present.map((row) => row.id),
            acknowledged
          )
          yield* promoted`INSERT INTO ledger VALUES (51)`
          assert.deepStrictEqual(yield* promoted<{ n: number }>`SELECT count(*)::int AS n FROM ledger`, [{ n: 51 }])

          // Promoting a primary is refused, and the message does not carry the password.
          const again = yield* Effect.exit(node1.promote)
          assert.isTrue(Exit.isFailure(again))
          const error = Exit.isFailure(again) ? Cause.squash(again.cause) : undefined
          assert.instanceOf(error, PgCluster.PgClusterError)
          assert.strictEqual((error as PgCluster.PgClusterError).operation, "promote")
          assert.include((error as PgCluster.PgClusterError).message, "not in standby mode")
          assert.notInclude((error as PgCluster.PgClusterError).message, Redacted.value(cluster.password))
        })
      ),
    120_000
  )

  it.live(
    "rejoin: the old primary becomes a synchronous standby of the new one, streams, and survives a failover back",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const cluster = yield* PgCluster.make()
          const [node0, node1] = cluster.nodes
          yield* node0.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
          yield* node0.execute("INSERT INTO notes VALUES (1, 'before the failover')")
          yield* failover(cluster)

          yield* node0.start
          const running = yield* Effect.exit(node0.rejoinAsStandby(node1))
          assert.include(String(Exit.isFailure(running) ? Cause.squash(running.cause) : ""), "stop it first")
          yield* node0.stop("fast")

          yield* node0.rejoinAsStandby(node1)
          assert.deepStrictEqual([yield* node0.role, yield* node1.role], ["standby", "primary"])
          const primary = yield* client(node1.url)
          assert.deepStrictEqual(yield* replication(primary), [
            { application_name: node0.name, state: "streaming", sync_state: "sync" }
          ])
          yield* cluster.waitForStreaming

          yield* primary`INSERT INTO notes VALUES (2, 'after the rejoin')`
          const standby = yield* client(node0.url)
          const replicated = yield* Eventually.until(
            standby<{ id: number; body: string }>`SELECT id, body FROM notes ORDER BY id`,
            { what: "the new row on the rejoined standby", accept: (rows) => rows.length === 2, timeout: "15 seconds" }
          )
          assert.deepStrictEqual(replicated, [
            { id: 1, body: "before the failover" },
            { id: 2, body: "after the rejoin" }
          ])

          // And back: node 1 crashes, node 0 is promoted with every row node 1 acknowledged.
          yield* primary`INSERT INTO notes VALUES (3, 'just before the second crash')`
          yield* node1.stop("immediate")
          yield* node0.promote
          assert.strictEqual((yield* cluster.primary).name, node0.name)
          const back = yield* client(node0.url, "after-second-failover")
          assert.deepStrictEqual(
            (yield* back<{ id: number }>`SELECT id FROM notes ORDER BY id`).map((row) => row.id),
            [1, 2, 3]
          )
          yield* back`INSERT INTO notes VALUES (4, 'on node 0 again')`
        })
      ),
    120_000
  )

  it.live(
    "closing the scope ends every server process and removes every directory, after a stop and a promotion too",
    () =>
      Effect.gen(function* () {
        const observed = yield* Effect.scoped(
          Effect.gen(function* () {
            const cluster = yield* PgCluster.make()
            const [node0, node1] = cluster.nodes
            const server = (node: PgCluster.Node) =>
              Effect.gen(function* () {
                const session = yield* client(node.url)
                const [row] = yield* session<{ dir: string; pid: string }>`
                  SELECT current_setting('data_directory') AS dir, pg_read_file('postmaster.pid') AS pid`
                return { dataDirectory: row!.dir, postmaster: Number.parseInt(row!.pid.split("\n")[0]!, 10) }
              })
            const first = yield* server(node0)
            const second = yield* server(node1)
            yield* failover(cluster)
            assert.isTrue(isAlive(second.postmaster), "node 1's postmaster runs until the scope closes")
            assert.isFalse(isAlive(first.postmaster), "node 0's postmaster stopped")
            const root = Path.dirname(Path.dirname(first.dataDirectory))
            assert.strictEqual(Path.dirname(Path.dirname(second.dataDirectory)), root)
            assert.isTrue(yield* exists(root))
            return { cluster, root, postmasters: [first.postmaster, second.postmaster] }
          })
        )
        assert.deepStrictEqual(
          observed.postmasters.map((pid) => isAlive(pid)),
          [false, false]
        )
        assert.isFalse(yield* exists(observed.root))
        assert.deepStrictEqual(yield* Effect.forEach(observed.cluster.nodes, (node) => node.role), ["down", "down"])
      }),
    120_000
  )
})

/** Whether a process runs; a zombie (exited, not yet reaped by whoever adopted it) does not. */
const isAlive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const state = stat.slice(stat.lastIndexOf(")") + 2)[0]
    return state !== "Z" && state !== "X"
  } catch {
    return false
  }
}

const exists = (path: string) =>
  Effect.promise(() =>
    Fs.stat(path).then(
      () => true,
      () => false
    )
  )
