/**
 * @since 0.1.0
 */
export * as Profile from "./Profile.ts"
export * as Retry from "./Retry.ts"
export * as Transient from "./Transient.ts"
