// Which statements Sturdy treats as read-only, and so may retry after the
// connection was lost with the statement in flight. Conservative on purpose:
// a false "read-only" could duplicate a write, a false "may write" only costs
// an OutcomeUnknown the caller can handle.
//
// Read-only: the first keyword is SELECT, VALUES, TABLE or SHOW (or WITH, or
// EXPLAIN without ANALYZE), and no keyword anywhere in the text writes or
// has a side effect a retry would repeat: INSERT, UPDATE (which also catches
// SELECT ... FOR UPDATE), DELETE, MERGE, INTO (SELECT INTO creates a table),
// and the built-in functions nextval, setval, set_config, pg_notify,
// pg_terminate_backend and pg_cancel_backend. Comments, string literals,
// quoted identifiers and dollar-quoted bodies are ignored.
//
// The hole no text rule can close: a SELECT calling a user-defined function
// that writes. Mark such calls with ResilientPg.notIdempotent.

const ignored = /--[^\n]*|\/\*[\s\S]*?\*\/|'(?:[^']|'')*'|"(?:[^"]|"")*"|\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?\$\1\$/g
const word = /[a-z_][a-z0-9_$]*/g

const readingFirstWords = new Set(["select", "values", "table", "show", "with", "explain"])
const writingWords = new Set([
  "insert",
  "update",
  "delete",
  "merge",
  "into",
  "nextval",
  "setval",
  "set_config",
  "pg_notify",
  "pg_terminate_backend",
  "pg_cancel_backend",
  "analyze",
  "analyse"
])

const cache = new Map<string, boolean>()
const cacheLimit = 1000

const compute = (sql: string): boolean => {
  const words = sql.replace(ignored, " ").toLowerCase().match(word)
  if (words === null || !readingFirstWords.has(words[0]!)) return false
  for (const w of words) {
    if (writingWords.has(w)) return false
  }
  return true
}

/** Whether a statement is read-only by the rule above. Only called on the failure path. */
export const isReadOnly = (sql: string): boolean => {
  let readOnly = cache.get(sql)
  if (readOnly === undefined) {
    readOnly = compute(sql)
    if (cache.size >= cacheLimit) cache.clear()
    cache.set(sql, readOnly)
  }
  return readOnly
}
