/**
 * @since 0.1.0
 */
export * as PgFailure from "./PgFailure.ts"
export * as ResilientPg from "./ResilientPg.ts"
export * as StatementStats from "./StatementStats.ts"
export * as Target from "./Target.ts"
