import { Breaker } from "@sturdy/resilience"
import { Layer } from "effect"
import * as CircuitBreaker from "effect/persistence/CircuitBreaker"

/** Both layers of the same service, so one suite checks both (as effect's RateLimiter tests do). */
export const layers = {
  "in-process": (options: Breaker.Options) => Breaker.layer(options),
  "effect CircuitBreaker + memory store": (options: Breaker.Options) =>
    Breaker.layerStore(options).pipe(Layer.provide(CircuitBreaker.layerStoreMemory({ idleTimeToLive: "1000 days" })))
} as const
