/**
 * @since 0.1.0
 */
export * as Profile from "./Profile.ts"
export * as Retry from "./Retry.ts"
export * as RetryBudget from "./RetryBudget.ts"
export * as Transient from "./Transient.ts"
export * as Breaker from "./Breaker.ts"
export * as HealthMonitor from "./HealthMonitor.ts"
export * as DatabaseMetrics from "./DatabaseMetrics.ts"
export * as SharedBreaker from "./SharedBreaker.ts"
