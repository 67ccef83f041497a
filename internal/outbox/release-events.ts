import type { Database } from "../database/database.js";
import { execute } from "../database/query.js";
import { type ClaimRef, claimsJson, type EventFailure, failuresJson } from "./types.js";

export interface BackoffPolicy {
  minMs: number;
  maxMs: number;
}

/**
 * Gives failed events back with a jittered exponential backoff (written in
 * SQL): min·2^retries, capped at max, times a random factor in [0.5, 1) so
 * that relays do not retry in lockstep. A retriable failure (broker down,
 * timeout) gives back the attempt counted at claim: only bad events and
 * crashes spend the dead-letter budget. Only rows still leased to `owner` are
 * touched: a lease that expired and was taken over belongs to the new owner.
 * The id list beside the JSON keeps the plan on primary-key lookups whatever
 * the outbox's statistics say. The owner is compared through coalesce, which
 * no index can serve: when the outbox had indexes on its lease columns, a
 * plain comparison let the planner pick one under "empty" statistics and read
 * every lease of every instance; the comparison stays proof against one
 * being added again.
 */
export async function releaseFailedEvents(
  db: Database,
  owner: string,
  failures: readonly EventFailure[],
  backoff: BackoffPolicy,
): Promise<number> {
  if (failures.length === 0) return 0;
  return execute(
    db,
    `UPDATE package_event e
     SET locked_by = NULL, locked_until = NULL, last_error = f.error,
         attempts = CASE WHEN f.retriable THEN greatest(e.attempts - 1, 0) ELSE e.attempts END,
         retries = e.retries + 1,
         available_at = now() + make_interval(secs =>
           least(?::float8, ?::float8 * power(2, least(e.retries, 30))) * (0.5 + random() / 2) / 1000)
     FROM jsonb_to_recordset(?::jsonb) AS f(id bigint, error text, retriable boolean, lease timestamptz)
     WHERE e.id = ANY(?::bigint[]) AND e.id = f.id AND coalesce(e.locked_by, '') = ? AND e.locked_until = f.lease`,
    [backoff.maxMs, backoff.minMs, failuresJson(failures), failures.map((f) => f.id), owner],
  );
}

/**
 * Gives back events that were claimed but never sent (a package whose earlier
 * event failed in the same batch, a lane backing off), and at shutdown every
 * claim whose outcome was not written: available at once, and the attempt
 * counted at claim is taken back. A claim the relay never learnt of (its
 * connection died as the claim committed) is not here: another claim takes
 * it over once its lease runs out (claim-events.ts).
 */
export async function releaseUnsentEvents(db: Database, owner: string, claims: readonly ClaimRef[]): Promise<number> {
  if (claims.length === 0) return 0;
  return execute(
    db,
    `UPDATE package_event e
     SET locked_by = NULL, locked_until = NULL, attempts = greatest(e.attempts - 1, 0)
     FROM jsonb_to_recordset(?::jsonb) AS c(id bigint, lease timestamptz)
     WHERE e.id = ANY(?::bigint[]) AND e.id = c.id AND coalesce(e.locked_by, '') = ? AND e.locked_until = c.lease`,
    [claimsJson(claims), claims.map((c) => c.id), owner],
  );
}
