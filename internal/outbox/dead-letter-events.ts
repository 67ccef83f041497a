import type { Database } from "../database/database.js";
import { execute } from "../database/query.js";
import { type EventFailure, failuresJson } from "./types.js";

/**
 * Moves events that ran out of attempts to the dead-letter table, with their
 * last error, in one statement. From then on the claim parks every later
 * event of their packages until an operator requeues or discards them.
 * Rows are found by primary key only (see releaseFailedEvents for why).
 */
export async function deadLetterEvents(
  db: Database,
  owner: string,
  failures: readonly EventFailure[],
): Promise<number> {
  if (failures.length === 0) return 0;
  return execute(
    db,
    `WITH failed AS (
       SELECT * FROM jsonb_to_recordset(?::jsonb) AS f(id bigint, error text, retriable boolean, lease timestamptz)
     ), moved AS (
       DELETE FROM package_event e USING failed
       WHERE e.id = ANY(?::bigint[]) AND e.id = failed.id AND coalesce(e.locked_by, '') = ? AND e.locked_until = failed.lease
       RETURNING e.*, failed.error
     )
     INSERT INTO package_event_dead_letter
       (id, package_id, type, payload, created, traceparent, tracestate, reason, attempts, last_error)
     SELECT id, package_id, type, payload, created, traceparent, tracestate, reason, attempts, error FROM moved`,
    [failuresJson(failures), failures.map((f) => f.id), owner],
  );
}
