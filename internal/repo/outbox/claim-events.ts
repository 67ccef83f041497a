import type { Database } from "../../database/database.js";
import { toOutboxEvent, type OutboxEvent, type OutboxRow } from "./types.js";

/**
 * Claims up to `limit` events in one statement and leases them to `owner`
 * (committed at once: no transaction stays open across the Kafka send).
 *
 * Per-package order: an event is claimed only if every earlier event of its
 * package is in this same claim. An earlier event that is leased elsewhere,
 * waiting out its backoff, or locked by a concurrent claim (SKIP LOCKED hides
 * it from `candidates`, but the NOT EXISTS still sees the row) blocks it, and
 * so does a dead letter of its package (whose parked events are kept out of
 * the candidates, so that they cannot crowd out other packages). The dead
 * letter check in `claimable` is redundant but keeps the planner on index
 * lookups for the earlier-event check. Attempts are counted here, so an
 * event whose relay crashes mid-send still runs out of attempts.
 */
export async function claimEvents(
  db: Database,
  owner: string,
  limit: number,
  leaseSeconds: number,
): Promise<OutboxEvent[]> {
  const result = await db.raw(
    `WITH candidates AS (
       SELECT id, package_id FROM package_event
       WHERE locked_by IS NULL AND available_at <= now()
         -- Parked behind a dead letter: skipped here, not merely left unclaimed
         -- below, or more than \`limit\` parked events would fill every claim
         -- and stall all other packages until an operator steps in.
         AND NOT EXISTS (
           SELECT 1 FROM package_event_dead_letter d WHERE d.package_id = package_event.package_id)
       ORDER BY id
       LIMIT ?
       FOR UPDATE SKIP LOCKED
     ), claimable AS (
       SELECT c.id FROM candidates c
       WHERE NOT EXISTS (
           SELECT 1 FROM package_event earlier
           WHERE earlier.package_id = c.package_id AND earlier.id < c.id
             AND earlier.id NOT IN (SELECT id FROM candidates))
         AND NOT EXISTS (
           SELECT 1 FROM package_event_dead_letter d WHERE d.package_id = c.package_id)
     )
     UPDATE package_event e
     SET locked_by = ?, locked_until = now() + make_interval(secs => ?), attempts = e.attempts + 1
     FROM claimable
     WHERE e.id = claimable.id
     RETURNING e.id, e.package_id, e.type, e.payload::text AS payload, e.created,
               e.traceparent, e.tracestate, e.attempts, e.locked_until::text AS lease`,
    [limit, owner, leaseSeconds],
  );
  const rows = (result as { rows: OutboxRow[] }).rows;
  return rows.map(toOutboxEvent).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
