/**
 * The check every duration option of the policies shares.
 *
 * @internal
 */
import { Duration } from "effect"

/** `input` as a duration, or a `RangeError` naming `fn`, the option and the value when it is not positive and finite. */
export const positive = (fn: string, name: string, input: Duration.Input): Duration.Duration => {
  const duration = Duration.fromInputUnsafe(input)
  if (!Duration.isFinite(duration) || !(Duration.toMillis(duration) > 0)) {
    throw new RangeError(`${fn}: ${name} must be a positive finite duration, got ${Duration.format(duration)}`)
  }
  return duration
}
