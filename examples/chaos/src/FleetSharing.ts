/**
 * The fleet's shared breaker: the development profile's policy, shared
 * through the Redis at `url` (`SharedBreaker`), as a layer for
 * `ResilientPg.layer`, which uses a `Breaker` it finds in context.
 */
import { NodeRedis } from "@effect/platform-node"
import { Breaker, Profile, SharedBreaker } from "@sturdy/resilience"

export const breaker = (url: string, neverOpens = false) =>
  SharedBreaker.layer({
    tripPolicy: Breaker.consecutive(neverOpens ? 1_000_000_000 : Profile.development.breakerFailures),
    openDuration: Profile.openDuration(Profile.development),
    redis: NodeRedis.layer({ url })
  })
