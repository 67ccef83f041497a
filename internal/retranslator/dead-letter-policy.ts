import type { OutboxEvent } from "../outbox/types.js";
import type { SendFailure } from "./sender/sender.js";

// The dead-letter policy, in one place. Attempts are counted at claim and given back for everything
// that was not handed to the broker (unsent, fenced, retriable), so only real attempts and crashes
// spend the budget.

/**
 * An event claimed more often than `maxAttempts` without a recorded outcome
 * has taken its relay down (or stalled it past the lease) that many times:
 * it is not sent again but fails at once, and dead-letters by `deadLetters`.
 */
export function exhaustedAtClaim(event: OutboxEvent, maxAttempts: number): boolean {
  return event.attempts > maxAttempts;
}

/**
 * Whether a failed send moves the event to the dead-letter table: an event
 * that can never be sent, at once; one that failed by itself, once it has
 * used `maxAttempts`; an outage (retriable), never.
 */
export function deadLetters(failure: SendFailure, maxAttempts: number): boolean {
  return !failure.retriable && (failure.deadLetter === true || failure.event.attempts >= maxAttempts);
}
