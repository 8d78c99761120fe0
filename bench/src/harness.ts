/**
 * Measuring without fooling ourselves: cases run alternately, round after
 * round, after a warm-up, and we report medians and the per-round ratios.
 */

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export const percentile = (values: ReadonlyArray<number>, q: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
}

export interface Case {
  readonly name: string
  /** Runs the case once and returns its measurement (ns per call, statements per second...). */
  readonly run: () => Promise<number>
}

/** Runs every case once to warm up, then `rounds` times alternately; returns the measurements by case. */
export const alternate = async (
  cases: ReadonlyArray<Case>,
  rounds: number
): Promise<ReadonlyMap<string, ReadonlyArray<number>>> => {
  for (const c of cases) await c.run()
  const results = new Map<string, Array<number>>(cases.map((c) => [c.name, []]))
  for (let round = 0; round < rounds; round++) {
    // Alternate the order too, so neither case always runs first.
    const order = round % 2 === 0 ? cases : [...cases].reverse()
    for (const c of order) results.get(c.name)!.push(await c.run())
  }
  return results
}

export const format = (value: number, digits = 0) =>
  value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const escape = (cell: string) => cell.replaceAll("|", "\\|")
  return [
    `| ${header.map(escape).join(" | ")} |`,
    `|${header.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`,
    ...rows.map((row) => `| ${row.map(escape).join(" | ")} |`)
  ].join("\n")
}
