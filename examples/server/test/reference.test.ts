import { assert, describe, it } from "@effect/vitest"
import { Admin, Alerts } from "@sturdy/admin"
import { PgFailure, ResilientPg } from "@sturdy/pg"
import { Profile } from "@sturdy/resilience"
import { type Config, ConfigProvider, Effect } from "effect"
import { readFileSync } from "node:fs"
import { blockIn, blocks, readmePath, unpadded } from "./reference.ts"

/** The names a `Config` reads, learned from a provider that records every lookup (`DATABASE_URL` answered). */
const namesRead = (config: Config.Config<unknown>) =>
  Effect.gen(function* () {
    const names = new Set<string>()
    const provider = ConfigProvider.make((path) => {
      names.add(path.join("."))
      return Effect.succeed(
        path.length === 1 && path[0] === "DATABASE_URL" ? ConfigProvider.makeValue("postgres://app@db/app") : undefined
      )
    })
    yield* Effect.ignore(config.parse(provider))
    return [...names].sort()
  })

const namesOf = (variables: ReadonlyArray<{ readonly name: string }>) => variables.map((v) => v.name).sort()

describe("reference tables: the docs are made from the code", () => {
  it.effect("every variable a Config reads is in its module's list, and nothing else", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* namesRead(Profile.config), namesOf(Profile.variables))
      assert.deepStrictEqual(yield* namesRead(ResilientPg.config), namesOf(ResilientPg.variables))
      assert.deepStrictEqual(yield* namesRead(Admin.config), namesOf(Admin.variables))
      assert.deepStrictEqual(yield* namesRead(Alerts.config), namesOf(Alerts.variables))
    })
  )

  it("PgFailure.reasons lists exactly the members of PgFailure.TransientReason", () => {
    const members = PgFailure.TransientReason.members.map(
      (member) => (member.fields._tag.ast as unknown as { readonly literal: string }).literal
    )
    assert.deepStrictEqual(PgFailure.reasons.map((r) => r.reason).sort(), [...members].sort())
  })

  const readme = readFileSync(readmePath, "utf8")
  for (const [name, render] of Object.entries(blocks)) {
    it(`README.md's ${name} table is the one the code makes (pnpm reference rewrites it)`, () => {
      assert.strictEqual(blockIn(readme, name), unpadded(render()))
    })
  }
})
