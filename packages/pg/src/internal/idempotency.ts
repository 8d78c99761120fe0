/**
 * Whether work may be retried after its statement was sent.
 *
 * @internal
 */
import { Context } from "effect"

/** `"auto"` (the default) decides per statement by the read-only rule. */
export const Idempotency = Context.Reference<"auto" | "idempotent" | "not-idempotent">(
  "@sturdy/pg/ResilientPg/Idempotency",
  { defaultValue: () => "auto" }
)
