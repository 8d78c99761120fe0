/**
 * @since 0.1.0
 */
export * as LogCapture from "./LogCapture.ts"
export * as PgServer from "./PgServer.ts"
