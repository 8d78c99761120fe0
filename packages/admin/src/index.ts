/**
 * @since 0.1.0
 */
export * as Admin from "./Admin.ts"
export * as Alerts from "./Alerts.ts"
