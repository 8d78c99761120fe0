/**
 * @since 0.1.0
 */
export * as FaultProxy from "./FaultProxy.ts"
export * as LogCapture from "./LogCapture.ts"
export * as PgBouncer from "./PgBouncer.ts"
export * as PgCluster from "./PgCluster.ts"
export * as PgServer from "./PgServer.ts"
export * as ServerFaults from "./ServerFaults.ts"
export * as Eventually from "./Eventually.ts"
export * as RedisServer from "./RedisServer.ts"
