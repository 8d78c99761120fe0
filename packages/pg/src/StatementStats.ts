/**
 * Per-statement statistics: calls, errors, mean and p95 latency and the last
 * error, keyed by a normalized fingerprint of the SQL, in a table that keeps
 * the most recently used `maxEntries` fingerprints.
 *
 * **Details**
 *
 * The fingerprint removes what varies between calls of one statement:
 * literals become `?`, `$1`-style parameters become `?`, lists of them become
 * `(?, ...)`, comments go, whitespace collapses. `@effect/sql` already sends
 * parameters apart from the text, so most statements map to one fingerprint
 * without any rewriting; the fingerprint of a text is computed once and
 * cached.
 *
 * **Gotchas**
 *
 * The table holds fingerprints, never parameters. A statement built by
 * pasting values into its text (`sql.unsafe`) is still fingerprinted without
 * them. Only statements outside transactions are recorded (they are the ones
 * that go through the policies one by one). A call that failed before any
 * connection ran it (no connection could be opened, the breaker rejected it)
 * is recorded too: its text is learnt by handing the statement's builder a
 * connection that runs nothing. A rejection by the breaker counts as a call
 * and an error but is not timed (it never waited), so it does not drag the
 * statement's mean and p95 towards zero during an outage.
 *
 * @since 0.1.0
 */
import { DatabaseMetrics } from "@sturdy/resilience"

/**
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly fingerprint: string
  /** Every call, rejections by the breaker included. */
  readonly calls: number
  readonly errors: number
  /** Mean latency of the calls that ran or waited (all but rejections). */
  readonly meanMillis: number
  readonly p95Millis: number
  readonly maxMillis: number
  /** The reason of the last failure (`ConnectionReset`, `StatementTimeout`, `SqlSyntaxError`...), if any. */
  readonly lastErrorReason: string | undefined
}

const comments = /--[^\n]*|\/\*[\s\S]*?\*\//g
const literals = /'(?:[^']|'')*'|\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?\$\1\$|\b\d+(?:\.\d+)?\b|\$\d+/g
const lists = /\(\s*\?(?:\s*,\s*\?)+\s*\)/g
const maxFingerprintLength = 300

/**
 * The normalized form of a statement: literals and parameters removed.
 *
 * **Example** (Two calls, one fingerprint)
 *
 * ```ts
 * import { StatementStats } from "@sturdy/pg"
 *
 * StatementStats.fingerprint("SELECT * FROM notes WHERE id = $1 AND tag IN ('a', 'b')")
 * // => "SELECT * FROM notes WHERE id = ? AND tag IN (?, ...)"
 * ```
 *
 * @since 0.1.0
 * @category fingerprints
 */
export const fingerprint = (sql: string): string => {
  const normalized = sql
    .replace(comments, " ")
    .replace(literals, "?")
    .replace(lists, "(?, ...)")
    .replace(/\s+/g, " ")
    .trim()
  return normalized.length > maxFingerprintLength ? `${normalized.slice(0, maxFingerprintLength)}...` : normalized
}

class Stat {
  readonly fingerprint: string
  calls = 0
  /** Calls with a latency (all but rejections). */
  timed = 0
  errors = 0
  sum = 0
  lastErrorReason: string | undefined = undefined
  touched = 0
  readonly latency = new DatabaseMetrics.LatencyHistogram()
  constructor(fingerprint: string) {
    this.fingerprint = fingerprint
  }
}

/** How many recently recorded texts `Table` keeps beside their entries, by length (a power of two). */
const recentSlots = 64

/**
 * The bounded table. `record` is called on the client's hot path: a
 * recently seen text finds its entry without being hashed (below), then a
 * few field updates, and a move to the recent end only once in a while (the
 * order is approximately least recently used).
 *
 * @since 0.1.0
 * @category models
 */
export class Table {
  readonly maxEntries: number
  private readonly entries = new Map<string, Stat>()
  private readonly fingerprints = new Map<string, string>()
  /**
   * The last text recorded at each length (modulo `recentSlots`) and its
   * entry. `@effect/sql` compiles a parameterized statement into a new
   * string on every call, which a `Map` would hash (and flatten) each time;
   * comparing it with the last text of the same length costs a comparison
   * of characters, and stops at the first that differs.
   */
  private readonly recentSql: Array<string | undefined> = Array.from({ length: recentSlots }, () => undefined)
  private readonly recentStat: Array<Stat | undefined> = Array.from({ length: recentSlots }, () => undefined)
  private tick = 0

  constructor(maxEntries: number) {
    if (!Number.isInteger(maxEntries) || maxEntries < 0) {
      throw new RangeError(`StatementStats.Table: maxEntries must be an integer >= 0, got ${maxEntries}`)
    }
    this.maxEntries = maxEntries
  }

  /** `millis` undefined: a call that never waited (rejected by the breaker), counted but not timed. */
  record(sql: string | undefined, millis: number | undefined, errorReason: string | undefined): void {
    if (sql === undefined || this.maxEntries === 0) return
    const tick = ++this.tick
    const slot = sql.length & (recentSlots - 1)
    let stat = this.recentSql[slot] === sql ? this.recentStat[slot] : undefined
    if (stat === undefined) {
      stat = this.entryOf(sql, tick)
      this.recentSql[slot] = sql
      this.recentStat[slot] = stat
    } else if (tick - stat.touched > this.maxEntries / 4) {
      this.entries.delete(stat.fingerprint)
      this.entries.set(stat.fingerprint, stat)
      stat.touched = tick
    }
    stat.calls++
    this.update(stat, millis, errorReason)
  }

  /** The entry of a text, by its fingerprint: found (and moved to the recent end if due), or added. */
  private entryOf(sql: string, tick: number): Stat {
    let key = this.fingerprints.get(sql)
    if (key === undefined) {
      key = fingerprint(sql)
      if (this.fingerprints.size >= this.maxEntries * 4) this.fingerprints.clear()
      this.fingerprints.set(sql, key)
    }
    let stat = this.entries.get(key)
    if (stat === undefined) {
      stat = new Stat(key)
      this.entries.set(key, stat)
      if (this.entries.size > this.maxEntries) {
        // Maps iterate in insertion order: the first key is the least recently moved.
        this.entries.delete(this.entries.keys().next().value!)
        // The evicted entry may be one of the recent texts'.
        this.recentSql.fill(undefined)
        this.recentStat.fill(undefined)
      }
    } else if (tick - stat.touched > this.maxEntries / 4) {
      this.entries.delete(key)
      this.entries.set(key, stat)
    } else {
      return stat
    }
    stat.touched = tick
    return stat
  }

  private update(stat: Stat, millis: number | undefined, errorReason: string | undefined) {
    if (millis !== undefined) {
      stat.timed++
      stat.sum += millis
      stat.latency.record(millis)
    }
    if (errorReason !== undefined) {
      stat.errors++
      stat.lastErrorReason = errorReason
    }
  }

  /** Every entry, the most time-consuming first. */
  snapshot(): ReadonlyArray<Entry> {
    return [...this.entries.values()]
      .sort((a, b) => b.sum - a.sum)
      .map((stat) => ({
        fingerprint: stat.fingerprint,
        calls: stat.calls,
        errors: stat.errors,
        meanMillis: stat.timed === 0 ? 0 : stat.sum / stat.timed,
        p95Millis: stat.latency.quantile(0.95),
        maxMillis: stat.latency.max,
        lastErrorReason: stat.lastErrorReason
      }))
  }

  get size(): number {
    return this.entries.size
  }
}
