/**
 * The README's reference tables, made from the lists in the code: the
 * environment variables each module reads, the metrics, the admin routes, the
 * alerts and the error reasons. `reference.test.ts` fails when the README's
 * generated blocks differ from these; `pnpm reference` rewrites them.
 */
import { Admin, Alerts } from "@sturdy/admin"
import { PgFailure, ResilientPg } from "@sturdy/pg"
import { DatabaseMetrics } from "@sturdy/resilience"
import { readFileSync, writeFileSync } from "node:fs"

export const readmePath = new URL("../../../README.md", import.meta.url)

const cell = (text: string | undefined) => (text === undefined ? "" : text.replaceAll("|", "\\|"))

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string =>
  [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((row) => `| ${row.map(cell).join(" | ")} |`)
  ].join("\n")

/** Every variable, once, in the order the modules list them. */
export const variables = (): ReadonlyArray<(typeof ResilientPg.variables)[number]> => {
  const seen = new Map<string, (typeof ResilientPg.variables)[number]>()
  for (const variable of [...ResilientPg.variables, ...Admin.variables, ...Alerts.variables]) {
    if (!seen.has(variable.name)) seen.set(variable.name, variable)
  }
  return [...seen.values()]
}

export const blocks: Record<string, () => string> = {
  configuration: () =>
    table(
      ["variable", "default", "meaning"],
      variables().map((v) => [`\`${v.name}\``, v.default ?? "unset", v.description])
    ),
  metrics: () =>
    table(
      ["metric", "type", "labels", "meaning"],
      DatabaseMetrics.metrics.map((m) => [
        `\`${m.name}\``,
        m.type,
        m.labels.map((label) => `\`${label}\``).join(", "),
        m.description
      ])
    ),
  routes: () =>
    table(
      ["route", "token", "answers"],
      Admin.routes.map((r) => [`\`${r.method} ${r.path}\``, r.token, r.answers])
    ),
  alerts: () =>
    table(
      ["alert", "when", "severity"],
      Alerts.kinds.map((k) => [`\`${k.kind}\``, k.when, k.severity])
    ),
  errors: () =>
    table(
      ["reason", "trigger", "when the statement was sent"],
      PgFailure.reasons.map((r) => [`\`${r.reason}\``, r.trigger, r.whenSent])
    )
}

const marker = (name: string) => [`<!-- generated:${name} -->`, `<!-- /generated:${name} -->`] as const

/** A table without the padding the formatter adds, so both spellings compare equal. */
export const unpadded = (text: string): string =>
  text
    .trim()
    .split("\n")
    .map((line) => line.replace(/ {2,}/g, " ").replace(/-{3,}/g, "---").replace(/ \|/g, " |"))
    .join("\n")

/** The text between a block's markers, or `undefined` when the README has no such block. */
export const blockIn = (readme: string, name: string): string | undefined => {
  const [open, close] = marker(name)
  const start = readme.indexOf(open)
  const end = readme.indexOf(close)
  if (start < 0 || end < start) return undefined
  return unpadded(readme.slice(start + open.length, end))
}

export const rewrite = (readme: string): string => {
  let text = readme
  for (const [name, render] of Object.entries(blocks)) {
    const [open, close] = marker(name)
    const start = text.indexOf(open)
    const end = text.indexOf(close)
    if (start < 0 || end < start) throw new Error(`README.md has no ${open} ... ${close} block`)
    text = `${text.slice(0, start + open.length)}\n\n${render()}\n\n${text.slice(end)}`
  }
  return text
}

if (process.argv.includes("--write")) {
  writeFileSync(readmePath, rewrite(readFileSync(readmePath, "utf8")))
  process.stdout.write(`README.md: ${Object.keys(blocks).join(", ")} regenerated\n`)
}
