import { assert, describe, it } from "@effect/vitest"
import { isReadOnly } from "../../src/internal/readOnly.ts"

const cases = [
  ["SELECT 1", true],
  ["  select id, title from notes where id = $1", true],
  ["(SELECT 1) UNION (SELECT 2)", true],
  ["WITH x AS (SELECT 1) SELECT * FROM x", true],
  ["VALUES (1), (2)", true],
  ["TABLE notes", true],
  ["SHOW statement_timeout", true],
  ["EXPLAIN SELECT 1", true],
  ["SELECT pg_sleep(1)", true],
  ["-- a comment\nSELECT 1", true],
  ["/* INSERT */ SELECT 'DELETE FROM x' AS text, \"update\" FROM t", true],
  ["SELECT $$ INSERT $$", true],
  ["SELECT $body$ DELETE $body$", true],
  ["SELECT update_count FROM stats", true],
  ["INSERT INTO notes (id) VALUES ($1)", false],
  ["UPDATE notes SET title = $1", false],
  ["DELETE FROM notes", false],
  ["MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", false],
  ["WITH moved AS (DELETE FROM a RETURNING *) SELECT * FROM moved", false],
  ["SELECT * INTO new_table FROM notes", false],
  ["SELECT * FROM notes FOR UPDATE", false],
  ["SELECT nextval('seq')", false],
  ["SELECT setval('seq', 1)", false],
  ["SELECT set_config('a.b', 'c', false)", false],
  ["SELECT pg_notify('c', 'p')", false],
  ["SELECT pg_terminate_backend(42)", false],
  ["EXPLAIN ANALYZE DELETE FROM notes", false],
  ["EXPLAIN ANALYZE SELECT 1", false],
  ["SELECT 1; DELETE FROM notes", false],
  ["CREATE TABLE t (id int)", false],
  ["CALL do_things()", false],
  ["COPY t FROM STDIN", false],
  ["", false]
] as const

describe("the read-only rule", () => {
  for (const [sql, expected] of cases) {
    it(`${JSON.stringify(sql)} is ${expected ? "read-only" : "treated as a write"}`, () => {
      assert.strictEqual(isReadOnly(sql), expected)
      // Cached answers are the same answers.
      assert.strictEqual(isReadOnly(sql), expected)
    })
  }
})
